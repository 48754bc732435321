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

The arithmetic is vectorised: :func:`blend_parts` takes every part as item numbers and
scores (numpy arrays or lists; the engine's hot path) and sums them per kind with a few
numpy calls whatever the number of parts; :func:`blend` takes :class:`Source` dicts and
numbers their items first. Reasons are worked out for the recommended items only.

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


class Part(NamedTuple):
    """One part of a source in item numbers (see :func:`blend_parts`): ``numbers`` (a
    numpy array or a list; distinct) offered with ``scores × factor``; ``lookup`` may
    give the same as a dict (number -> score) to spare building one for reasons."""

    kind: str
    reason: str
    numbers: Sequence[int]
    scores: Sequence[float]
    factor: float = 1.0
    lookup: Optional[Mapping[int, float]] = None


class Source(NamedTuple):
    """One kind of candidates: ``scores`` summed over its parts, and the parts themselves
    (``reason``, part scores, factor) so that each recommended item can name the part
    that gave it the most."""

    kind: str
    scores: dict[str, float]
    parts: list[tuple[str, Mapping[str, float], float]]


def source(kind: str, scores: Mapping[str, float]) -> Source:
    """A source with a single part whose reason is its kind (``trending``)."""
    return Source(kind, dict(scores), [(kind, scores, 1.0)])


def blend(
    sources: Sequence[Source],
    config: BlendConfig,
    exclude: Collection[str],
    category_of: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]],
) -> list[Rec]:
    """Blend the sources: ``Σ weight(kind) · score / best score of the kind``."""
    numbers: dict[str, int] = {}
    ids: list[str] = []
    parts = []
    for src in sources:
        for reason, part, f in src.parts:
            if not part:
                continue
            part_nums = []
            for item in part:
                n = numbers.get(item)
                if n is None:
                    n = numbers[item] = len(ids)
                    ids.append(item)
                part_nums.append(n)
            parts.append(Part(src.kind, reason, part_nums, [float(v) for v in part.values()], f))
    return blend_parts(parts, config, ids, exclude, category_of)


class Scratch:
    """Work arrays of :func:`blend_parts`, reused between calls and left all zeros."""

    __slots__ = ("size", "rows", "acc", "slot", "arange")

    def __init__(self, size: int = 1024, rows: int = 4) -> None:
        self.size = size  # item numbers below this fit
        self.rows = rows  # kinds that fit
        self.acc = np.zeros(rows * size)  # sums per (kind, item number), row-major
        self.slot = np.zeros(size, dtype=np.intp)
        self.arange = np.arange(4 * size)

    def ensure(self, size: int, rows: int, entries: int) -> None:
        """Make room for item numbers below ``size``, ``rows`` kinds and ``entries``."""
        if size > self.size or rows > self.rows:
            self.__init__(max(size, 2 * self.size), max(rows, self.rows))  # type: ignore[misc]
        if entries > len(self.arange):
            self.arange = np.arange(2 * entries)


_new_rec = tuple.__new__


