"""Rounds of global writes: when the model step writes the keys every user shares.

Trending, the per-category and per-segment trending sets, every item's similar and
neighbour lists and ``pulse:meta`` change with every event; written per event they
would cost more than learning them. So :class:`GlobalRounds` writes them in rounds, as
of event time: a round starts once ``global_interval_s`` of event time and
``global_min_events`` events have passed since the last one (and at the first
event). A round writes trending and ``pulse:meta`` at once; the category and segment
trending and the lists of every item that changed since the last round (with what the
last round had not got to) are queued and written a share per event over the next
``GLOBAL_SPREAD`` × (the last round's events) events, so no single event pays for them
all (with 2,000 changed items that took 100–300 ms at once). The spreading counts
events, never the wall clock, so a replay writes the same values every time.

Example:

>>> from pulse.operators.messages import ItemUpdate
>>> from pulse.state.items import ItemModels
>>> models, rounds = ItemModels(), GlobalRounds(EngineConfig())
>>> models.learn_one(ItemUpdate("u1", True, "a", (), 1_000, 1.0, (), None, False))
>>> sorted(w.key for w in rounds.after_update(models))
['pulse:item:{a}:nbrs', 'pulse:item:{a}:similar', 'pulse:meta', 'pulse:trending']
>>> rounds.after_update(models)  # the next round is 5 s and 2,000 events away
[]
"""

from __future__ import annotations

from typing import Optional

from pulse.state.config import EngineConfig
from pulse.state.documents import item_list_writes, meta_write, trending_write
from pulse.state.items import ItemModels
from pulse.state.store import Write

_CATEGORY, _SEGMENT, _ITEM = 0, 1, 2


class GlobalRounds:
    """When the global keys are written, and their values; see the module docstring."""

    #: a round spreads its queued writes over this share of the events the previous
    #: round took
    GLOBAL_SPREAD = 0.5

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.keys = config.keys
        self.at: Optional[int] = None  # the event time of the last round
        self.events = 0  # the models' events at the last round
        # the round in progress: (kind, name) still to write from `pos` on, a share per
        # event over `span` events from `start`
        self.queue: list[tuple[int, str]] = []
        self.pos = 0
        self.start = 0
        self.span = 1

    def due(self, models: ItemModels) -> bool:
        """Whether events arrived since the last round."""
        return self.at is not None and models.events > self.events

    def after_update(self, models: ItemModels) -> list[Write]:
        """The writes due after an update: a new round, or the round's share."""
        if self.at is None or self.pos < len(self.queue) or models.events - self.events >= self.config.global_min_events:
            return self.tick(models, models.clock)
        return []

    def tick(self, models: ItemModels, now: int) -> list[Write]:
        """Writes that became due as event time reached ``now``: a new round, or this
        event's share of the round in progress."""
        if self.at is None or (
            now - self.at >= self.config.global_interval_s * 1000
            and models.events - self.events >= self.config.global_min_events
        ):
            return self.start_round(models, now)
        if self.pos < len(self.queue):
            return self._share(models, now)
        return []

    def start_round(self, models: ItemModels, now: int, spread: bool = True) -> list[Write]:
        """Start a round as of ``now`` (see the module docstring); ``spread=False``
        writes all of it now (the end of the input, an idle live run)."""
        span = max(1, int((models.events - self.events) * self.GLOBAL_SPREAD)) if spread else 1
        self.at, self.events = now, models.events
        changed = [set(names) for names in models.take_changed()]
        for kind, name in self.queue[self.pos:]:  # what the last round did not get to
            changed[kind].add(name)
        self.queue = [(kind, name) for kind in (_CATEGORY, _SEGMENT, _ITEM) for name in sorted(changed[kind])]
        self.pos, self.start, self.span = 0, models.events, span
        keys = self.keys
        writes: list[Write] = [trending_write(keys.trending, models.trending.top(now, self.config.trending_size))]
        writes.extend(self._share(models, now))
        writes.append(meta_write(keys.meta, models.events, models.clock, models.users, len(models.trending), models.flags))
        return writes

    def flush(self, models: ItemModels) -> list[Write]:
        """Everything still pending (the end of the input)."""
        return self.start_round(models, models.clock, spread=False)

    def rest(self, models: ItemModels, now: int) -> list[Write]:
        """All that the round in progress has still to write, now."""
        self.span = 1
        return self._share(models, now)

    def _share(self, models: ItemModels, now: int) -> list[Write]:
        """The round's writes due by this event: after ``k`` events of a round spread
        over ``span`` events, the first ``ceil(total·(k+1)/span)`` of its queue."""
        queue, pos = self.queue, self.pos
        total = len(queue)
        k = models.events - self.start + 1
        end = total if k >= self.span else min(total, -(-total * k // self.span))
        if end <= pos:
            return []
        keys = self.keys
        writes: list[Write] = []
        for kind, name in queue[pos:end]:
            if kind == _CATEGORY:
                writes.append(trending_write(keys.category_trending(name), models.by_category[name].top(now, 50)))
            elif kind == _SEGMENT:
                writes.append(trending_write(keys.segment_trending(name), models.by_segment[name].top(now, 50)))
            else:
                ranked = models.covisit.similar(name, models.covisit.list_size)
                writes.extend(item_list_writes(keys, name, ranked, models.item_categories, self.config.similar_size))
        if end == total:
            self.queue, self.pos = [], 0
        else:
            self.pos = end
        return writes
