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

Example:

>>> recs = blend([source("co_visit", {"b": 1.0}), source("trending", {"c": 5.0, "b": 1.0})],
...              BlendConfig(k=2), exclude=set(), category_of={})
>>> [(r.item_id, r.reason) for r in recs]
[('b', 'co_visit'), ('c', 'trending')]
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, NamedTuple, Sequence


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
    weights = config.weights
    active = [(src, weights.get(src.kind, 0.0) / (max(src.scores.values()) or 1.0)) for src in sources
              if src.scores and weights.get(src.kind, 0.0) > 0]
    if not active:
        return []
    # A copy of the largest source becomes the running total; the others are added in
    # its units (one pass over the smaller sources only).
    base, base_w = max(active, key=lambda sw: len(sw[0].scores))
    total = dict(base.scores)
    for src, w in active:
        if src is base:
            continue
        f = w / base_w
        get = total.get
        for item, s in src.scores.items():
            total[item] = get(item, 0.0) + f * s
    factors = [(src, w) for src, w in active]
    k = config.k
    if exclude:
        if len(exclude) < len(total):
            pop = total.pop
            for item in exclude:
                pop(item, None)
        else:
            total = {i: s for i, s in total.items() if i not in exclude}
    # Most lists are settled within the best few times k; sort only those (ties by id).
    best = heapq.nlargest(2 * k, total, key=total.get)
    ranked = sorted(((i, total[i] * base_w) for i in best), key=lambda kv: (-kv[1], kv[0]))
    cats = category_of if callable(category_of) else (lambda i, m=category_of: m.get(i, ()))
    cap = max(1, math.ceil(k * config.max_category_share))
    per_cat: dict[str, int] = {}
    chosen: list[tuple[str, float]] = []
    held: list[tuple[str, float]] = []
    for item, score in ranked:
        item_cats = cats(item)
        if item_cats and any(per_cat.get(c, 0) >= cap for c in item_cats):
            held.append((item, score))
            continue
        for c in item_cats:
            per_cat[c] = per_cat.get(c, 0) + 1
        chosen.append((item, score))
        if len(chosen) >= k:
            break
    # Not enough variety to honour the cap: fill up with the best held-back items.
    chosen.extend(held[: k - len(chosen)])
    return [Rec(item, round(score, 6), _reason(item, factors)) for item, score in chosen]


def _reason(item: str, factors: Sequence[tuple[Source, float]]) -> str:
    """The part of the source that contributed most to ``item``."""
    best_src, best = None, -1.0
    for src, w in factors:
        s = src.scores.get(item)
        if s is not None and w * s > best:
            best_src, best = src, w * s
    if best_src is None:
        return "trending"
    reason, top = best_src.kind, -1.0
    for part_reason, scores, f in best_src.parts:
        s = scores.get(item)
        if s is not None and s * f > top:
            reason, top = part_reason, s * f
    return reason
