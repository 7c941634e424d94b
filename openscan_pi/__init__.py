"""openscan-pi: the daemon inside an OpenScan Classic or Mini 3D scanner."""

__version__ = "0.1.0"
