"""Run the local cloud: ``python -m openscan_pi.sim.cloud --help``."""

from openscan_pi.sim.cloud.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
