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
numbers and scores (:class:`Candidates`, the engine's hot path) and sums them per kind with
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
    """Candidate parts in item numbers, column by column (cheap to fill, see
    :func:`blend_parts`): part ``p`` of kind ``kind_names[kinds[p]]`` (kinds are numbered
    in order of first appearance), named ``reasons[p]``, offers the items ``numbers[p]``
    (a numpy int array, distinct within the part, not empty) with ``scores[p] ×
    factors[p]`` (``scores[p]`` a float array, scores >= 0).
    """

    __slots__ = ("kind_names", "kinds", "reasons", "numbers", "scores", "factors", "sizes")

    def __init__(self) -> None:
        self.kind_names: list[str] = []
        self.kinds: list[int] = []
        self.reasons: list[str] = []
        self.numbers: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.factors: list[float] = []
        self.sizes: list[int] = []

    def __len__(self) -> int:
        return len(self.kinds)

    def add(self, kind: str, reason: str, numbers: np.ndarray, scores: np.ndarray, factor: float = 1.0) -> None:
        """Add a part (an empty one is left out)."""
        size = len(numbers)
        if size:
            names = self.kind_names
            if kind not in names:
                names.append(kind)
            self.kinds.append(names.index(kind))
            self.reasons.append(reason)
            self.numbers.append(numbers)
            self.scores.append(scores)
            self.factors.append(factor)
            self.sizes.append(size)

    def only(self, kinds: Collection[str]) -> "Candidates":
        """The parts of these kinds."""
        out = Candidates()
        for p, k in enumerate(self.kinds):
            if self.kind_names[k] in kinds:
                out.add(self.kind_names[k], self.reasons[p], self.numbers[p], self.scores[p], self.factors[p])
        return out


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


class Scratch:
    """Work arrays of :func:`blend_parts`, reused between calls (the accumulators are
    left all zeros); they grow with the item numbers."""

    __slots__ = ("size", "rows", "acc", "best", "slot", "arange")

    def __init__(self, size: int = 1024, rows: int = 4) -> None:
        self.size = size  # item numbers below this fit
        self.rows = rows  # kinds that fit
        self.acc = np.zeros(rows * size)  # sums per (kind, item number), row-major
        self.best = np.zeros(rows * size, dtype=np.int64)  # best part per (kind, item), encoded
        self.slot = np.zeros(size, dtype=np.intp)
        self.arange = np.arange(4 * size)

    def ensure(self, size: int, rows: int, entries: int) -> None:
        """Make room for item numbers below ``size``, ``rows`` kinds and ``entries``."""
        if size > self.size or rows > self.rows:
            self.__init__(max(size, 2 * self.size), max(rows, self.rows))  # type: ignore[misc]
        if entries > len(self.arange):
            self.arange = np.arange(2 * entries)


_new_rec = tuple.__new__
_max = np.maximum.reduce  # (ndarray.max goes through a Python wrapper)


def blend_parts(
    cands: Candidates,
    config: BlendConfig,
    ids: Sequence[str],
    exclude: Collection[str],
    category_of: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]],
    scratch: Optional[Scratch] = None,
) -> list[Rec]:
    """:func:`blend` over :class:`Candidates` in item numbers (``ids`` maps numbers to
    item ids): a kind's score of an item is the sum of ``score × factor`` over the kind's
    parts. The reason of a recommended item is the part that gave most to its best kind
    (the first such part on ties). ``scratch`` saves allocating work arrays per call.

    >>> import numpy as np
    >>> c = Candidates()
    >>> c.add("co_visit", "co_visit:x", np.array([0, 1]), np.array([1.0, 0.5]))
    >>> c.add("co_visit", "co_visit:y", np.array([1]), np.array([2.0]), 0.5)
    >>> c.add("trending", "trending", np.array([2, 0]), np.array([4.0, 2.0]))
    >>> [(r.item_id, r.score, r.reason) for r in blend_parts(c, BlendConfig(k=2), ["a", "b", "c"], (), {})]
    [('b', 1.0, 'co_visit:y'), ('a', 0.716667, 'co_visit:x')]
    """
    weights = config.weights
    kind_w = [weights.get(kind, 0.0) for kind in cands.kind_names]
    if min(kind_w, default=0.0) <= 0:  # leave out the kinds without weight
        cands = cands.only([kind for kind, w in zip(cands.kind_names, kind_w) if w > 0])
        kind_w = [weights[kind] for kind in cands.kind_names]
    if not len(cands):
        return []
    nk = len(kind_w)
    part_kind = cands.kinds
    items = np.concatenate(cands.numbers)
    n_entries = len(items)
    if scratch is None:
        scratch = Scratch(len(ids), nk)
    scratch.ensure(len(ids), nk, n_entries)
    width = scratch.size
    entry_part = scratch.arange[: len(part_kind)].repeat(cands.sizes)
    vals = np.concatenate(cands.scores)
    vals *= np.array(cands.factors)[entry_part]
    flat = items + (np.array(part_kind) * width)[entry_part] if nk > 1 else items
    # sums per (kind, item) in the scratch accumulator; the distinct items are those
    # whose entry wins a scatter of the entry numbers
    acc = scratch.acc
    np.add.at(acc, flat, vals)
    slot = scratch.slot
    entry_no = scratch.arange[:n_entries]
    slot[items] = entry_no
    uniq = items[slot[items] == entry_no]
    per_kind = acc.reshape(scratch.rows, width)[:nk].take(uniq, axis=1)  # (take: C order, fast to reduce)
    acc[flat] = 0.0
    for k, best in enumerate(_max(per_kind, axis=1).tolist()):
        kind_w[k] /= best or 1.0
    kw = np.array(kind_w)
    total = kw @ per_kind
    # the best 2k that are not excluded (most lists are settled within them), and any
    # items tied with the last of them; ties are then ordered by id
    m = 2 * config.k
    n = len(total)
    block = min(n, 4 * m)
    if block < n:
        top = total.argpartition(n - block)[n - block:]
        top = top[total[top].argsort()[::-1]]
    else:
        top = total.argsort()[::-1]
    ranked: list[tuple[int, str, float, int]] = []  # (place in uniq, id, score, number)
    while True:
        last = None
        for pos, number, score in zip(top.tolist(), uniq[top].tolist(), total[top].tolist()):
            if len(ranked) >= m and score != last:
                break
            if exclude and ids[number] in exclude:
                continue
            ranked.append((pos, ids[number], score, number))
            last = score
        else:
            if block < n:  # ran out (or ties ran on): look at everything
                block = n
                top = total.argsort()[::-1]
                ranked.clear()
                continue
        break
    if len({r[2] for r in ranked}) < len(ranked):  # ties: by id
        ranked.sort(key=lambda r: (-r[2], r[1]))
        del ranked[m:]
    # at most max_category_share of the list from one category
    k = config.k
    cap = max(1, math.ceil(k * config.max_category_share))
    per_cat: dict[str, int] = {}
    full: set[str] = set()  # the categories at the cap
    chosen: list[tuple[int, str, float, int]] = []
    held: list[tuple[int, str, float, int]] = []
    if callable(category_of):
        cats, no_cats = category_of, None
    else:
        cats, no_cats = category_of.get, ()
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
    # Not enough variety to honour the cap: fill up with the best held-back items.
    chosen.extend(held[: k - len(chosen)])
    if not chosen:
        return []
    # Reasons, for the chosen items only: their best kind, then that kind's best part,
    # the first on ties. The best part of every (kind, item) comes from one maximum over
    # the entries' scores as int64 (the same order for floats >= 0) whose lowest bits are
    # replaced by the part (reversed, so that the first part wins a tie).
    reasons = cands.reasons
    if nk == 1:
        best_kind = [0] * len(chosen)
    else:  # the first kind on ties
        best_kind = (per_kind.take([r[0] for r in chosen], axis=1) * kw[:, None]).argmax(axis=0).tolist()
    n_parts = len(part_kind)
    if n_parts == 1:
        why = [reasons[0]] * len(chosen)
    else:
        bits = max(1, (n_parts - 1).bit_length())
        low = (1 << bits) - 1
        encoded = (vals.view(np.int64) & ~low) | (low - entry_part)
        best = scratch.best
        np.maximum.at(best, flat, encoded)
        places = [b * width + r[3] for b, r in zip(best_kind, chosen)]
        why = [reasons[low - (e & low)] for e in best[places].tolist()]
        best[flat] = 0
    # scores to 6 decimals (round(x * 1e6) / 1e6: round(x, 6) without its slow path)
    return [_new_rec(Rec, (r[1], round(r[2] * 1e6) / 1e6, why[c])) for c, r in enumerate(chosen)]
