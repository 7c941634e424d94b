"""Command handlers, imported only when their command runs (keeps `openscan-pi` quick to start)."""
