"""``import picamera2`` for the rig worker's process in tests (put this folder on ``PYTHONPATH``).

The module is a :class:`tests.fake_picamera2.FakePicamera2Module` made from ``$FAKE_PICAMERA2``, a
JSON object of its keyword arguments plus ``spec`` (the name of a sensor of that module, IMX477
by default) and ``unstall_file``: once that file exists the camera is unstalled, as a ribbon
cable seated again (the test's process cannot reach into the worker's).
"""

import json
import os
import sys
import threading
import time

from tests import fake_picamera2 as fake

_options = json.loads(os.environ.get("FAKE_PICAMERA2", "{}"))
_spec = getattr(fake, _options.pop("spec", "IMX477"))
_unstall_file = _options.pop("unstall_file", None)
_module = fake.FakePicamera2Module(_spec, **_options)


def _unstall_when_told() -> None:
    while not os.path.exists(_unstall_file):
        time.sleep(0.02)  # a file appearing has no other signal here
    _module.unstall()


if _unstall_file:
    threading.Thread(target=_unstall_when_told, daemon=True).start()
sys.modules[__name__] = _module  # type: ignore[assignment]
