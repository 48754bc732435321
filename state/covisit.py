"""Item-to-item co-visitation, learned incrementally with decayed counts.

When a user interacts with item ``j``, every item ``i`` among the user's recent items
(the last ``window`` ones, within ``max_gap_s`` of event time) gets its co-visitation
with ``j`` raised in both directions by ``w_i · w_j · r``, where ``r`` favours the items
visited just before (``recency ** distance``). Counts decay in event time with forward
decay (see :mod:`pulse.state.trending`). Each item keeps at most ``max_neighbours``
neighbours: when its table doubles past that, the weakest half is dropped, so memory is
bounded by ``items × 2 · max_neighbours``.

``similar(i)`` normalises the counts by the two items' popularity,
``c(i, j) / (pop(i)^α · pop(j)^(1−α))``, so a blockbuster does not become everything's
neighbour.

Example:

>>> cv = CoVisitation(half_life_s=3600, window=5)
>>> cv.learn_one(["a"], [1.0], "b", 1.0, ts=0)   # items whose neighbours changed
['b', 'a']
>>> _ = cv.learn_one(["c"], [1.0], "b", 1.0, ts=0)
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

    :arg half_life_s: how fast co-visitation fades (event time).
    :arg window: how many of the user's recent items pair with a new one.
    :arg recency: weight factor per step back in the user's history (0–1].
    :arg max_neighbours: neighbours kept per item (``top-M``).
    :arg alpha: popularity normalisation exponent of the source item.
    """

    def __init__(
        self,
        half_life_s: float = 7 * 86_400.0,
        window: int = 20,
        recency: float = 0.9,
        max_neighbours: int = 100,
        alpha: float = 0.5,
    ) -> None:
        self.decay = math.log(2) / (half_life_s * 1000)
        self.window = window
        self.recency = recency
        self.max_neighbours = max_neighbours
        self.alpha = alpha
        self.landmark: Optional[int] = None
        self.pairs: dict[str, dict[str, float]] = {}
        self.popularity: dict[str, float] = {}

    def _scale(self, ts: int) -> float:
        if self.landmark is None:
            self.landmark = ts
        x = self.decay * (ts - self.landmark)
        if x > _MAX_EXPONENT:
            f = math.exp(-x)
            self.pairs = {i: {j: c * f for j, c in n.items()} for i, n in self.pairs.items()}
            self.popularity = {i: p * f for i, p in self.popularity.items()}
            self.landmark = ts
            x = 0.0
        return math.exp(x)

    def learn_one(self, recent: Sequence[str], recent_weights: Sequence[float], item: str, weight: float, ts: int) -> list[str]:
        """Pair ``item`` with the user's ``recent`` items (oldest first); returns the
        items whose neighbour lists changed."""
        if weight <= 0:
            return []
        scale = self._scale(ts)
        self.popularity[item] = self.popularity.get(item, 0.0) + weight * scale
        touched = [item]
        r = 1.0
        seen = set()
        pairs = self.pairs
        n = len(recent)
        for k in range(n - 1, max(-1, n - 1 - self.window), -1):
            other = recent[k]
            if other == item or other in seen:
                r *= self.recency
                continue
            seen.add(other)
            inc = weight * recent_weights[k] * r * scale
            r *= self.recency
            for a, b in ((other, item), (item, other)):
                nb = pairs.get(a)
                if nb is None:
                    nb = pairs[a] = {}
                nb[b] = nb.get(b, 0.0) + inc
                if len(nb) > 2 * self.max_neighbours:
                    pairs[a] = dict(heapq.nlargest(self.max_neighbours, nb.items(), key=lambda kv: kv[1]))
            touched.append(other)
        return touched

    def similar(self, item: str, n: Optional[int] = None) -> list[tuple[str, float]]:
        """Neighbours of ``item``, most similar first (scores are relative)."""
        nb = self.pairs.get(item)
        if not nb:
            return []
        pop = self.popularity
        a = self.alpha
        pi = pop.get(item, 1.0) ** a
        scored = [(j, c / (pi * pop.get(j, 1.0) ** (1 - a))) for j, c in nb.items()]
        scored.sort(key=lambda kv: (-kv[1], kv[0]))
        return scored[: n or self.max_neighbours]
