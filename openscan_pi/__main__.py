"""Allow ``python -m openscan_pi``."""

from openscan_pi.cli import main

raise SystemExit(main())
