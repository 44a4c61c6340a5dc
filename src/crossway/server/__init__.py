"""The ASGI data plane: route table, runtime snapshots, lifecycle."""
