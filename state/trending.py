"""Trending: decayed popularity counts with a cheaply maintained top list.

Counts decay in event time with a half-life. Rather than decaying every item on every
event, counts use *forward decay*: an increment ``w`` at time ``t`` is stored as
``w · e^(λ·(t − landmark))``. Every stored count grows by the same factor as time passes,
so the *order* of items never changes with time alone, only with increments; the current
value is ``stored · e^(−λ·(now − landmark))``. The landmark moves forward (one pass over
the counts) before the exponent could overflow.

Because only increments reorder items, the top ``k`` list is kept up to date per
increment in O(k) and rebuilt from scratch only after a decrement touched it.

Example:

>>> t = Trending(half_life_s=60, k=2)
>>> for item, ts in [("a", 0), ("b", 0), ("b", 1000), ("c", 60_000)]:
...     t.learn_one(item, 1.0, ts)
>>> [(i, round(s, 2)) for i, s in t.top(60_000)]
[('b', 1.01), ('c', 1.0)]
"""

from __future__ import annotations

import heapq
import math
from typing import Iterable, Optional

_MAX_EXPONENT = 300.0


class Trending:
    """Decayed popularity of items (or any keys) with an incremental top-``k``.

    :arg half_life_s: how fast popularity fades, in event-time seconds.
    :arg k: how many top items to keep ready.
    :arg max_keys: when the table grows past this, the weakest half is dropped.
    """

    __slots__ = ("decay", "k", "max_keys", "landmark", "counts", "_top", "_top_dirty", "_top_min")

    def __init__(self, half_life_s: float = 86_400.0, k: int = 100, max_keys: int = 1_000_000) -> None:
        self.decay = math.log(2) / (half_life_s * 1000)
        self.k = k
        self.max_keys = max_keys
        self.landmark: Optional[int] = None
        self.counts: dict[str, float] = {}
        self._top: dict[str, float] = {}
        self._top_dirty = False
        self._top_min = 0.0

    def __len__(self) -> int:
        return len(self.counts)

    def _scale(self, ts: int) -> float:
        if self.landmark is None:
            self.landmark = ts
        x = self.decay * (ts - self.landmark)
        if x > _MAX_EXPONENT:
            self._rebase(ts)
            x = 0.0
        return math.exp(x)

    def _rebase(self, ts: int) -> None:
        f = math.exp(-self.decay * (ts - self.landmark))
        self.counts = {k: v * f for k, v in self.counts.items()}
        self._top = {k: v * f for k, v in self._top.items()}
        self._top_min *= f
        self.landmark = ts

    def learn_one(self, key: str, weight: float, ts: int) -> None:
        """Add ``weight`` for ``key`` at event time ``ts``."""
        v = self.counts.get(key, 0.0) + weight * self._scale(ts)
        self.counts[key] = v
        top = self._top
        if weight < 0:
            if key in top:
                self._top_dirty = True
        elif key in top:
            top[key] = v
        elif len(top) < self.k:
            top[key] = v
            self._top_min = min(top.values())
        elif v > self._top_min:
            weakest = min(top, key=lambda kk: (top[kk], kk))
            del top[weakest]
            top[key] = v
            self._top_min = min(top.values())
        if len(self.counts) > self.max_keys:
            keep = heapq.nlargest(self.max_keys // 2, self.counts.items(), key=lambda kv: kv[1])
            self.counts = dict(keep)
            self._top_dirty = True

    def score(self, key: str, now: int) -> float:
        if self.landmark is None:
            return 0.0
        return self.counts.get(key, 0.0) * math.exp(-self.decay * (now - self.landmark))

    def top(self, now: int, n: Optional[int] = None) -> list[tuple[str, float]]:
        """The ``n`` (default ``k``) most popular keys as of ``now``, strongest first;
        ties broken by key so the order is deterministic."""
        if self._top_dirty:
            self._top = dict(heapq.nlargest(self.k, self.counts.items(), key=lambda kv: kv[1]))
            self._top_min = min(self._top.values()) if self._top else 0.0
            self._top_dirty = False
        if self.landmark is None:
            return []
        f = math.exp(-self.decay * (now - self.landmark))
        ranked = sorted(self._top.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(key, v * f) for key, v in ranked[: n or self.k] if v > 0]

    def items(self, now: int) -> Iterable[tuple[str, float]]:
        f = 0.0 if self.landmark is None else math.exp(-self.decay * (now - self.landmark))
        return ((k, v * f) for k, v in self.counts.items())


class Popularity:
    """All-time interaction counts (the popularity baseline): :class:`Trending` that
    never decays."""

    def __new__(cls, k: int = 100) -> Trending:  # type: ignore[misc]
        t = Trending(half_life_s=1e30, k=k)
        return t
