"""Base model for every config object: unknown keys are errors, fields are documented."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from crossway.config.secrets import empty_secret


class LocatedProblems(ValueError):
    """Raised by a model validator whose problems lie at other places of the file: the loader
    reports each at its own key path and line."""

    def __init__(self, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(msg for _loc, msg in self.problems))


class StrictModel(BaseModel):
    """A frozen config model that rejects unknown keys, so a typo is never silently ignored.

    Every `SecretStr` field (or map or list of them) must be non-empty: an empty key or token
    would mean "no auth". Validation errors never echo their input, which may be a secret.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    @field_validator("*", mode="after")
    @classmethod
    def _no_empty_secret(cls, value: Any) -> Any:
        problem = empty_secret(value)
        if problem is not None:
            raise ValueError(problem)
        return value
