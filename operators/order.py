"""A canonical order for the model step's input, whatever the batching, epochs or cluster shape.

Bytewax hands a keyed step its items grouped by key within each activation, and items
from several workers interleave as they arrive. The per-user state does not care (each
user's events keep their order), but the models do: co-visitation, trending and
River models depend on the order of updates. For replays, :class:`SequencedMerge` puts
the model step's input back into one canonical order:

* every record of a partition gets an index (``seq``) from the source, and the source
  ends each partition with a :class:`~pulse.operators.events.PartitionEnd`;
* every record reaches the model step exactly once: as an update, or as its dead letter;
* within a partition, items are released in ``seq`` order; across partitions, the item
  with the smallest (event time, partition order) goes first, once every partition that
  has not ended has its next item at hand.

Updates without an event (a user's last profile and windows at the end of the input) are
held until the end and released sorted by user. Dead letters only advance the sequence.

Example:

>>> from pulse.operators.events import DeadLetter, PartitionEnd
>>> m = SequencedMerge(["a"], ts_of=lambda x: x[1], key_of=lambda x: ("a", x[0]))
>>> m.push((1, 20)), m.push((0, 10))
([], [(0, 10), (1, 20)])
>>> m.push(PartitionEnd("a", 2))
[]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple, Sequence

from pulse.operators.events import DeadLetter, PartitionEnd


class SequencedMerge:
    """Releases items in canonical order (see the module docstring).

    :arg sources: the partitions, in their tie-breaking order.
    :arg ts_of: an item's event time.
    :arg key_of: an item's (source, seq), or None for an item held until the end.
    :arg held_order: the sort key of held items.
    """

    def __init__(self, sources: Sequence[str], ts_of: Callable[[Any], int], key_of: Callable[[Any], Any],
                 held_order: Callable[[Any], Any] = lambda x: 0, live: bool = False) -> None:
        self.order = {s: i for i, s in enumerate(sources)}
        self.next = {s: 0 for s in sources}
        self.ends: dict[str, int] = {}
        self.buffers: dict[str, dict[int, Any]] = {s: {} for s in sources}
        self.held: list[Any] = []
        self.ts_of = ts_of
        self.key_of = key_of
        self.held_order = held_order
        #: live runs: only restore each partition's own order (never wait for another
        #: partition, which may be idle), and release updates without an event at once
        self.live = live

    @property
    def waiting(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def push(self, item: Any) -> list[Any]:
        """Take one item; returns the items that are now ready, in order."""
        if type(item) is PartitionEnd:
            self.ends[item.source] = item.count
        elif type(item) is DeadLetter:
            if self.live and self.next[item.source] == item.seq and not self.buffers[item.source]:
                self.next[item.source] += 1  # in order (the usual case): nothing to hold
                return []
            self.buffers[item.source][item.seq] = None  # a placeholder: only advances
        else:
            key = self.key_of(item)
            if key is None:
                if self.live:
                    return [item]
                self.held.append(item)
                return []
            src, seq = key
            if self.live and self.next[src] == seq and not self.buffers[src]:
                self.next[src] = seq + 1
                return [item]
            self.buffers[src][seq] = item
        return self._release()

    def _release(self) -> list[Any]:
        out: list[Any] = []
        buffers, nxt, ends = self.buffers, self.next, self.ends
        if len(buffers) == 1 or self.live:  # each partition's items in seq order
            for src, buf in buffers.items():
                n = nxt[src]
                while n in buf:
                    item = buf.pop(n)
                    n += 1
                    if item is not None:
                        out.append(item)
                nxt[src] = n
            return out
        while True:
            best = None
            for src, buf in buffers.items():
                n = nxt[src]
                while n in buf and buf[n] is None:  # skip dead letters
                    del buf[n]
                    n += 1
                nxt[src] = n
                if n in buf:
                    cand = (self.ts_of(buf[n]), self.order[src], src)
                    if best is None or cand < best:
                        best = cand
                elif ends.get(src) != n:
                    return out  # this partition's next item is still to come
            if best is None:
                return out
            src = best[2]
            out.append(buffers[src].pop(nxt[src]))
            nxt[src] += 1

    def drain(self) -> list[Any]:
        """At the end of the input: whatever is left (nothing, when every partition
        delivered all its items), then the held items sorted by ``held_order``."""
        out = self._release()
        for src in self.order:
            buf = self.buffers[src]
            out.extend(buf[n] for n in sorted(buf) if buf[n] is not None)
            buf.clear()
        held, self.held = sorted(self.held, key=self.held_order), []
        return out + held


#: records per block of a partition (see :class:`BlockOrder`)
BLOCK = 1024


class Coverage(NamedTuple):
    """What a step that sees only some records (a model fed by closed windows) gets of
    one upstream batch: the ``items`` it needs, and which records the batch accounted
    for: in replays how many of each block of each partition, ``((source, block,
    count), ...)``; in live runs their positions, ``((source, seq), ...)``. They travel
    together, so no record counts before its item is in."""

    counts: tuple
    items: tuple = ()
    positions: tuple = ()


def coverage(positions: Iterable[tuple[str, int]], items: Sequence[Any] = (), live: bool = False) -> Coverage:
    """The :class:`Coverage` of records at ``positions`` (source, seq), with ``items``."""
    if live:
        return Coverage((), tuple(items), tuple(positions))
    counts: dict[tuple[str, int], int] = {}
    for src, seq in positions:
        key = (src, seq // BLOCK)
        counts[key] = counts.get(key, 0) + 1
    return Coverage(tuple((src, block, n) for (src, block), n in counts.items()), tuple(items))


class BlockOrder:
    """Releases positioned items in block order, from coverage alone.

    Unlike :class:`SequencedMerge`, which must see every record, this order needs only
    the items it releases plus :class:`Coverage` counts of all records (and each
    partition's :class:`~pulse.operators.events.PartitionEnd`). The canonical order is
    (block, partition order, seq), blocks being :data:`BLOCK` records of a partition:
    block ``b`` of every partition is released, sorted, once every partition has
    accounted for all its records of block ``b`` (or ended before it). The order is a
    function of the log alone, whatever the batching, the epochs or the cluster shape.

    :arg sources: the partitions, in their tie-breaking order.
    :arg live: live runs, where partitions never end and another partition may stay
        idle: release each partition's items in ``seq`` order as soon as every earlier
        record of it is accounted for (by position), never waiting for another one.

    Items without a position (``key_of`` gives None) are held until :meth:`drain` and
    released sorted by ``held_order``.

    Example:

    >>> order = BlockOrder(["a"], key_of=lambda x: ("a", x))
    >>> order.push(coverage([("a", 5), ("a", 6)], items=[5]))
    []
    >>> order.push(coverage(("a", n) for n in range(5)))   # the rest of the 7 records, no items
    []
    >>> order.push(PartitionEnd("a", 7))                 # ... and the partition has 7
    [5]
    """

    def __init__(self, sources: Sequence[str], key_of: Callable[[Any], Any], held_order: Callable[[Any], Any] = lambda x: 0,
                 live: bool = False) -> None:
        self.order = {s: i for i, s in enumerate(sources)}
        self.key_of = key_of
        self.held_order = held_order
        self.live = live
        self.block = 0  # the next block to release
        self.counts: dict[tuple[str, int], int] = {}
        self.ends: dict[str, int] = {}
        self.items: dict[int, list] = {}  # block -> [(partition order, seq, item)]
        self.held: list[Any] = []
        # live runs: per partition, the next seq, and the records accounted for after it
        self.next: dict[str, int] = {src: 0 for src in sources}
        self.covered: dict[str, dict[int, Any]] = {src: {} for src in sources}

    def push(self, item: Any) -> list[Any]:
        """Take a :class:`Coverage` (with its items) or a partition end; returns the
        items that are now ready, in order."""
        if type(item) is PartitionEnd:
            self.ends[item.source] = item.count
            return self._release()
        if self.live:
            return self._release_live(item)
        for x in item.items:
            key = self.key_of(x)
            if key is None:
                self.held.append(x)
            else:
                src, seq = key
                block = seq // BLOCK
                if block < self.block:
                    raise RuntimeError(f"record {seq} of partition {src!r} arrived after its block was released")
                self.items.setdefault(block, []).append((self.order[src], seq, x))
        counts = self.counts
        for src, block, n in item.counts:
            counts[(src, block)] = counts.get((src, block), 0) + n
        return self._release()

    def _release_live(self, item: Coverage) -> list[Any]:
        out: list[Any] = []
        covered = self.covered
        for src, seq in item.positions:
            covered[src].setdefault(seq, None)
        for x in item.items:
            key = self.key_of(x)
            if key is None:
                out.append(x)  # (a user's last windows: no position, nothing to wait for)
            else:
                covered[key[0]][key[1]] = x
        for src, waiting in covered.items():
            n = self.next[src]
            while n in waiting:
                x = waiting.pop(n)
                if x is not None:
                    out.append(x)
                n += 1
            self.next[src] = n
        return out

    def _complete(self, block: int) -> bool:
        for src in self.order:
            end = self.ends.get(src)
            want = BLOCK if end is None else min(BLOCK, end - block * BLOCK)
            if want > 0 and self.counts.get((src, block), 0) < want:
                return False
        return True

    def _exhausted(self, block: int) -> bool:
        return all(self.ends.get(src, (block + 1) * BLOCK) <= block * BLOCK for src in self.order)

    def _release(self) -> list[Any]:
        out: list[Any] = []
        while not self._exhausted(self.block) and self._complete(self.block):
            ready = self.items.pop(self.block, [])
            ready.sort(key=lambda x: (x[0], x[1]))
            out.extend(x[2] for x in ready)
            for src in self.order:
                self.counts.pop((src, self.block), None)
            self.block += 1
        return out

    def drain(self) -> list[Any]:
        """At the end of the input: what is left (nothing, when every partition was
        accounted for), in order, then the held items sorted by ``held_order``."""
        out = self._release()
        for block in sorted(self.items):
            out.extend(x[2] for x in sorted(self.items[block], key=lambda x: (x[0], x[1])))
        self.items.clear()
        held, self.held = sorted(self.held, key=self.held_order), []
        return out + held
