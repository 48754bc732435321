"""How many distinct keys a run wrote, at a few bytes a key.

A run summary counts the users whose profile the run wrote. A Python ``set`` of the
keys' hashes costs about 145 bytes a user (an int object and its share of the table);
:class:`DistinctHashes` keeps the 64-bit hashes themselves in an open-addressing numpy
table at most half full: 8–32 bytes a key. Two keys are counted as one only if their
hashes collide (about n² / 2⁶⁵ for n keys), or if one is 0 and the
other :data:`_ZERO`.

Example:

>>> d = DistinctHashes()
>>> d.add_all([hash("a"), hash("b"), hash("a")])
>>> len(d), hash("b") in d
(2, True)
>>> e = DistinctHashes(); e.add_all([hash("b"), hash("c")])
>>> len(d.union(e))
3
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from pulse.operators.compiled import lazy_njit

_EMPTY = 0
#: what a hash of 0 is stored as (0 marks an empty slot)
_ZERO = -0x61C8864680B583EB


def _insert_all(table, hashes):  # pragma: no cover (compiled)
    """Insert ``hashes`` into ``table`` (linear probing; the caller keeps it at most half
    full); returns how many were new."""
    mask = len(table) - 1
    added = 0
    for h in hashes:
        if h == 0:
            h = _ZERO
        i = (h ^ (h >> 29)) & mask
        while True:
            t = table[i]
            if t == 0:
                table[i] = h
                added += 1
                break
            if t == h:
                break
            i = (i + 1) & mask
    return added


def _find_one(table, h):  # pragma: no cover (compiled)
    """Whether ``h`` is in ``table``."""
    if h == 0:
        h = _ZERO
    mask = len(table) - 1
    i = (h ^ (h >> 29)) & mask
    while table[i] != 0:
        if table[i] == h:
            return True
        i = (i + 1) & mask
    return False


_insert = lazy_njit(_insert_all)
_find = lazy_njit(_find_one)


class DistinctHashes:
    """A set of 64-bit hashes that only grows and counts (see the module docstring)."""

    __slots__ = ("table", "count")

    def __init__(self, capacity: int = 1024) -> None:
        size = 1 << max(4, (2 * capacity - 1).bit_length())
        self.table = np.zeros(size, dtype=np.int64)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __contains__(self, h: object) -> bool:
        return isinstance(h, int) and bool(_find.compiled()(self.table, np.int64(h)))

    def add_all(self, hashes: Iterable[int]) -> None:
        """Add every hash of ``hashes``."""
        new = np.fromiter(hashes, dtype=np.int64)
        if not len(new):
            return
        if 2 * (self.count + len(new)) > len(self.table):
            self._grow(self.count + len(new))
        self.count += _insert.compiled()(self.table, new)

    def union(self, other: "DistinctHashes") -> "DistinctHashes":
        """A new set holding both."""
        out = DistinctHashes(self.count + other.count)
        for part in (self, other):
            out.add_all(part.table[part.table != _EMPTY])
        return out

    def _grow(self, count: int) -> None:
        old = self.table[self.table != _EMPTY]
        size = len(self.table)
        while 2 * count > size:
            size *= 2
        self.table = np.zeros(size, dtype=np.int64)
        self.count = _insert.compiled()(self.table, old)
