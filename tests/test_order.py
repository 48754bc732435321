"""The block order: a canonical order from coverage counts, whatever the batching."""

import random

import pytest

from pulse.operators.events import PartitionEnd
from pulse.operators.order import BLOCK, BlockOrder, coverage


def _key(x):
    return (x[0], x[1]) if x[1] >= 0 else None


def _feed(order, batches):
    out = []
    for positions, items in batches:
        out.extend(order.push(coverage(positions, items)))
    return out


def _log(partitions: dict[str, int], every: int = 3):
    """Every ``every``-th record of each partition is an item the step needs."""
    return [(src, seq) for src, n in partitions.items() for seq in range(n)], every


def _random_batches(records, every, rng):
    """The records in a random interleaving, cut into random batches; each batch's
    coverage carries its own items."""
    shuffled = records[:]
    rng.shuffle(shuffled)
    batches, i = [], 0
    while i < len(shuffled):
        n = rng.randint(1, 700)
        chunk = shuffled[i : i + n]
        batches.append((chunk, [r for r in chunk if r[1] % every == 0]))
        i += n
    return batches


def test_released_order_is_the_same_whatever_the_batching():
    parts = {"a": 3 * BLOCK + 17, "b": BLOCK - 5, "c": 2 * BLOCK}
    records, every = _log(parts)
    outs = []
    for seed in range(4):
        order = BlockOrder(list(parts), _key)
        out = _feed(order, _random_batches(records, every, random.Random(seed)))
        for src, n in parts.items():
            out.extend(order.push(PartitionEnd(src, n)))
        out.extend(order.drain())
        outs.append(out)
    assert all(o == outs[0] for o in outs)
    assert len(outs[0]) == sum(1 for r in records if r[1] % every == 0)


def test_block_order_is_block_then_partition_then_seq():
    order = BlockOrder(["a", "b"], _key)
    batches = [([("b", 0), ("b", BLOCK)], [("b", 0), ("b", BLOCK)]), ([("a", 1), ("a", BLOCK + 1)], [("a", 1), ("a", BLOCK + 1)])]
    _feed(order, batches)
    out = order.push(PartitionEnd("a", BLOCK + 2)) + order.push(PartitionEnd("b", BLOCK + 1))
    out += order.push(coverage([("a", s) for s in range(BLOCK + 2) if s not in (1, BLOCK + 1)] +
                               [("b", s) for s in range(1, BLOCK)]))
    assert out == [("a", 1), ("b", 0), ("a", BLOCK + 1), ("b", BLOCK)]


def test_a_block_waits_for_every_partition():
    order = BlockOrder(["a", "b"], _key)
    assert order.push(coverage([("a", s) for s in range(BLOCK)], [("a", 0)])) == []
    assert order.push(coverage([("b", s) for s in range(BLOCK - 1)])) == []
    assert order.push(coverage([("b", BLOCK - 1)])) == [("a", 0)]


def test_an_ended_partition_does_not_hold_later_blocks():
    order = BlockOrder(["a", "b"], _key)
    order.push(PartitionEnd("b", 2))
    order.push(coverage([("b", 0), ("b", 1)]))
    out = order.push(coverage([("a", s) for s in range(2 * BLOCK)], [("a", 5), ("a", BLOCK + 5)]))
    assert out == [("a", 5), ("a", BLOCK + 5)]


def test_items_without_a_position_wait_for_the_end_sorted():
    order = BlockOrder(["a"], _key, held_order=lambda x: x[0])
    assert order.push(coverage([], [("u2", -1), ("u1", -1)])) == []
    assert order.drain() == [("u1", -1), ("u2", -1)]


def test_a_record_after_its_block_was_released_is_refused():
    order = BlockOrder(["a"], _key)
    order.push(PartitionEnd("a", 2 * BLOCK))
    order.push(coverage([("a", s) for s in range(BLOCK)]))
    with pytest.raises(RuntimeError, match="arrived after its block was released"):
        order.push(coverage([], [("a", 3)]))


def test_live_releases_each_partition_in_seq_order_without_waiting_for_others():
    order = BlockOrder(["a", "b"], _key, live=True)
    assert order.push(coverage([("a", 1)], [("a", 1)], live=True)) == []
    assert order.push(coverage([("a", 0)], [], live=True)) == [("a", 1)]
    assert order.push(coverage([("a", 2)], [("a", 2)], live=True)) == [("a", 2)]
