"""Hybrid recommendations: blend candidates from several sources into one ranked list.

Candidate sources, each scored in [0, 1] relative to its own best candidate:

* ``co_visit:<item>`` — neighbours of the user's recent items in the co-visitation graph,
  weighted by how recent and how strong the user's interaction with the source item was;
* ``category:<c>`` — trending items of the user's strongest categories, weighted by the
  user's decayed affinity for the category;
* ``segment`` — items trending among the user's segment;
* ``trending`` — global trending, which alone serves cold-start and flagged users.

The blend is ``Σ weight(source) · score``; each item's ``reason`` is the source that
contributed most. Excluded items (purchased, or everything seen when configured) never
appear, and at most ``max_category_share`` of the list may come from one category.

The arithmetic is vectorised: :func:`blend_parts` takes the parts as numpy arrays of item
numbers and scores (:class:`Candidates`, the hot path) and sums them per kind with
a fixed number of numpy calls whatever the number of parts; :func:`blend` takes
:class:`Source` dicts and numbers their items first. Reasons are worked out for the
recommended items only.

Example:

>>> recs = blend([source("co_visit", {"b": 1.0}), source("trending", {"c": 5.0, "b": 1.0})],
...              BlendConfig(k=2), exclude=set(), category_of={})
>>> [(r.item_id, r.reason) for r in recs]
[('b', 'co_visit'), ('c', 'trending')]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from pulse.operators.compiled import lazy_njit


@dataclass(frozen=True)
class BlendConfig:
    k: int = 10
    weights: Mapping[str, float] = field(
        default_factory=lambda: {"co_visit": 1.0, "category": 0.35, "segment": 0.2, "trending": 0.1}
    )
    max_category_share: float = 0.5
    exclude_seen: bool = False


class Rec(NamedTuple):
    item_id: str
    score: float
    reason: str


class Source(NamedTuple):
    """One kind of candidates: ``scores`` summed over its parts, and the parts themselves
    (``reason``, part scores, factor) so that each recommended item can name the part
    that gave it the most. Scores are not negative; :func:`blend` reads the parts."""

    kind: str
    scores: dict[str, float]
    parts: list[tuple[str, Mapping[str, float], float]]


def source(kind: str, scores: Mapping[str, float]) -> Source:
    """A source with a single part whose reason is its kind (``trending``)."""
    return Source(kind, dict(scores), [(kind, scores, 1.0)])


class Candidates:
    """Candidate parts in item numbers, cheap to fill (see :func:`blend_parts`).

    Two shapes of part:

    * *list parts*, column by column: part ``p`` of kind ``kind_names[kinds[p]]``, named
      ``reasons[p]``, offers the items ``numbers[p]`` (an int64 array, distinct within
      the part, not empty) with ``scores[p] × factors[p]`` (``scores[p]`` a float64
      array, scores >= 0);
    * *seed parts*, of kind ``kind_names[0]`` (``co_visit``): seed item ``seeds[s]``
      offers its cached neighbour list from ``pool`` (a :class:`ListPool`) with
      ``seed_factors[s]``, named ``seed_reasons[s]``.

    Kinds are numbered in order of first appearance, the seeds' kind first.
    """

    __slots__ = ("kind_names", "kinds", "reasons", "numbers", "scores", "factors", "sizes",
                 "seeds", "seed_factors", "seed_reasons", "pool")

    def __init__(self, pool: Optional["ListPool"] = None, seed_kind: str = "co_visit") -> None:
        self.kind_names: list[str] = [seed_kind]
        self.kinds: list[int] = []
        self.reasons: list[str] = []
        self.numbers: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.factors: list[float] = []
        self.sizes: list[int] = []
        self.seeds: list[int] = []
        self.seed_factors: list[float] = []
        self.seed_reasons: list[str] = []
        self.pool = pool if pool is not None else _NO_POOL

    def __len__(self) -> int:
        return len(self.kinds) + len(self.seeds)

    def kind(self, name: str) -> int:
        """The number of kind ``name`` (numbered on first use)."""
        names = self.kind_names
        if name not in names:
            names.append(name)
        return names.index(name)

    def add(self, kind: str, reason: str, numbers: np.ndarray, scores: np.ndarray, factor: float = 1.0) -> None:
        """Add a list part (an empty one is left out)."""
        size = len(numbers)
        if size:
            self.kinds.append(self.kind(kind))
            self.reasons.append(reason)
            self.numbers.append(numbers)
            self.scores.append(scores)
            self.factors.append(factor)
            self.sizes.append(size)

    def add_seed(self, seed: int, reason: str, factor: float = 1.0) -> None:
        """Add a seed part: the pool's list of item number ``seed``."""
        self.seeds.append(seed)
        self.seed_factors.append(factor)
        self.seed_reasons.append(reason)


