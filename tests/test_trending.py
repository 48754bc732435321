"""Trending (state/trending.py): the exact top and the cached head rank by decayed
count, ties by key, whatever order the keys were first counted in."""

from __future__ import annotations

import random

import pytest

from pulse.state.trending import Trending


def reference_top(t: Trending, now: int, n: int, exclude=()) -> list[str]:
    ranked = sorted((k for k, v in t.counts.items() if v > 0 and k not in exclude), key=lambda k: (-t.counts[k], k))
    return ranked[:n]


def test_keys_tied_at_the_cut_of_the_top_rank_by_key_not_by_arrival():
    t = Trending(half_life_s=60)
    for key in ["z", "m", "a", "b"]:
        t.learn_one(key, 1.0, 0)
    t.learn_one("b", 1.0, 0)
    assert [k for k, _ in t.top(0, 2)] == ["b", "a"]
    assert [k for k, _ in t.top(0, 2, exclude={"a"})] == ["b", "m"]


@pytest.mark.parametrize("seed", range(40))
def test_the_top_is_the_plain_ranking_by_count_then_key(seed):
    rng = random.Random(seed)
    t = Trending(half_life_s=rng.choice([60, float("inf")]))
    keys = [f"k{i:03d}" for i in range(rng.randrange(1, 80))]
    rng.shuffle(keys)
    for _ in range(rng.randrange(1, 400)):
        # whole weights at one event time: many equal counts
        t.learn_one(rng.choice(keys), rng.choice([1.0, 2.0]), rng.choice([0, 0, 1_000]))
    n = rng.randrange(0, 30)
    exclude = set(rng.sample(keys, rng.randrange(0, min(5, len(keys)))))
    assert [k for k, _ in t.top(2_000, n, exclude)] == reference_top(t, 2_000, n, exclude)
