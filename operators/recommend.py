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

The arithmetic is vectorised: :func:`blend_parts` takes every part as numpy arrays of item
numbers and scores (the engine's hot path); :func:`blend` takes :class:`Source` dicts and
numbers their items first.

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
    kinds, reasons, idx, scores, factors = [], [], [], [], []
    for src in sources:
        for reason, part, f in src.parts:
            if not part:
                continue
            nums = []
            for item in part:
                n = numbers.get(item)
                if n is None:
                    n = numbers[item] = len(ids)
                    ids.append(item)
                nums.append(n)
            kinds.append(src.kind)
            reasons.append(reason)
            idx.append(np.array(nums, dtype=np.intp))
            scores.append(np.fromiter(part.values(), dtype=np.float64, count=len(part)))
            factors.append(f)
    banned = np.fromiter((i in exclude for i in ids), dtype=bool, count=len(ids)) if exclude else None
    return blend_parts(kinds, reasons, idx, scores, factors, config, ids, banned, category_of)


class Scratch:
    """Work arrays of :func:`blend_parts` over item numbers, reused between calls (and
    left as found: zeros, and ``False`` in ``banned``, which callers may use to mark
    excluded items)."""

    __slots__ = ("size", "rows", "acc", "slot", "tag", "banned", "arange")

    def __init__(self, size: int = 1024, rows: int = 4) -> None:
        self.size = size
        self.rows = rows
        self.acc = np.zeros(rows * size)  # row-major (kind, item number) sums
        self.slot = np.zeros(size, dtype=np.intp)
        self.tag = np.full(size, -1, dtype=np.intp)
        self.banned = np.zeros(size, dtype=bool)
        self.arange = np.arange(size)

    def ensure(self, size: int, rows: int = 4) -> None:
        """Make room for item numbers below ``size`` and ``rows`` kinds."""
        if size > self.size or rows > self.rows:
            new = Scratch(max(size, 2 * self.size) if size > self.size else self.size, max(rows, self.rows))
            new.banned[: self.size] = self.banned
            for name in self.__slots__:
                setattr(self, name, getattr(new, name))


def blend_parts(
    kinds: Sequence[str],
    reasons: Sequence[str],
    idx: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    factors: Sequence[float],
    config: BlendConfig,
    ids: Sequence[str],
    banned: Optional[np.ndarray],
    category_of: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]],
    scratch: Optional[Scratch] = None,
) -> list[Rec]:
    """:func:`blend` over parts given as arrays: part ``p`` of kind ``kinds[p]`` offers the
    items numbered ``idx[p]`` (distinct within the part) with ``scores[p] · factors[p]``;
    ``ids`` maps item numbers to ids and ``banned`` (a bool array over item numbers, or
    None) marks the excluded ones. A kind's score of an item is the sum over its parts;
    the reason of a recommended item is the part that gave most to its best kind (the
    first such part on ties). ``scratch`` saves allocating work arrays per call.

    >>> import numpy as np
    >>> recs = blend_parts(["co_visit", "co_visit", "trending"], ["co_visit:x", "co_visit:y", "trending"],
    ...                    [np.array([0, 1]), np.array([1]), np.array([2, 0])],
    ...                    [np.array([1.0, 0.5]), np.array([2.0]), np.array([4.0, 2.0])], [1.0, 0.5, 1.0],
    ...                    BlendConfig(k=2), ["a", "b", "c"], np.array([False, False, False]), {})
    >>> [(r.item_id, r.score, r.reason) for r in recs]
    [('b', 1.0, 'co_visit:y'), ('a', 0.716667, 'co_visit:x')]
    """
    weights = config.weights
    kind_no: dict[str, int] = {}
    use: list[int] = []
    lens: list[int] = []
    part_kind: list[int] = []
    for p, kind in enumerate(kinds):
        size = len(idx[p])
        if size and weights.get(kind, 0.0) > 0:
            use.append(p)
            lens.append(size)
            no = kind_no.get(kind)
            if no is None:
                no = kind_no[kind] = len(kind_no)
            part_kind.append(no)
    if not use:
        return []
    nk = len(kind_no)
    if scratch is None:
        scratch = Scratch(len(ids), nk)
    else:
        scratch.ensure(len(ids), nk)
    width = scratch.size
    # every (part, item) entry, then sums per (kind, item) in the scratch accumulator
    items = np.concatenate([idx[p] for p in use])
    n_entries = len(items)
    if n_entries > len(scratch.arange):
        scratch.arange = np.arange(2 * n_entries)
    entry_part = np.repeat(scratch.arange[: len(use)], lens)
    vals = np.concatenate([scores[p] for p in use]) * np.array([factors[p] for p in use])[entry_part]
    entry_kind = np.array(part_kind)[entry_part]
    flat = entry_kind * width + items
    acc = scratch.acc
    np.add.at(acc, flat, vals)
    # the distinct items: one representative entry each
    slot = scratch.slot
    entry_no = scratch.arange[:n_entries]
    slot[items] = entry_no
    uniq = items[slot[items] == entry_no]
    per_kind = acc.reshape(scratch.rows, width)[:nk, uniq]
    acc[flat] = 0.0
    best = per_kind.max(axis=1)
    kind_w = np.array([weights[kind] for kind in kind_no]) / np.where(best == 0, 1.0, best)
    total = kind_w @ per_kind
    cand = scratch.arange[: len(uniq)] if banned is None else np.flatnonzero(~banned[uniq])
    k = config.k
    m = 2 * k  # most lists are settled within the best few times k: rank only those
    if len(cand) > m:
        cs = total[cand]
        cut = np.partition(cs, len(cs) - m)[len(cs) - m]
        cand = cand[cs >= cut]
    order = cand[np.argsort(-total[cand], kind="stable")]
    ranked_scores = total[order]
    ranked = list(zip(order.tolist(), uniq[order].tolist(), ranked_scores.tolist()))
    if len(ranked) > 1 and (ranked_scores[1:] == ranked_scores[:-1]).any():  # ties: by id
        ranked.sort(key=lambda r: (-r[2], ids[r[1]]))
    if callable(category_of):
        cats = category_of
    else:
        get = category_of.get
        cats = lambda item: get(item, ())  # noqa: E731
    cap = max(1, math.ceil(k * config.max_category_share))
    per_cat: dict[str, int] = {}
    chosen: list[tuple[int, int, float]] = []
    held: list[tuple[int, int, float]] = []
    for r in ranked[:m]:
        item_cats = cats(ids[r[1]])
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
    # Reasons, for the chosen items only: their best kind, then that kind's best part.
    positions = [r[0] for r in chosen]
    numbers = [r[1] for r in chosen]
    best_kind = (per_kind[:, positions] * kind_w[:, None]).argmax(axis=0).tolist()
    tag = scratch.tag
    tag[numbers] = scratch.arange[: len(numbers)]
    entry_tag = tag[items]
    tag[numbers] = -1
    entries = np.flatnonzero(entry_tag >= 0)
    top = [-1.0] * len(chosen)
    why = [""] * len(chosen)
    for c, p, s in zip(entry_tag[entries].tolist(), entry_part[entries].tolist(), vals[entries].tolist()):
        if part_kind[p] == best_kind[c] and s > top[c]:
            top[c] = s
            why[c] = reasons[use[p]]
    return [Rec(ids[r[1]], round(r[2], 6), why[c]) for c, r in enumerate(chosen)]
