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

>>> recs = blend({"co_visit:a": [("b", 1.0)], "trending": [("c", 5.0), ("b", 1.0)]},
...              BlendConfig(k=2), exclude=set(), category_of={})
>>> [(r.item_id, r.reason) for r in recs]
[('b', 'co_visit:a'), ('c', 'trending')]
"""

from __future__ import annotations

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


def blend(
    sources: Mapping[str, Sequence[tuple[str, float]]],
    config: BlendConfig,
    exclude: Collection[str],
    category_of: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]],
) -> list[Rec]:
    """Blend candidate lists keyed by reason (``"co_visit:a"``, ``"trending"``, ...)."""
    weights = config.weights
    # Scores are normalised per kind of source (all co_visit:* lists together), so the
    # strength of each seed item or category survives the normalisation.
    tops: dict[str, float] = {}
    for reason, cands in sources.items():
        if cands:
            kind = reason.split(":", 1)[0]
            tops[kind] = max(tops.get(kind, 0.0), max(s for _, s in cands))
    total: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for reason, cands in sources.items():
        if not cands:
            continue
        kind = reason.split(":", 1)[0]
        w = weights.get(kind, 0.0)
        if w <= 0:
            continue
        top = tops[kind] or 1.0
        for item, s in cands:
            if item in exclude:
                continue
            contrib = w * s / top
            total[item] = total.get(item, 0.0) + contrib
            b = best.get(item)
            if b is None or contrib > b[0] or (contrib == b[0] and reason < b[1]):
                best[item] = (contrib, reason)
    ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
    cats = category_of if callable(category_of) else (lambda i, m=category_of: m.get(i, ()))
    cap = max(1, math.ceil(config.k * config.max_category_share))
    per_cat: dict[str, int] = {}
    out: list[Rec] = []
    held: list[tuple[str, float]] = []
    for item, score in ranked:
        item_cats = cats(item)
        if item_cats and any(per_cat.get(c, 0) >= cap for c in item_cats):
            held.append((item, score))
            continue
        for c in item_cats:
            per_cat[c] = per_cat.get(c, 0) + 1
        out.append(Rec(item, round(score, 6), best[item][1]))
        if len(out) >= config.k:
            return out
    # Not enough variety to honour the cap: fill up with the best held-back items.
    for item, score in held[: config.k - len(out)]:
        out.append(Rec(item, round(score, 6), best[item][1]))
    return out
