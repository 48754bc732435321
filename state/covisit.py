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
source items are comparable. The best ``list_size`` neighbours of an item are cached as
numpy arrays of item numbers (see :class:`ItemIndex`) and scores, and rebuilt only after
``refresh_after`` updates to that item, so a recommendation gathers a few cached arrays
per seed item. (On MovieLens 100K, α = 0.7, β = 0.3 and a window of 10 gave the best hit
rate; see ``benchmarks/``.)

Example:

>>> cv = CoVisitation(half_life_s=3600, window=5)
>>> cv.learn_one(["a"], "b", 1.0, ts=0)   # items whose neighbours changed
['b', 'a']
>>> _ = cv.learn_one(["c"], "b", 1.0, ts=0)
>>> [i for i, _ in cv.similar("b")]
['a', 'c']
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Optional, Sequence

import numpy as np

from pulse.operators.compiled import lazy_njit
from pulse.operators.recommend import ListPool

_ID, _SCORE = itemgetter(0), itemgetter(1)

_MAX_EXPONENT = 300.0
_EMPTY: tuple[np.ndarray, np.ndarray] = (np.zeros(0, dtype=np.int64), np.zeros(0))


def _pair_all(start, length, capacity, nbr, cnt, used, updates, i, others, incs, max_nb):  # pragma: no cover (compiled)
    """Pair item ``i`` with each of ``others``: add ``incs[d]`` to the count of ``i``
    among ``others[d]``'s neighbours and of ``others[d]`` among ``i``'s (see
    :class:`NeighbourTable` for the layout); returns the new end of the used pool. The
    caller leaves room for every region to move once or twice."""
    for d in range(2 * len(others)):
        if d % 2 == 0:
            a = others[d // 2]
            b = i
        else:
            a = i
            b = others[d // 2]
        inc = incs[d // 2]
        updates[a] += 1
        s = start[a]
        n = length[a]
        found = False
        for e in range(s, s + n):
            if nbr[e] == b:
                cnt[e] += inc
                found = True
                break
        if found:
            continue
        if n == capacity[a]:
            if n >= 2 * max_nb:
                # full: keep the max_nb strongest, strongest first (the earlier on ties)
                order = np.argsort(-cnt[s : s + n], kind="mergesort")[:max_nb]
                kept_nbr = nbr[s : s + n][order]
                kept_cnt = cnt[s : s + n][order]
                nbr[s : s + max_nb] = kept_nbr
                cnt[s : s + max_nb] = kept_cnt
                n = max_nb
            else:
                # grow: move the region to the end of the pool, twice as large
                cap = min(2 * max_nb, max(8, 2 * capacity[a]))
                nbr[used : used + n] = nbr[s : s + n]
                cnt[used : used + n] = cnt[s : s + n]
                s = used
                start[a] = s
                capacity[a] = cap
                used += cap
        nbr[s + n] = b
        cnt[s + n] = inc
        length[a] = n + 1
    return used


def _rank_neighbours(nbr, cnt, s, n, pop_beta, size, scale, out_js, out_scores):  # pragma: no cover (compiled)
    """The ``size`` best of the ``n`` neighbours at ``nbr[s:]`` by ``cnt / pop_beta[j]``,
    in table order, scores times ``scale``, into ``out_js`` and ``out_scores``; returns
    how many, or -1 when items tie at the cut (the caller then breaks ties by id)."""
    scores = np.empty(n)
    for k in range(n):
        scores[k] = cnt[s + k] / pop_beta[nbr[s + k]]
    if n > size:
        cut = np.partition(scores, n - size)[n - size]
        above = 0
        for k in range(n):
            if scores[k] >= cut:
                above += 1
        if above > size:
            return -1
    else:
        cut = -np.inf
    out = 0
    for k in range(n):
        if scores[k] >= cut:
            out_js[out] = nbr[s + k]
            out_scores[out] = scores[k] * scale
            out += 1
    return out


_pair = lazy_njit(_pair_all)
_best_neighbours = lazy_njit(_rank_neighbours)


class NeighbourTable:
    """Decayed neighbour counts of every item in one pair of flat arrays (compiled code
    updates them in place): item ``a``'s neighbours are ``nbr[start[a]:start[a] +
    length[a]]`` with counts ``cnt`` alike, in a region of ``capacity[a]`` slots that
    doubles as it fills (8 → 16 → … → ``2 · max_neighbours``); a full region keeps its
    ``max_neighbours`` strongest. Moved regions leave garbage behind, reclaimed when it
    outweighs the live regions.

    >>> t = NeighbourTable(max_neighbours=4)
    >>> t.pair(0, [1, 2], [1.0, 0.5])
    >>> t.neighbours(0), t.neighbours(2)
    ({1: 1.0, 2: 0.5}, {0: 0.5})
    """

    __slots__ = ("max_neighbours", "start", "length", "capacity", "nbr", "cnt", "used", "updates")

    def __init__(self, max_neighbours: int = 100, items: int = 64) -> None:
        self.max_neighbours = max_neighbours
        self.start = np.zeros(items, dtype=np.int64)
        self.length = np.zeros(items, dtype=np.int64)
        self.capacity = np.zeros(items, dtype=np.int64)
        self.nbr = np.zeros(4096, dtype=np.int64)
        self.cnt = np.zeros(4096)
        self.used = 0
        #: updates per item since its ranked list was built (reset by the owner)
        self.updates = np.zeros(items, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.start)

    def grow(self, items: int) -> None:
        """Make room for item numbers below ``items``."""
        if items > len(self.start):
            size = max(items, 2 * len(self.start))
            for name in ("start", "length", "capacity", "updates"):
                old = getattr(self, name)
                new = np.zeros(size, dtype=np.int64)
                new[: len(old)] = old
                setattr(self, name, new)

    def pair(self, i: int, others: Sequence[int], incs: Sequence[float]) -> None:
        """Add ``incs[d]`` to the co-visitation of ``i`` and ``others[d]`` (both ways;
        ``others`` must not contain ``i``)."""
        top = max(others) if others else i
        if top < i:
            top = i
        if top >= len(self.start):
            self.grow(top + 1)
        # every region touched may move, twice (i's perhaps more often: it takes one
        # neighbour per other)
        room = (2 * len(others) + 2) * 2 * self.max_neighbours
        if self.used + room > len(self.nbr):
            self._make_room(room)
        self.used = _pair(self.start, self.length, self.capacity, self.nbr, self.cnt, self.used, self.updates, i,
                          np.array(others, dtype=np.int64), np.array(incs, dtype=np.float64), self.max_neighbours)

    def neighbours(self, a: int) -> dict[int, float]:
        """Item ``a``'s neighbours and counts (for inspection and tests)."""
        if a >= len(self.start):
            return {}
        s, n = int(self.start[a]), int(self.length[a])
        return dict(zip(self.nbr[s : s + n].tolist(), self.cnt[s : s + n].tolist()))

    def scale(self, f: float) -> None:
        """Multiply every count by ``f``."""
        self.cnt[: self.used] *= f

    def _make_room(self, room: int) -> None:
        live = int(self.capacity.sum())
        size = len(self.nbr)
        while live + room > size // 2:
            size *= 2
        nbr, cnt = np.zeros(size, dtype=np.int64), np.zeros(size)
        at = 0
        for a in np.flatnonzero(self.capacity).tolist():
            s, n, cap = int(self.start[a]), int(self.length[a]), int(self.capacity[a])
            nbr[at : at + n] = self.nbr[s : s + n]
            cnt[at : at + n] = self.cnt[s : s + n]
            self.start[a] = at
            at += cap
        self.nbr, self.cnt, self.used = nbr, cnt, at


class ItemIndex:
    """Dense, stable numbers for item ids (0, 1, 2, … in order of first appearance), so
    that scores can live in numpy arrays. Numbers are never reused: the index grows with
    the catalogue, like the popularity table.

    >>> ix = ItemIndex()
    >>> ix.add("x"), ix.add("y"), ix.add("x"), ix.ids
    (0, 1, 0, ['x', 'y'])
    """

    __slots__ = ("numbers", "ids")

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, item: str) -> int:
        n = self.numbers.get(item)
        if n is None:
            n = self.numbers[item] = len(self.ids)
            self.ids.append(item)
        return n


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
    :arg index: the :class:`ItemIndex` to number items with (shared with the engine).
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
        refresh_after: int = 40,
        index: Optional[ItemIndex] = None,
    ) -> None:
        self.decay = 0.0 if math.isinf(half_life_s) else math.log(2) / (half_life_s * 1000)
        self.window = window
        self.recency_weights = [recency**d for d in range(window)]
        self.max_neighbours = max_neighbours
        self.alpha = alpha
        self.beta = beta
        self.list_size = list_size
        self.refresh_after = refresh_after
        self.index = index if index is not None else ItemIndex()
        self.landmark: Optional[int] = None
        #: item number -> neighbour numbers and decayed counts
        self.table = NeighbourTable(max_neighbours)
        #: decayed popularity per item number (0 for items never learned here)
        self.popularity: list[float] = []
        self._pop_beta = np.ones(64)  # popularity^β per item number (1 when none)
        self._learned = 0  # items with a popularity
        #: cached ranked lists: item number -> (neighbour numbers, their
        #: c / pop^β / pop(item)^α), gathered by the compiled blend
        self.lists = ListPool()
        self._built: list[bool] = []  # whether an item's cached list is current
        self.reasons: list[str] = []  # item number -> "co_visit:<item>"
        self._out = (np.zeros(list_size, dtype=np.int64), np.zeros(list_size))  # work arrays of _build

    def __len__(self) -> int:
        return self._learned

    def _scale(self, ts: int) -> float:
        if self.landmark is None:
            self.landmark = ts
        if not self.decay:
            return 1.0
        x = self.decay * (ts - self.landmark)
        if x > _MAX_EXPONENT:
            f = math.exp(-x)
            self.table.scale(f)
            self.popularity = [p * f for p in self.popularity]
            pb = np.array(self.popularity) ** self.beta
            pb[pb <= 0] = 1.0
            self._pop_beta[: len(pb)] = pb
            self._built = [False] * len(self._built)
            self.lists.clear()
            self.landmark = ts
            x = 0.0
        return math.exp(x)

    def _grow(self, n: int) -> None:
        """Make room for item numbers below ``n``."""
        if n > len(self._pop_beta):
            pb = np.ones(max(n, 2 * len(self._pop_beta)))
            pb[: len(self._pop_beta)] = self._pop_beta
            self._pop_beta = pb
        extra = n - len(self._built)
        if extra > 0:
            self.popularity.extend([0.0] * extra)
            self._built.extend([False] * extra)
            self.table.grow(n)
            ids = self.index.ids
            self.reasons.extend(f"co_visit:{ids[i]}" for i in range(len(self.reasons), n))
            self.lists.grow(n)

    def learn_one(self, recent: Sequence[str], item: str, weight: float, ts: int) -> list[str]:
        """Pair ``item`` with the user's ``recent`` items (oldest first); returns the
        items whose neighbour lists changed."""
        if weight <= 0:
            return []
        w = weight * self._scale(ts)
        index = self.index
        i = index.add(item)
        n = len(recent)
        others = list(recent[max(0, n - self.window):])
        others.reverse()  # the item just before first
        nums = list(map(index.numbers.get, others))
        if None in nums:
            nums = [index.add(o) for o in others]
        if len(index) > len(self._built):
            self._grow(len(index))
        pop = self.popularity
        if not pop[i]:
            self._learned += 1
        p = pop[i] = pop[i] + w
        self._pop_beta[i] = p**self.beta
        rw = self.recency_weights
        if i in nums:
            keep = [d for d, j in enumerate(nums) if j != i]
            others = [others[d] for d in keep]
            nums = [nums[d] for d in keep]
            rw = [rw[d] for d in keep]
        self.table.pair(i, nums, [r * w for r in rw[: len(nums)]])
        others.insert(0, item)
        return others

    def fresh(self, i: int) -> bool:
        """Make sure item number ``i``'s cached list in :attr:`lists` is current (rebuilt
        after ``refresh_after`` updates); returns whether it has neighbours."""
        if i >= len(self._built):
            return False
        if not self._built[i] or self.table.updates[i] >= self.refresh_after:
            self._build(i)
        return bool(self.lists.length[i])

    def _build(self, i: int) -> None:
        self._built[i] = True
        table = self.table
        table.updates[i] = 0
        n = int(table.length[i])
        if not n:
            self.lists.put(i, _EMPTY[0], _EMPTY[1])
            return
        pi = self.popularity[i]
        scale = 1.0 / (pi if pi > 0 else 1.0) ** self.alpha
        size = min(n, self.list_size)
        out_js, out_scores = self._out
        s = int(table.start[i])
        kept = _best_neighbours(table.nbr, table.cnt, s, n, self._pop_beta, size, scale, out_js, out_scores)
        if kept < 0:  # ties at the cut: the smaller id wins
            js = table.nbr[s : s + n]
            scores = table.cnt[s : s + n] / self._pop_beta[js]
            ids = self.index.ids
            best = sorted(range(n), key=lambda k: (-scores[k], ids[js[k]]))[:size]
            best.sort()
            keep = np.array(best, dtype=np.int64)
            self.lists.put(i, js[keep], scores[keep] * scale)
            return
        self.lists.put(i, out_js[:kept], out_scores[:kept])

    def similar(self, item: str, n: Optional[int] = None) -> list[tuple[str, float]]:
        """Neighbours of ``item`` as its counts stand now (the list is rebuilt, so what is
        written does not depend on when blends last read it), most similar first (ties by
        id)."""
        i = self.index.numbers.get(item)
        if i is None or i >= len(self._built):
            return []
        self._build(i)
        js, scores = self.lists.get(i)
        ids = self.index.ids
        ranked = list(zip([ids[j] for j in js.tolist()], scores.tolist()))
        # best first, ties by id: two stable sorts with C keys (4x a sort keyed by a tuple)
        ranked.sort(key=_ID)
        ranked.sort(key=_SCORE, reverse=True)
        return ranked[: n or self.list_size]