def blend_parts(
    parts: Sequence[Part],
    config: BlendConfig,
    ids: Sequence[str],
    exclude: Collection[str],
    category_of: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]],
    scratch: Optional[Scratch] = None,
) -> list[Rec]:
    """:func:`blend` over :class:`Part` s in item numbers (``ids`` maps numbers to item
    ids): a kind's score of an item is the sum of ``score × factor`` over the kind's
    parts. The reason of a recommended item is the part that gave most to its best kind
    (the first such part on ties). ``scratch`` saves allocating work arrays per call.

    >>> import numpy as np
    >>> recs = blend_parts([Part("co_visit", "co_visit:x", np.array([0, 1]), np.array([1.0, 0.5])),
    ...                     Part("co_visit", "co_visit:y", np.array([1]), np.array([2.0]), 0.5),
    ...                     Part("trending", "trending", [2, 0], [4.0, 2.0])],
    ...                    BlendConfig(k=2), ["a", "b", "c"], (), {})
    >>> [(r.item_id, r.score, r.reason) for r in recs]
    [('b', 1.0, 'co_visit:y'), ('a', 0.716667, 'co_visit:x')]
    """
    weights = config.weights
    kind_no: dict[str, int] = {}
    kind_w: list[float] = []
    # entries: the array parts first, then the list parts (joined into one list)
    arrays: list[Part] = []
    lists: list[Part] = []
    for part in parts:
        kind = part.kind
        if kind not in kind_no:
            w = weights.get(kind, 0.0)
            if w <= 0:
                kind_no[kind] = -1
                continue
            kind_no[kind] = len(kind_w)
            kind_w.append(w)
        elif kind_no[kind] < 0:
            continue
        if len(part.numbers):
            (arrays if isinstance(part.numbers, np.ndarray) else lists).append(part)
    used = arrays + lists
    if not used:
        return []
    nk = len(kind_w)
    nums = [p.numbers for p in arrays]
    vals = [p.scores for p in arrays]
    if lists:
        joined_nums: list[int] = []
        joined_vals: list[float] = []
        for p in lists:
            joined_nums += p.numbers
            joined_vals += p.scores
        nums.append(np.array(joined_nums, dtype=np.intp))
        vals.append(np.array(joined_vals, dtype=np.float64))
    items = np.concatenate(nums) if len(nums) > 1 else nums[0]
    vals = np.concatenate(vals) if len(vals) > 1 else vals[0].copy()
    n_entries = len(items)
    if scratch is None:
        scratch = Scratch(len(ids), nk)
    scratch.ensure(len(ids), nk, n_entries)
    width = scratch.size
    lens = [len(p.numbers) for p in used]
    part_kind = [kind_no[p.kind] for p in used]
    vals *= np.repeat([p.factor for p in used], lens)
    flat = items + np.repeat([k * width for k in part_kind], lens) if nk > 1 else items
    # sums per (kind, item) in the scratch accumulator; the distinct items are those
    # whose entry wins a scatter of the entry numbers
    acc = scratch.acc
    np.add.at(acc, flat, vals)
    slot = scratch.slot
    entry_no = scratch.arange[:n_entries]
    slot[items] = entry_no
    uniq = items[slot[items] == entry_no]
    per_kind = acc.reshape(scratch.rows, width)[:nk, uniq]
    acc[flat] = 0.0
    for k, best in enumerate(per_kind.max(axis=1).tolist()):
        kind_w[k] /= best or 1.0
    total = np.dot(kind_w, per_kind)
    # the best 2k that are not excluded (most lists are settled within them), and any
    # items tied with the last of them; ties are then ordered by id
    m = 2 * config.k
    n = len(total)
    block = min(n, 3 * m)
    ranked: list[tuple[int, int, float]] = []
    while True:
        if block < n:
            top = np.argpartition(total, n - block)[n - block:]
            top = top[np.argsort(total[top])[::-1]]
        else:
            top = np.argsort(total)[::-1]
        last = None
        ranked.clear()
        for pos, number, score in zip(top.tolist(), uniq[top].tolist(), total[top].tolist()):
            if len(ranked) >= m and score != last:
                break
            if exclude and ids[number] in exclude:
                continue
            ranked.append((pos, number, score))
            last = score
        else:
            if block < n:  # ran out (or ties ran on): look further
                block = n
                continue
        break
    if len({r[2] for r in ranked}) < len(ranked):
        ranked.sort(key=lambda r: (-r[2], ids[r[1]]))
        del ranked[m:]
    if callable(category_of):
        cats = category_of
    else:
        get = category_of.get
        cats = lambda item: get(item, ())  # noqa: E731
    k = config.k
    cap = max(1, math.ceil(k * config.max_category_share))
    per_cat: dict[str, int] = {}
    chosen: list[tuple[int, int, float]] = []
    held: list[tuple[int, int, float]] = []
    for r in ranked:
        item_cats = cats(ids[r[1]])
        if item_cats:
            full = False
            for c in item_cats:
                if per_cat.get(c, 0) >= cap:
                    full = True
                    break
            if full:
                held.append(r)
                continue
            for c in item_cats:
                per_cat[c] = per_cat.get(c, 0) + 1
        chosen.append(r)
        if len(chosen) >= k:
            break
    # Not enough variety to honour the cap: fill up with the best held-back items.
    chosen.extend(held[: k - len(chosen)])
    if not chosen:
        return []
    # Reasons, for the chosen items only: their best kind, then that kind's best part
    # (the first in the order given on ties).
    contrib = per_kind[:, [r[0] for r in chosen]].tolist()
    why: list[str] = []
    need: dict[int, dict[int, int]] = {}  # kind -> {item number: place in chosen}
    for c, (_, number, _) in enumerate(chosen):
        best_kind, best = 0, -1.0
        for k_no in range(nk):
            v = contrib[k_no][c] * kind_w[k_no]
            if v > best:
                best_kind, best = k_no, v
        why.append(best_kind)  # type: ignore[arg-type]
        need.setdefault(best_kind, {})[number] = c
    top_v = [-1.0] * len(chosen)
    for k_no, want in need.items():
        first = True
        for p in parts:
            if kind_no[p.kind] != k_no or not len(p.numbers):
                continue
            if first:  # the first part is the reason unless a later one gives more
                for c in want.values():
                    why[c] = p.reason
                first = False
            table = _lookup(p)
            f = p.factor
            for number in table.keys() & want.keys():
                v = table[number] * f
                c = want[number]
                if v > top_v[c]:
                    top_v[c] = v
                    why[c] = p.reason
    return [_new_rec(Rec, (ids[number], round(score, 6), why[c])) for c, (_, number, score) in enumerate(chosen)]


def _lookup(part: Part) -> Mapping[int, float]:
    if part.lookup is not None:
        return part.lookup
    nums, scores = part.numbers, part.scores
    return dict(zip(nums.tolist() if isinstance(nums, np.ndarray) else nums,
                    scores.tolist() if isinstance(scores, np.ndarray) else scores))
