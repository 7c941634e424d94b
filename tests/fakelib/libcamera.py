"""``import libcamera`` for the rig worker's process in tests: the controls of
:mod:`tests.fake_picamera2` (see ``picamera2.py`` beside this file)."""

from tests.fake_picamera2 import controls  # noqa: F401
