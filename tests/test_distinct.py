"""The run summary's count of distinct users: a compact set of 64-bit hashes."""

from __future__ import annotations

import random

from pulse.state.distinct import DistinctHashes


def test_distinct_hashes_count_each_hash_once_as_the_table_grows():
    rnd = random.Random(7)
    hashes = [rnd.getrandbits(64) - (1 << 63) for _ in range(50_000)]
    d = DistinctHashes(capacity=16)
    for start in range(0, len(hashes), 997):  # in batches, as store flushes add them
        d.add_all(hashes[start:start + 997] + hashes[: start // 2 : 50])
    assert len(d) == len(set(hashes))
    assert all(h in d for h in hashes[::101])
    assert 2 * len(d) <= len(d.table)  # at most half full


def test_a_hash_of_zero_is_counted_like_any_other():
    d = DistinctHashes()
    d.add_all([0, 0, 5])
    assert len(d) == 2 and 0 in d and 5 in d and 7 not in d


def test_the_union_of_two_sets_counts_shared_hashes_once():
    a, b = DistinctHashes(), DistinctHashes()
    a.add_all(range(0, 3_000))
    b.add_all(range(2_000, 5_000))
    assert len(a.union(b)) == 5_000 and len(a) == 3_000 and len(b) == 3_000
