"""Small shared stores, each a protocol with an in-process and a Redis implementation chosen by
config: revocations (`revocations.py`) today; keys, limits and budgets later."""

from crossway.store.revocations import (
    MemoryRevocations,
    RedisRevocations,
    RevocationStore,
    StoreUnavailable,
    build_revocations,
)

__all__ = [
    "MemoryRevocations",
    "RedisRevocations",
    "RevocationStore",
    "StoreUnavailable",
    "build_revocations",
]
