"""The rig: stepper axes, light, trigger, camera; real hardware or simulated."""
