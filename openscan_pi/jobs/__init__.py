"""Scan jobs: the state machine, the durable store, the runner."""