class ListPool:
    """Ranked lists of many items in one pair of flat arrays, so that compiled code can
    gather them by item number: list ``i`` is ``numbers[start[i]:start[i] + length[i]]``
    with ``scores`` alike (``length[i] == 0``: no list). A rebuilt list is appended and
    the old range becomes garbage, reclaimed when it outweighs the live lists.

    >>> pool = ListPool()
    >>> pool.put(3, np.array([7, 8]), np.array([0.5, 0.25]))
    >>> pool.get(3)
    (array([7, 8]), array([0.5 , 0.25]))
    """

    __slots__ = ("start", "length", "numbers", "scores", "used", "live")

    def __init__(self, items: int = 64, capacity: int = 1024) -> None:
        self.start = np.zeros(items, dtype=np.int64)
        self.length = np.zeros(items, dtype=np.int64)
        self.numbers = np.zeros(capacity, dtype=np.int64)
        self.scores = np.zeros(capacity)
        self.used = 0  # entries written
        self.live = 0  # entries in current lists

    def __len__(self) -> int:
        return len(self.start)

    def grow(self, items: int) -> None:
        """Make room for item numbers below ``items``."""
        if items > len(self.start):
            size = max(items, 2 * len(self.start))
            for name in ("start", "length"):
                old = getattr(self, name)
                new = np.zeros(size, dtype=np.int64)
                new[: len(old)] = old
                setattr(self, name, new)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """List ``i`` (views: do not modify them)."""
        if i >= len(self.start):
            return _NO_LIST
        s, n = int(self.start[i]), int(self.length[i])
        return self.numbers[s : s + n], self.scores[s : s + n]

    def put(self, i: int, numbers: np.ndarray, scores: np.ndarray) -> None:
        """Replace list ``i``."""
        self.grow(i + 1)
        n = len(numbers)
        self.live += n - int(self.length[i])
        if self.used + n > len(self.numbers):
            self._make_room(n)
        s = self.used
        self.numbers[s : s + n] = numbers
        self.scores[s : s + n] = scores
        self.start[i], self.length[i] = s, n
        self.used = s + n

    def clear(self) -> None:
        """Drop every list."""
        self.length[:] = 0
        self.used = self.live = 0

    def _make_room(self, n: int) -> None:
        # Compact into new arrays (views handed out earlier stay valid), doubled when
        # the live lists fill more than half.
        live = np.flatnonzero(self.length)
        capacity = len(self.numbers)
        while self.live + n > capacity // 2:
            capacity *= 2
        numbers, scores = np.zeros(capacity, dtype=np.int64), np.zeros(capacity)
        at = 0
        for i in live.tolist():
            s, m = int(self.start[i]), int(self.length[i])
            numbers[at : at + m] = self.numbers[s : s + m]
            scores[at : at + m] = self.scores[s : s + m]
            self.start[i] = at
            at += m
        self.numbers, self.scores, self.used = numbers, scores, at


