"""Trending: decayed popularity counts kept in rank order.

Counts decay in event time with a half-life. Rather than decaying every item on every
event, counts use *forward decay*: an increment ``w`` at time ``t`` is stored as
``w · e^(λ·(t − landmark))``. Every stored count grows by the same factor as time passes,
so the *order* of items never changes with time alone, only with increments; the current
value is ``stored · e^(−λ·(now − landmark))``. The landmark moves forward (one pass over
the counts) before the exponent could overflow.

An increment is one dict update. Reading the exact top ``n`` is a partial selection over
the table; the recommendation hot path reads :meth:`Trending.head` (or, as numpy arrays of
item numbers, :meth:`Trending.head_arrays`), a cached ranking of the best few hundred keys
rebuilt every so many increments; the counts read from it are current.

Example:

>>> t = Trending(half_life_s=60)
>>> for item, ts in [("a", 0), ("b", 0), ("b", 1000), ("c", 60_000)]:
...     t.learn_one(item, 1.0, ts)
>>> [(i, round(s, 2)) for i, s in t.top(60_000, 2)]
[('b', 1.01), ('c', 1.0)]
>>> [i for i, _ in t.top(60_000, 2, exclude={"b"})]
['c', 'a']
"""

from __future__ import annotations

import heapq
import math
from itertools import filterfalse, islice
from operator import itemgetter
from typing import Collection, Iterable, Mapping, Optional

import numpy as np


_MAX_EXPONENT = 300.0


