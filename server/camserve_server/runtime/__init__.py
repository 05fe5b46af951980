"""The serving runtime: batching, device workers, the activation cache and metrics."""