_NO_LIST = (np.zeros(0, dtype=np.int64), np.zeros(0))
_NO_POOL = ListPool(items=1, capacity=1)


def blend(
    sources: Sequence[Source],
    config: BlendConfig,
    exclude: Collection[str],
    category_of: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]],
) -> list[Rec]:
    """Blend the sources: ``Σ weight(kind) · score / best score of the kind``."""
    numbers: dict[str, int] = {}
    ids: list[str] = []
    cands = Candidates()
    for src in sources:
        for reason, part, f in src.parts:
            nums = []
            for item in part:
                n = numbers.get(item)
                if n is None:
                    n = numbers[item] = len(ids)
                    ids.append(item)
                nums.append(n)
            cands.add(src.kind, reason, np.array(nums, dtype=np.intp),
                      np.fromiter(part.values(), dtype=np.float64, count=len(part)), f)
    return blend_parts(cands, config, ids, exclude, category_of)


def _accumulate(seeds, seed_f, pool_start, pool_len, pool_nums, pool_scores,
                items, vals, sizes, part_kind, part_f, kind_w, excluded, want, stamp, slot, mark,
                cats, n_cats, k, cap):  # pragma: no cover (compiled)
    """The numeric core of :func:`blend_parts` (compiled, see
    :mod:`pulse.operators.compiled`).

    Sums per (kind, item) over the seed parts (gathered from the pool) then the list
    parts, scales each kind by ``weight / its best sum``, and works out for the distinct
    items that are not ``excluded`` their total scores and the part that gave most to
    their best kind (seed parts are numbered first, then the list parts; the first wins
    ties). Returns ``(items, total, why, status)``:

    * ``k == 0``: every such item; only the first ``want`` are in order (best first, the
      earlier on ties), the others follow in no particular order; status 0;
    * ``k > 0``: the list under the category cap: each item in turn, best first, is
      taken unless one of its categories (``cats[item]``, padded with -1; rows past the
      matrix's end: none) already has ``cap`` items, until ``k`` are taken; held-back
      items then fill the list if it is short. Status 0, or 1 (and nothing) when scores
      tie where it matters: the caller then orders ties by id. The scan starts on the
      ordered head of ``want`` and orders the rest only if it gets that far.

    ``stamp`` and ``slot`` are per item number and persist between calls: ``stamp[j]
    == mark`` says item ``j`` already has a row ``slot[j]`` in this call's work arrays
    (which are sized by the number of entries, not by the catalogue), ``-mark`` that it
    is excluded; a fresh ``mark`` per call saves clearing them."""
    nk = len(kind_w)
    n_seeds = len(seeds)
    bound = len(items)
    if kind_w[0] > 0:
        for s in range(n_seeds):
            bound += pool_len[seeds[s]]
    acc = np.zeros(nk * bound)
    best_val = np.full(nk * bound, -1.0)
    best_part = np.zeros(nk * bound, dtype=np.int64)
    uniq = np.empty(bound, dtype=np.int64)
    n = 0
    if kind_w[0] > 0:
        for s in range(n_seeds):
            i = seeds[s]
            f = seed_f[s]
            for e in range(pool_start[i], pool_start[i] + pool_len[i]):
                j = pool_nums[e]
                if stamp[j] != mark:
                    stamp[j] = mark
                    slot[j] = n
                    uniq[n] = j
                    n += 1
                v = pool_scores[e] * f
                cell = slot[j]  # (kind 0)
                acc[cell] += v
                if v > best_val[cell]:
                    best_val[cell] = v
                    best_part[cell] = s
    e = 0
    for p in range(len(sizes)):
        kd = part_kind[p]
        f = part_f[p]
        if kind_w[kd] <= 0:
            e += sizes[p]
            continue
        for _ in range(sizes[p]):
            j = items[e]
            v = vals[e] * f
            e += 1
            if stamp[j] != mark:
                stamp[j] = mark
                slot[j] = n
                uniq[n] = j
                n += 1
            cell = kd * bound + slot[j]
            acc[cell] += v
            if v > best_val[cell]:
                best_val[cell] = v
                best_part[cell] = n_seeds + p
    scale = np.zeros(nk)
    for kd in range(nk):
        top = 0.0
        for u in range(n):
            a = acc[kd * bound + u]
            if a > top:
                top = a
        scale[kd] = kind_w[kd] / top if top > 0 else 0.0
    scores = np.empty(n)
    parts = np.empty(n, dtype=np.int64)
    for u in range(n):
        t = 0.0
        best = -1.0
        best_k = 0
        for kd in range(nk):
            c = scale[kd] * acc[kd * bound + u]
            t += c
            if c > best:
                best = c
                best_k = kd
        scores[u] = t
        parts[u] = best_part[best_k * bound + u]
    width = len(stamp)
    for x in range(len(excluded)):
        j = excluded[x]
        if j < width and stamp[j] == mark:
            stamp[j] = -mark
    # the best `want` items not excluded, in order (insertion into a sorted buffer: a
    # full sort costs more than the blend), then the others in no order
    if want > n:
        want = n
    order = np.empty(n, dtype=np.int64)  # the ordered head, then the rest
    filled = 0
    rest = np.empty(n, dtype=np.int64)
    n_rest = 0
    for u in range(n):
        if stamp[uniq[u]] != mark:
            continue
        sc = scores[u]
        if filled == want:
            if want == 0 or sc <= scores[order[filled - 1]]:
                rest[n_rest] = u
                n_rest += 1
                continue
            rest[n_rest] = order[filled - 1]  # pushed out of the buffer
            n_rest += 1
            filled -= 1
        pos = filled
        while pos > 0 and scores[order[pos - 1]] < sc:
            order[pos] = order[pos - 1]
            pos -= 1
        order[pos] = u
        filled += 1
    live = filled + n_rest
    for x in range(n_rest):
        order[filled + x] = rest[x]
    sel = order
    count = live
    status = 0
    if k > 0:
        # the category cap, scanning best first
        rows, cols = cats.shape  # (item numbers, categories an item at most)
        counts = np.zeros(n_cats, dtype=np.int64)
        chosen = np.empty(k, dtype=np.int64)
        held = np.empty(k, dtype=np.int64)
        nc = 0
        nh = 0
        r = 0
        ordered = filled
        while r < live and nc < k:
            if r == ordered:  # past the ordered head: order the rest (ties among them end the scan)
                tail = order[r:live]
                order[r:live] = tail[np.argsort(-scores[tail])]
                ordered = live
            u = order[r]
            if r > 0 and scores[u] == scores[order[r - 1]]:
                status = 1
                break
            j = uniq[u]
            blocked = False
            if j < rows:
                for c in range(cols):
                    cat = cats[j, c]
                    if cat < 0:
                        break
                    if counts[cat] >= cap:
                        blocked = True
                        break
            if blocked:
                if nh < k:
                    held[nh] = u
                    nh += 1
            else:
                if j < rows:
                    for c in range(cols):
                        cat = cats[j, c]
                        if cat < 0:
                            break
                        counts[cat] += 1
                chosen[nc] = u
                nc += 1
            r += 1
        # a tie between the last item looked at and the best of the others could change it
        if status == 0 and 0 < r < live:
            last = scores[order[r - 1]]
            for q in range(r, live):
                if scores[order[q]] == last:
                    status = 1
                    break
        if status == 1:
            count = 0
        else:
            count = min(k, nc + nh)
            for x in range(count - nc):
                chosen[nc + x] = held[x]
            sel = chosen
    items_out = np.empty(count, dtype=np.int64)
    total = np.empty(count)
    why = np.empty(count, dtype=np.int64)
    for x in range(count):
        u = sel[x]
        items_out[x] = uniq[u]
        total[x] = scores[u]
        why[x] = parts[u]
    return items_out, total, why, status


