"""Talking to upstreams: pooled HTTP client, streaming, timeouts; the plain HTTP backend."""
