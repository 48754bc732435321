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

from typing import Any, Callable, Sequence

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