class Scratch:
    """Per-item-number work arrays of :func:`blend_parts` (16 bytes an item), reused
    between calls; they grow with the item numbers."""

    __slots__ = ("stamp", "slot", "mark")

    def __init__(self, width: int = 1024) -> None:
        self.stamp = np.zeros(width, dtype=np.int64)
        self.slot = np.zeros(width, dtype=np.int64)
        self.mark = 0

    def ensure(self, width: int) -> None:
        """Make room for item numbers below ``width``."""
        if width > len(self.stamp):
            self.__init__(max(width, 2 * len(self.stamp)))  # type: ignore[misc]


_blend_kernel = lazy_njit(_accumulate)


_new_rec = tuple.__new__
_I64 = np.int64
_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0)
_NO_CATS = np.zeros((0, 1), dtype=np.int64)  # (the kernel's category matrix when it applies no cap)


def blend_parts(
    cands: Candidates,
    config: BlendConfig,
    ids: Sequence[str],
    exclude: Collection[str],
    category_of: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]],
    scratch: Optional[Scratch] = None,
    exclude_numbers: Optional[np.ndarray] = None,
    category_numbers: Optional[tuple[np.ndarray, int]] = None,
) -> list[Rec]:
    """:func:`blend` over :class:`Candidates` in item numbers (``ids`` maps numbers to
    item ids): a kind's score of an item is the sum of ``score × factor`` over the kind's
    parts. The reason of a recommended item is the part that gave most to its best kind
    (the first such part on ties). Excluded items are given as ids (``exclude``), as
    item numbers (``exclude_numbers``, an int64 array: cheaper), or both. The category
    cap reads ``category_of``, or, cheaper, ``category_numbers``: ``(cats, n)`` with
    ``cats[item number]`` the item's category numbers (below ``n``) padded with -1 (an
    int64 matrix; rows past its end: no categories), which must say the same. ``scratch``
    saves allocating work arrays per call. The sums, the ranking, the exclusion by
    number and the category cap by number run compiled, in one call
    (:func:`_accumulate`); exclusions by id, a cap read from ``category_of`` and ties
    where they matter take a slower path, partly in Python.

    >>> import numpy as np
    >>> c = Candidates()
    >>> c.add("co_visit", "co_visit:x", np.array([0, 1]), np.array([1.0, 0.5]))
    >>> c.add("co_visit", "co_visit:y", np.array([1]), np.array([2.0]), 0.5)
    >>> c.add("trending", "trending", np.array([2, 0]), np.array([4.0, 2.0]))
    >>> [(r.item_id, r.score, r.reason) for r in blend_parts(c, BlendConfig(k=2), ["a", "b", "c"], (), {})]
    [('b', 1.0, 'co_visit:y'), ('a', 0.716667, 'co_visit:x')]
    """
    if not len(cands):
        return []
    weights = config.weights
    kind_w = np.array([max(0.0, weights.get(kind, 0.0)) for kind in cands.kind_names])
    if scratch is None:
        scratch = Scratch(len(ids))
    else:
        scratch.ensure(len(ids))
    if len(cands.kinds) > 1:
        items, vals = np.concatenate(cands.numbers), np.concatenate(cands.scores)
    elif cands.kinds:
        items, vals = cands.numbers[0], cands.scores[0]
    else:
        items, vals = _EMPTY_I, _EMPTY_F
    pool = cands.pool
    args = (
        np.array(cands.seeds, dtype=_I64), np.array(cands.seed_factors), pool.start, pool.length,
        pool.numbers, pool.scores, items, vals, np.array(cands.sizes, dtype=_I64),
        np.array(cands.kinds, dtype=_I64), np.array(cands.factors), kind_w,
        _EMPTY_I if exclude_numbers is None else exclude_numbers,
    )
    kernel = _blend_kernel.compiled()
    # The kernel orders the best 2k + 4 that are not excluded (most lists are settled
    # within them) and the rest only if the capped scan gets there. On the slow path,
    # should the ordered head not do (ties, exclusions by id), it runs again ordering
    # everything; ties are then ordered by id.
    k = config.k
    m = 2 * k
    want = m + 4 if not exclude else len(ids)
    n = ran = -1
    if callable(category_of):
        cats, no_cats = category_of, None
    else:
        cats, no_cats = category_of.get, ()
    cap = max(1, math.ceil(k * config.max_category_share))
    if category_numbers is not None and not exclude:
        # all compiled, unless scores tie where it matters (ties are ordered by id, below)
        scratch.mark += 1
        chosen, total, why, status = kernel(*args, want, scratch.stamp, scratch.slot, scratch.mark,
                                            category_numbers[0], category_numbers[1], k, cap)
        if status == 0:
            return _recs(cands, ids, chosen, total, why)
    while True:
        if want > ran:
            scratch.mark += 1
            uniq, total, why, _ = kernel(*args, want, scratch.stamp, scratch.slot, scratch.mark, _NO_CATS, 0, 0, 0)
            n = len(uniq)
            ran = want
        ranked: list[tuple[int, str, float]] = []  # (place, id, score)
        last = None
        cut = False  # whether candidates are left beyond `ranked`
        for place, number, score in zip(range(min(n, want)), uniq[:want].tolist(), total[:want].tolist()):
            if len(ranked) >= m and score != last:
                cut = True
                break
            item = ids[number]
            if exclude and item in exclude:
                continue
            ranked.append((place, item, score))
            last = score
        else:
            if want < n:  # the kernel's ordered head ran out (ties, exclusions by id)
                want = n
                continue
        if len({r[2] for r in ranked}) < len(ranked):  # ties: by id
            ranked.sort(key=lambda r: (-r[2], r[1]))
            if len(ranked) > m:
                del ranked[m:]
                cut = True
        # at most max_category_share of the list from one category
        per_cat: dict[str, int] = {}
        full: set[str] = set()  # the categories at the cap
        chosen: list[tuple[int, str, float]] = []
        held: list[tuple[int, str, float]] = []
        for r in ranked:
            item_cats = cats(r[1]) if no_cats is None else cats(r[1], no_cats)  # type: ignore[call-arg]
            if item_cats:
                if full and not full.isdisjoint(item_cats):
                    held.append(r)
                    continue
                for c in item_cats:
                    count = per_cat[c] = per_cat.get(c, 0) + 1
                    if count >= cap:
                        full.add(c)
            chosen.append(r)
            if len(chosen) >= k:
                break
        if len(chosen) < k and cut:  # the cap held back too many: look at everything
            m = want = max(n, 1)
            continue
        break
    # Not enough variety to honour the cap: fill up with the best held-back items.
    chosen.extend(held[: k - len(chosen)])
    places = [r[0] for r in chosen]
    return _recs(cands, ids, uniq.take(places), total.take(places), why.take(places))


def _recs(cands: Candidates, ids: Sequence[str], items: np.ndarray, total: np.ndarray, why: np.ndarray) -> list[Rec]:
    """The recommendations of the kernel's chosen ``items``, in that order."""
    names = cands.seed_reasons + cands.reasons  # seed parts are numbered first, then the list parts
    # scores to 6 decimals (round(x * 1e6) / 1e6: round(x, 6) without its slow path)
    return [
        _new_rec(Rec, (ids[number], round(score * 1e6) / 1e6, names[p]))
        for number, score, p in zip(items.tolist(), total.tolist(), why.tolist())
    ]


def warm_up() -> None:
    """Compile the blend now (or load it from numba's cache) rather than on the first
    recommendation."""
    c = Candidates()
    c.add("trending", "trending", np.array([0], dtype=np.int64), np.array([1.0]))
    blend_parts(c, BlendConfig(k=1), ["x"], (), {})
