"""Config of the shared stores (`crossway.store`): in this process, or Redis for several
workers and replicas.

```yaml
session_store: {type: memory}                                   # default
session_store: {type: redis, url: "${CROSSWAY_REDIS_URL}"}      # redis://[:password@]host:port/db
```
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from crossway.config.base import StrictModel


class MemoryStoreConfig(StrictModel):
    """Kept in this process: enough for one replica running one worker."""

    type: Literal["memory"]
    """Store kind."""


class RedisStoreConfig(StrictModel):
    """Kept in Redis, shared by every worker and replica that names the same server."""

    type: Literal["redis"]
    """Store kind."""
    url: SecretStr
    """`redis://[:password@]host:port/db` (or `rediss://` for TLS); use `${VAR}`."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        return value


RevocationStoreConfig = Annotated[MemoryStoreConfig | RedisStoreConfig, Field(discriminator="type")]
"""Where revocations are kept."""
