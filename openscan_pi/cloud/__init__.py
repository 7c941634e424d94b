"""The OpenScan Cloud chain: API client, virtual zip, durable transfer, model download."""
