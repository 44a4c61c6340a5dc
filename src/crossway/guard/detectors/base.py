"""The detector interface: text in, matches out. Pure, synchronous and fast (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol


class Match(NamedTuple):
    """One finding: `text[start:end]` is an `entity` (upper-case placeholder stem: `EMAIL`)."""

    start: int
    end: int
    entity: str


class Detector(Protocol):
    """A compiled detector.

    `name` is what errors, metrics and logs call it (from the config's `name`, else a
    default such as the PII entity or `secrets`); `find` returns every match in `text`, in any
    order, possibly overlapping (the engine resolves overlaps, longest first)."""

    name: str

    def find(self, text: str) -> Iterable[Match]: ...
