"""``import lgpio`` for the tests' subprocesses (put this folder on ``PYTHONPATH``).

The module is a :class:`tests.fake_lgpio.FakeLgpio` (simulated time following the wall clock), and
importing it does what importing lgpio does: ``chdir`` into ``$LG_WD`` or the current folder, make a
FIFO there, ``FileNotFoundError`` when it cannot. ``$FAKE_LGPIO_PI_REVISION`` (hex) makes gpiozero
believe it runs on that Raspberry Pi, so that its default pin factory is ``LGPIOFactory`` on it.
"""

import os
import sys

from tests.fake_lgpio import FakeLgpio

_fake = FakeLgpio(realtime=True)
_fake.start_notify()
_revision = os.environ.get("FAKE_LGPIO_PI_REVISION")
if _revision:
    import gpiozero.pins.local

    gpiozero.pins.local.get_pi_revision = lambda: int(_revision, 16)
sys.modules[__name__] = _fake  # type: ignore[assignment]
