"""The compiled blend (operators/recommend.py) against a plain-Python statement of the
contract: Σ weight(kind) · (kind's score / kind's best score), exclusions, ties by id,
at most a share of the list per category, and each item's reason = the part that gave
most to its best kind."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from pulse.operators.recommend import BlendConfig, Candidates, ListPool, Scratch, blend_parts

WEIGHTS = {"co_visit": 1.0, "category": 0.35, "segment": 0.2, "trending": 0.1}


def reference(parts, config, ids, exclude, category_of):
    """parts: (kind, reason, {number: score × factor}) in part order."""
    per_kind: dict[str, dict[int, float]] = {}
    for kind, _, scores in parts:
        acc = per_kind.setdefault(kind, {})
        for j, s in scores.items():
            acc[j] = acc.get(j, 0.0) + s
    kinds = [k for k in dict.fromkeys(kind for kind, _, _ in parts) if config.weights.get(k, 0.0) > 0]
    scale = {k: config.weights[k] / (max(per_kind[k].values(), default=0.0) or 1.0) for k in kinds}
    total = {}
    for k in kinds:
        for j, s in per_kind[k].items():
            total[j] = total.get(j, 0.0) + scale[k] * s
    ranked = sorted((j for j in total if ids[j] not in exclude), key=lambda j: (-total[j], ids[j]))
    cap = max(1, math.ceil(config.k * config.max_category_share))
    chosen, held, count = [], [], {}
    for j in ranked:
        cats = category_of.get(ids[j], ())
        if any(count.get(c, 0) >= cap for c in cats):
            held.append(j)
            continue
        for c in cats:
            count[c] = count.get(c, 0) + 1
        chosen.append(j)
        if len(chosen) == config.k:
            break
    chosen += held[: config.k - len(chosen)]
    return [ids[j] for j in chosen], total


def random_case(rng: random.Random, n_items: int):
    ids = [f"i{rng.randrange(10**6):06d}" for _ in range(n_items)]
    ids = list(dict.fromkeys(ids))
    n_items = len(ids)
    pool = ListPool(items=4, capacity=8)  # small, so that it grows and compacts
    cands = Candidates(pool)
    parts = []
    for seed in rng.sample(range(n_items), rng.randrange(0, 6)):
        js = np.array(rng.sample(range(n_items), rng.randrange(0, min(12, n_items))), dtype=np.int64)
        sc = np.array([rng.choice([0.5, 1.0, rng.random()]) for _ in js])
        pool.put(seed, js, sc)
        f = rng.choice([1.0, 0.9, 0.81])
        cands.add_seed(seed, f"co_visit:{ids[seed]}", f)
        parts.append(("co_visit", f"co_visit:{ids[seed]}", {j: s * f for j, s in zip(js.tolist(), sc.tolist())}))
    for kind, reason in [("trending", "trending"), ("category", "category:a"), ("category", "category:b"), ("segment", "segment")]:
        if rng.random() < 0.8:
            js = np.array(rng.sample(range(n_items), rng.randrange(1, min(15, n_items))), dtype=np.int64)
            sc = np.array([rng.choice([1.0, 2.0, rng.random() * 3]) for _ in js])
            f = rng.choice([1.0, 0.4])
            cands.add(kind, reason, js, sc, f)
            parts.append((kind, reason, {j: s * f for j, s in zip(js.tolist(), sc.tolist())}))
    exclude = set(rng.sample(ids, rng.randrange(0, n_items // 2)))
    category_of = {i: tuple(rng.sample("xyz", rng.randrange(0, 3))) for i in ids}
    return ids, cands, parts, exclude, category_of


@pytest.mark.parametrize("seed", range(300))
def test_the_compiled_blend_matches_the_plain_statement_of_the_contract(seed):
    rng = random.Random(seed)
    ids, cands, parts, exclude, category_of = random_case(rng, rng.choice([5, 30, 200]))
    config = BlendConfig(k=rng.choice([3, 10]), weights=WEIGHTS, max_category_share=rng.choice([0.3, 0.5, 1.0]))
    numbers = np.array([j for j, i in enumerate(ids) if i in exclude], dtype=np.int64)
    by_number = blend_parts(cands, config, ids, (), category_of, Scratch(8), numbers)
    by_id = blend_parts(cands, config, ids, exclude, category_of)
    numbered = {c: n for n, c in enumerate("xyz")}
    cats = np.full((len(ids) - rng.randrange(2), 3), -1, dtype=np.int64)  # (rows past the end: none)
    for j, i in enumerate(ids[: len(cats)]):
        cats[j, : len(category_of[i])] = [numbered[c] for c in category_of[i]]
    short = {i: (category_of[i] if j < len(cats) else ()) for j, i in enumerate(ids)}
    compiled_cap = blend_parts(cands, config, ids, (), short, Scratch(8), numbers, (cats, 3))
    want, total = reference(parts, config, ids, exclude, category_of)
    assert [r.item_id for r in by_number] == want
    assert [r.item_id for r in by_id] == want
    assert [r.item_id for r in compiled_cap] == reference(parts, config, ids, exclude, short)[0]
    assert [r.reason for r in compiled_cap] == [r.reason for r in blend_parts(cands, config, ids, exclude, short)]
    number_of = {i: j for j, i in enumerate(ids)}
    for r in by_number:
        assert r.score == pytest.approx(total[number_of[r.item_id]], abs=1e-6)


def test_each_item_names_the_part_that_gave_most_to_its_best_kind():
    ids = ["a", "b", "c"]
    pool = ListPool()
    pool.put(0, np.array([1, 2], dtype=np.int64), np.array([1.0, 0.2]))
    pool.put(2, np.array([1], dtype=np.int64), np.array([3.0]))
    c = Candidates(pool)
    c.add_seed(0, "co_visit:a", 1.0)
    c.add_seed(2, "co_visit:c", 0.5)  # gives b 1.5 > 1.0
    c.add("trending", "trending", np.array([2, 1], dtype=np.int64), np.array([5.0, 1.0]))
    recs = blend_parts(c, BlendConfig(k=2, weights=WEIGHTS), ids, (), {})
    assert [(r.item_id, r.reason) for r in recs] == [("b", "co_visit:c"), ("c", "trending")]


def test_a_kind_without_weight_offers_nothing():
    c = Candidates()
    c.add("segment", "segment", np.array([0], dtype=np.int64), np.array([9.0]))
    c.add("trending", "trending", np.array([1], dtype=np.int64), np.array([1.0]))
    recs = blend_parts(c, BlendConfig(k=5, weights={"trending": 1.0, "segment": 0.0}), ["s", "t"], (), {})
    assert [r.item_id for r in recs] == ["t"]


def test_ties_beyond_the_first_few_are_ordered_by_id():
    ids = [f"item{n:03d}" for n in range(60)][::-1]  # numbers and ids in opposite orders
    c = Candidates()
    c.add("trending", "trending", np.arange(60, dtype=np.int64), np.ones(60))
    recs = blend_parts(c, BlendConfig(k=10, weights=WEIGHTS), ids, (), {})
    assert [r.item_id for r in recs] == sorted(ids)[:10]


def test_the_compiled_category_cap_looks_past_the_first_few_when_one_category_leads():
    # the 40 best items are all of category 0, so half the list comes from far down
    ids = [f"i{n:02d}" for n in range(60)]
    c = Candidates()
    c.add("trending", "trending", np.arange(60, dtype=np.int64), np.linspace(60.0, 1.0, 60))
    cats = np.array([[0] if n < 40 else [1] for n in range(60)], dtype=np.int64)
    recs = blend_parts(c, BlendConfig(k=10, weights=WEIGHTS), ids, (), {}, Scratch(8), None, (cats, 2))
    assert [r.item_id for r in recs] == ids[:5] + ids[40:45]


def test_a_list_pool_keeps_lists_through_compaction():
    pool = ListPool(items=2, capacity=4)
    rng = random.Random(1)
    expected = {}
    for _ in range(200):
        i = rng.randrange(20)
        js = np.array(rng.sample(range(100), rng.randrange(0, 7)), dtype=np.int64)
        pool.put(i, js, js * 0.5)
        expected[i] = js.tolist()
    for i, js in expected.items():
        got_js, got_sc = pool.get(i)
        assert got_js.tolist() == js and got_sc.tolist() == [j * 0.5 for j in js]
    assert len(pool.numbers) <= 4 * sum(len(js) for js in expected.values()) + 8


def test_the_neighbour_table_counts_like_a_dict_of_dicts_until_it_prunes():
    from pulse.state.covisit import NeighbourTable

    rng = random.Random(7)
    table = NeighbourTable(max_neighbours=6, items=2)  # small: regions grow, move, compact
    ref: dict[int, dict[int, float]] = {}
    for _ in range(3000):
        i = rng.randrange(40)
        others = [j for j in rng.sample(range(40), rng.randrange(0, 5)) if j != i]
        incs = [rng.choice([0.5, 1.0, 1.5]) for _ in others]
        table.pair(i, others, incs)
        for j, inc in zip(others, incs):
            for a, b in ((j, i), (i, j)):
                nb = ref.setdefault(a, {})
                if b not in nb and len(nb) == 12:  # full (2 × max_neighbours): the 6 strongest stay
                    ref[a] = nb = dict(sorted(nb.items(), key=lambda kv: -kv[1])[:6])
                nb[b] = nb.get(b, 0.0) + inc
    for a, nb in ref.items():
        assert table.neighbours(a) == pytest.approx(nb)
        assert len(table.neighbours(a)) <= 12
