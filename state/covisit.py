"""Item-to-item co-visitation, learned incrementally with decayed counts.

When a user interacts with item ``j``, every item ``i`` among the user's last ``window``
items gets its co-visitation with ``j`` raised, in both directions, by
``w_j · recency^(d−1)`` where ``d`` is how many steps back ``i`` is (the item just before
counts most). Counts decay in event time with forward decay (see
:mod:`pulse.state.trending`). Each item keeps at most ``max_neighbours`` neighbours: when
its table doubles past that, the weakest half is dropped, so memory is bounded by
``items × 2 · max_neighbours``.

``similar(i)`` ranks neighbours by ``c(i, j) / pop(j)^β`` (so a blockbuster does not
become everything's neighbour) and divides by ``pop(i)^α`` so that lists of different
source items are comparable. Ranked lists are cached per item and rebuilt only after
``refresh_after`` updates to that item, which keeps a recommendation at a few dict
look-ups per seed item. (On MovieLens 100K, α = 0.7, β = 0.3 and a window of 10 gave
the best hit rate; see ``benchmarks/``.)

Example:

>>> cv = CoVisitation(half_life_s=3600, window=5)
>>> cv.learn_one(["a"], "b", 1.0, ts=0)   # items whose neighbours changed
['b', 'a']
>>> _ = cv.learn_one(["c"], "b", 1.0, ts=0)
>>> [i for i, _ in cv.similar("b")]
['a', 'c']
"""

from __future__ import annotations

import heapq
import math
from typing import Optional, Sequence

_MAX_EXPONENT = 300.0


class CoVisitation:
    """Decayed item-to-item co-visitation counts with bounded neighbour lists.

    :arg half_life_s: how fast co-visitation fades (event time; ``math.inf``: never).
    :arg window: how many of the user's recent items pair with a new one.
    :arg recency: weight factor per step back in the user's history (0–1].
    :arg max_neighbours: neighbours kept per item (``top-M``).
    :arg alpha: popularity normalisation exponent of the source item.
    :arg beta: popularity normalisation exponent of the neighbour.
    :arg list_size: length of the cached ranked list per item.
    :arg refresh_after: rebuild an item's cached list after this many updates.
    """

    def __init__(
        self,
        half_life_s: float = 30 * 86_400.0,
        window: int = 10,
        recency: float = 0.9,
        max_neighbours: int = 100,
        alpha: float = 0.7,
        beta: float = 0.3,
        list_size: int = 40,
        refresh_after: int = 20,
    ) -> None:
        self.decay = 0.0 if math.isinf(half_life_s) else math.log(2) / (half_life_s * 1000)
        self.window = window
        self.recency_weights = [recency**d for d in range(window)]
        self.max_neighbours = max_neighbours
        self.alpha = alpha
        self.beta = beta
        self.list_size = list_size
        self.refresh_after = refresh_after
        self.landmark: Optional[int] = None
        self.pairs: dict[str, dict[str, float]] = {}
        self.popularity: dict[str, float] = {}
        self._lists: dict[str, tuple] = {}  # item -> (1/pop^α, ranked list, same as a dict)
        self._updates: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.popularity)

    def _scale(self, ts: int) -> float:
        if self.landmark is None:
            self.landmark = ts
        if not self.decay:
            return 1.0
        x = self.decay * (ts - self.landmark)
        if x > _MAX_EXPONENT:
            f = math.exp(-x)
            self.pairs = {i: {j: c * f for j, c in n.items()} for i, n in self.pairs.items()}
            self.popularity = {i: p * f for i, p in self.popularity.items()}
            self._lists.clear()
            self.landmark = ts
            x = 0.0
        return math.exp(x)

    def learn_one(self, recent: Sequence[str], item: str, weight: float, ts: int) -> list[str]:
        """Pair ``item`` with the user's ``recent`` items (oldest first); returns the
        items whose neighbour lists changed."""
        if weight <= 0:
            return []
        scale = self._scale(ts)
        w = weight * scale
        self.popularity[item] = self.popularity.get(item, 0.0) + w
        touched = [item]
        pairs, updates, cap = self.pairs, self._updates, 2 * self.max_neighbours
        rw = self.recency_weights
        n = len(recent)
        for d in range(min(n, self.window)):
            other = recent[n - 1 - d]
            if other == item:
                continue
            inc = w * rw[d]
            for a, b in ((other, item), (item, other)):
                nb = pairs.get(a)
                if nb is None:
                    nb = pairs[a] = {}
                nb[b] = nb.get(b, 0.0) + inc
                updates[a] = updates.get(a, 0) + 1
                if len(nb) > cap:
                    pairs[a] = dict(heapq.nlargest(self.max_neighbours, nb.items(), key=lambda kv: kv[1]))
            touched.append(other)
        return touched

    def neighbours(self, item: str) -> tuple[float, list[tuple[str, float]], dict[str, float]]:
        """(1 / pop(item)^α, neighbours ranked by c / pop^β, the same as a dict) — cached."""
        cached = self._lists.get(item)
        if cached is not None and self._updates.get(item, 0) < self.refresh_after:
            return cached
        nb = self.pairs.get(item)
        if not nb:
            return 1.0, [], {}
        pop = self.popularity
        b = self.beta
        scored = sorted(((j, c / (pop.get(j) or 1.0) ** b) for j, c in nb.items()), key=lambda js: (-js[1], js[0]))
        top = scored[: self.list_size]
        entry = (1.0 / (pop.get(item) or 1.0) ** self.alpha, top, dict(top))
        self._lists[item] = entry
        self._updates[item] = 0
        return entry

    def similar(self, item: str, n: Optional[int] = None) -> list[tuple[str, float]]:
        """Neighbours of ``item``, most similar first (scores are relative)."""
        norm, ranked, _ = self.neighbours(item)
        return [(j, s * norm) for j, s in ranked[: n or self.list_size]]