class Trending:
    """Decayed popularity of items (or any keys), ranked.

    :arg half_life_s: how fast popularity fades, in event-time seconds (``math.inf``:
        never, an all-time count).
    :arg max_keys: when the table grows past this, the weakest half is dropped.
    :arg numbers: item numbers of the keys (e.g. :class:`~pulse.state.covisit.ItemIndex`
        ``.numbers``), needed only by :meth:`head_arrays`.

    Ties rank by key, so the order is deterministic.
    """

    RANK_EVERY = 200  # the cached ranking is rebuilt after max(RANK_EVERY, len/20) increments

    __slots__ = ("decay", "max_keys", "numbers", "landmark", "counts", "learned", "_head", "_rank_at", "_head_size",
                 "_scale_ts", "_scale_f", "_head_pos", "_head_nums", "_head_vals", "_views")

    def __init__(self, half_life_s: float = 86_400.0, max_keys: int = 1_000_000,
                 numbers: Optional[Mapping[str, int]] = None) -> None:
        self.decay = 0.0 if math.isinf(half_life_s) else math.log(2) / (half_life_s * 1000)
        self.max_keys = max_keys
        self.numbers = numbers
        self.landmark: Optional[int] = None
        self.counts: dict[str, float] = {}
        self.learned = 0
        self._head: list[str] = []
        self._rank_at = 0  # rebuild the ranking once `learned` reaches this
        self._head_size = 0
        self._scale_ts: Optional[int] = None  # the last increment's time and scale
        self._scale_f = 1.0
        # with numbers: the head as arrays, its stored counts kept current by learn_one
        self._head_pos: dict[str, int] = {}
        self._head_nums = np.zeros(0, dtype=np.intp)
        self._head_vals = np.zeros(0)
        self._views: tuple = (-1, None, None)  # (n, nums[:n], vals[:n]) of the last head_arrays

    def __len__(self) -> int:
        return len(self.counts)

    def __getstate__(self) -> dict:
        # (head_arrays' cached views would come back as copies: they are rebuilt instead)
        return {name: getattr(self, name) for name in self.__slots__ if name != "_views"}

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._views = (-1, None, None)

    def _scale(self, ts: int) -> float:
        if ts == self._scale_ts:
            return self._scale_f
        if self.landmark is None:
            self.landmark = ts
        if not self.decay:
            return 1.0
        x = self.decay * (ts - self.landmark)
        if x > _MAX_EXPONENT:
            f = math.exp(-x)
            self.counts = {k: v * f for k, v in self.counts.items()}
            self._head_vals *= f
            self.landmark = ts
            x = 0.0
        self._scale_ts = ts
        self._scale_f = math.exp(x)
        return self._scale_f

    def learn_one(self, key: str, weight: float, ts: int) -> None:
        """Add ``weight`` for ``key`` at event time ``ts``."""
        counts = self.counts
        inc = weight * self._scale(ts)
        counts[key] = counts.get(key, 0.0) + inc
        self.learned += 1
        pos = self._head_pos.get(key)
        if pos is not None:
            self._head_vals[pos] += inc
        if len(counts) > self.max_keys:
            self.counts = dict(heapq.nlargest(self.max_keys // 2, counts.items(), key=itemgetter(1)))
            self._rank_at = 0

    def score(self, key: str, now: int) -> float:
        if self.landmark is None:
            return 0.0
        return self.counts.get(key, 0.0) * math.exp(-self.decay * (now - self.landmark))

    def top(self, now: int, n: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """The ``n`` most popular keys as of ``now`` that are not in ``exclude`` (exact)."""
        if self.landmark is None or n <= 0:
            return []
        counts = self.counts
        m = n + len(exclude)
        best = heapq.nlargest(m + 1, counts, key=counts.get)
        if len(best) > m and counts[best[m]] == counts[best[m - 1]]:
            # keys tie at the cut: nlargest broke the tie by insertion order; every key
            # of that count competes by key instead (rare: counts are decayed floats)
            cut = counts[best[m - 1]]
            best = [k for k in best if counts[k] > cut] + [k for k, v in counts.items() if v == cut]
        else:
            del best[m:]
        best.sort()  # (then by count, stably: ties stay by key)
        best.sort(key=counts.__getitem__, reverse=True)
        return self._read(now, best, n, exclude)

    def head(self, now: int, n: int, exclude: Collection[str] = (), size: int = 200) -> list[tuple[str, float]]:
        """Like :meth:`top`, read from a cached ranking of the ``size`` best keys that is
        rebuilt after every ``max(200, len/20)`` increments: the hot path of
        recommendations, where a little staleness does not matter but ranking the whole
        table per request would. Keys beyond ``size`` are not offered."""
        keys, stored = self.pick(n, exclude, size)
        f = self.factor(now)
        return [(k, v * f) for k, v in zip(keys, stored)]

    def pick(self, n: int, exclude: Collection[str] = (), size: int = 200) -> tuple[list[str], list[float]]:
        """:meth:`head` before decay: (keys, stored counts); the counts times
        :meth:`factor` are the values."""
        if self.landmark is None:
            return [], []
        self._rank(size)
        # a C-level scan: skip the excluded keys, stop after n
        keys = list(islice(filterfalse(exclude.__contains__, self._head), n)) if exclude else self._head[:n]
        stored = list(map(self.counts.__getitem__, keys))
        if stored and min(stored) <= 0:  # a negative increment since the ranking was built
            keys, stored = [], []
            for key, v in self._read(self.landmark, self._head, n, exclude):
                keys.append(key)
                stored.append(v)
        return keys, stored

    def head_arrays(self, n: int, size: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """The best ``n`` keys of the cached ranking (see :meth:`head`; nothing is
        excluded) as (item numbers, stored counts); the counts times :meth:`factor` are
        the values. The arrays are views: copy them before changing them."""
        views = self._views
        if views[0] == n and self.learned < self._rank_at and size <= self._head_size:
            return views[1], views[2]
        if self.landmark is None:
            return self._head_nums[:0], self._head_vals[:0]
        self._rank(size)
        nums, vals = self._head_nums[:n], self._head_vals[:n]
        self._views = (n, nums, vals)
        return nums, vals

    def _rank(self, size: int) -> None:
        if self.learned >= self._rank_at or size > self._head_size:
            counts = self.counts
            n = len(counts)
            keys = list(counts)
            vals = np.fromiter(counts.values(), dtype=np.float64, count=n)
            if n > size:  # a partial selection, then an exact ranking of the few
                part = -vals
                part.partition(size - 1)
                best = np.flatnonzero(vals >= -part[size - 1])  # the best `size`, and ties
                order = best[(-vals[best]).argsort(kind="stable")]
            else:
                order = (-vals).argsort(kind="stable")
            ranked = [keys[i] for i in order.tolist()]
            ranked_vals = vals[order]
            ties = np.flatnonzero(ranked_vals[1:] == ranked_vals[:-1]).tolist()
            start = 0
            for j, i in enumerate(ties):  # each run of equal counts ranks by key
                if j == len(ties) - 1 or ties[j + 1] != i + 1:
                    first = ties[start]
                    ranked[first:i + 2] = sorted(ranked[first:i + 2])
                    start = j + 1
            del ranked[size:]
            while ranked and counts[ranked[-1]] <= 0:
                ranked.pop()
            self._head = ranked
            self._views = (-1, None, None)
            self._rank_at = self.learned + max(self.RANK_EVERY, n // 20)
            self._head_size = size
            if self.numbers is not None:
                self._head_pos = {k: p for p, k in enumerate(ranked)}
                self._head_nums = np.fromiter(map(self.numbers.__getitem__, ranked), dtype=np.intp, count=len(ranked))
                self._head_vals = np.fromiter(map(counts.__getitem__, ranked), dtype=np.float64, count=len(ranked))

    def factor(self, now: int) -> float:
        """What a stored count is multiplied by for its value as of ``now``."""
        if self.landmark is None:
            return 0.0
        return math.exp(-self.decay * (now - self.landmark))

    def _read(self, now: int, ranked: list[str], n: int, exclude: Collection[str]) -> list[tuple[str, float]]:
        f = math.exp(-self.decay * (now - self.landmark))
        counts = self.counts
        out = []
        for key in ranked:
            if key in exclude:
                continue
            v = counts.get(key, 0.0)
            if v <= 0:
                continue
            out.append((key, v * f))
            if len(out) >= n:
                break
        return out

    def items(self, now: int) -> Iterable[tuple[str, float]]:
        f = 0.0 if self.landmark is None else math.exp(-self.decay * (now - self.landmark))
        return ((k, v * f) for k, v in self.counts.items())
