"""Run the local cloud: ``python -m openscan_pi.cloud.local --help``."""

from openscan_pi.cloud.local.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
