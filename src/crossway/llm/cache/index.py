"""The in-process cache: entries by exact key (LRU, with expiry), and per semantic partition a
matrix of unit vectors searched with one matrix-vector product.

An entry may be known without its answer: one another replica stored, announced through Redis
with its vector (`crossway.llm.cache.shared`); its answer is fetched from Redis on a hit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from crossway.llm.cache.answer import CachedAnswer

Vector = npt.NDArray[np.float32]

INITIAL_ROWS: Final = 16
"""Rows a partition's matrix starts with (it doubles when full)."""


@dataclass(slots=True)
class Entry:
    """One cached answer (or, when `answer` is None, one whose answer lives in Redis)."""

    key: str
    expires: float  # time.time()
    answer: CachedAnswer | None = None
    partition: str = ""  # the semantic partition, "" without a vector
    row: int = -1  # its row in the partition's matrix


class Partition:
    """The vectors of one semantic partition: rows of a matrix, with free rows reused."""

    __slots__ = ("free", "keys", "matrix", "size")

    def __init__(self, dim: int) -> None:
        self.matrix: Vector = np.zeros((INITIAL_ROWS, dim), dtype=np.float32)
        self.keys: list[str | None] = []
        self.free: list[int] = []
        self.size = 0

    def add(self, key: str, vector: Vector) -> int:
        if self.free:
            row = self.free.pop()
            self.keys[row] = key
        else:
            row = len(self.keys)
            if row == self.matrix.shape[0]:
                grown = np.zeros((row * 2, self.matrix.shape[1]), dtype=np.float32)
                grown[:row] = self.matrix
                self.matrix = grown
            self.keys.append(key)
        self.matrix[row] = vector
        self.size += 1
        return row

    def remove(self, row: int) -> None:
        self.matrix[row] = 0.0  # a zero row scores 0: never a hit
        self.keys[row] = None
        self.free.append(row)
        self.size -= 1

    def nearest(self, vector: Vector) -> tuple[str | None, float]:
        """The key of the most similar vector, and its cosine similarity."""
        rows = len(self.keys)
        if not self.size:
            return None, 0.0
        scores = self.matrix[:rows] @ vector
        row = int(np.argmax(scores))
        return self.keys[row], float(scores[row])


class CacheIndex:
    """Entries by key (least recently used first) and the semantic partitions' vectors."""

    def __init__(self, max_entries: int, dim: int) -> None:
        self.max_entries = max_entries
        self.dim = dim
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.partitions: dict[str, Partition] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str, now: float | None = None) -> Entry | None:
        """The live entry under `key` (marked recently used), or None."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.expires <= (time.time() if now is None else now):
            self.remove(key)
            return None
        self.entries.move_to_end(key)
        return entry

    def put(
        self,
        key: str,
        expires: float,
        answer: CachedAnswer | None,
        partition: str = "",
        vector: Vector | None = None,
    ) -> Entry:
        """Add or replace the entry under `key`, evicting the least recently used beyond the
        bound."""
        old = self.entries.get(key)
        if old is not None:
            if answer is None and old.answer is not None and old.expires >= expires:
                return old  # the announcement of what this process stored itself
            self.remove(key)
        entry = Entry(key, expires, answer)
        if vector is not None and partition:
            part = self.partitions.get(partition)
            if part is None:
                part = self.partitions[partition] = Partition(self.dim)
            entry.partition = partition
            entry.row = part.add(key, vector)
        self.entries[key] = entry
        while len(self.entries) > self.max_entries:
            self.remove(next(iter(self.entries)))
        return entry

    def remove(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is None or entry.row < 0:
            return
        part = self.partitions.get(entry.partition)
        if part is not None:
            part.remove(entry.row)
            if not part.size:
                del self.partitions[entry.partition]

    def nearest(self, partition: str, vector: Vector) -> tuple[str | None, float]:
        """The most similar entry's key in `partition`, and the similarity."""
        part = self.partitions.get(partition)
        if part is None:
            return None, 0.0
        return part.nearest(vector)
