"""Rule-based segments: ``enthusiast:<category>``.

A user is an *enthusiast* of category X while they have viewed at least ``min_items``
distinct items of X within the trailing ``window_s`` of event time, counted back from the
user's latest event (by default 5 items in 24 hours). Unlike the River segments, which
are learned clusters, these are plain rules a merchandiser can read and trust; a user can
be in several at once.

The state is small because Bytewax snapshots it. Membership only asks whether the
``min_items``-th most recently viewed distinct item is inside the window, so per category
only the ``min_items`` most recently viewed items are kept (item → last view time, oldest
first), and at most ``max_categories`` categories (the least recently viewed one goes
first). Expired views are dropped from the front. A view costs a few dictionary
operations and other events one set lookup; a membership query answers from a cache
until a category fills up or the oldest view a membership rests on expires.

Example:

>>> from pulse.operators.events import Event
>>> rules = EnthusiastRules(RuleConfig(min_items=3, window_s=3600))
>>> for i, item in enumerate(["a", "b", "a", "c"]):
...     rules.learn_one(Event(user_id="u", type="view", ts=i * 60_000, item_id=item, category=["shoes", "sale"]))
>>> rules.predict_one(now=3 * 60_000)
['enthusiast:sale', 'enthusiast:shoes']
>>> rules.predict_one(now=3_600_000 + 60_000)   # "b", viewed an hour ago, no longer counts
[]
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Optional

from pulse.operators.events import EVENT_TYPES, Event


@dataclass(frozen=True)
class RuleConfig:
    #: distinct items of one category a user must have viewed ...
    min_items: int = 5
    #: ... within this much event time
    window_s: float = 24 * 3600
    #: the event types that count as viewing an item
    event_types: tuple[str, ...] = ("view",)
    #: categories tracked per user (the least recently viewed one is forgotten first)
    max_categories: int = 32
    #: segment names are ``<prefix>:<category>``
    prefix: str = "enthusiast"

    def __post_init__(self) -> None:
        if self.min_items < 1:
            raise ValueError("min_items must be at least 1")
        if self.window_s <= 0:
            raise ValueError("window_s must be positive")
        if self.max_categories < 1:
            raise ValueError("max_categories must be at least 1")
        unknown = sorted(set(self.event_types) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}")


class EnthusiastRules:
    """One user's recent views per category and the ``enthusiast:<c>`` rule over them."""

    __slots__ = ("config", "views", "full", "latest", "_types", "_window_ms", "_members", "_until")

    def __init__(self, config: RuleConfig = RuleConfig()) -> None:
        self.config = config
        #: category → {item: last view ts}, oldest first; categories least recently viewed first
        self.views: dict[str, dict[str, int]] = {}
        #: the categories holding ``min_items`` unexpired items: the memberships
        self.full: set[str] = set()
        #: the latest view time seen
        self.latest = 0
        self._types = frozenset(config.event_types)
        self._window_ms = int(config.window_s * 1000)
        #: the sorted segment names of ``full`` (None: ``full`` changed since), valid
        #: until event time ``_until``, when the oldest view they rest on expires
        self._members: Optional[list[str]] = []
        self._until = 0

    def learn_one(self, ev: Event) -> None:
        """Count a view of ``ev.item_id`` in each of ``ev.category``; ignore anything else."""
        if ev.type not in self._types or not ev.category:
            return
        item = ev.item_id
        if item is None:
            return
        ts = ev.ts
        if ts > self.latest:
            self.latest = ts
        cutoff = self.latest - self._window_ms
        if ts <= cutoff:  # already outside the window
            return
        cap = self.config.min_items
        views = self.views
        full = self.full
        for c in ev.category:
            d = views.pop(c, None)  # re-inserted last: most recently viewed category
            if d is None:
                d = {}
                if len(views) >= self.config.max_categories:
                    gone = next(iter(views))
                    del views[gone]
                    if gone in full:
                        full.discard(gone)
                        self._members = None
            views[c] = d
            old = d.get(item)
            if old is not None:
                if old >= ts:
                    continue
                del d[item]
            if d and next(reversed(d.values())) > ts:  # out of order: keep oldest first
                d[item] = ts
                d = views[c] = dict(sorted(d.items(), key=itemgetter(1)))
            else:
                d[item] = ts
            if len(d) > cap:  # only the newest min_items matter
                del d[next(iter(d))]
            while next(iter(d.values())) <= cutoff:  # drop expired views from the front
                del d[next(iter(d))]
            # (a full category stays full here, and its oldest view only gets newer)
            if len(d) >= cap:
                if c not in full:
                    full.add(c)
                    self._members = None
            elif c in full:
                full.discard(c)
                self._members = None

    def predict_one(self, now: int) -> list[str]:
        """The user's rule segments as of event time ``now`` (the user's latest event
        time; it should not go back), sorted. Views at or before ``now − window`` no
        longer count, and are forgotten."""
        full = self.full
        if not full:
            return []
        members = self._members
        if members is not None and now < self._until:
            return list(members)
        cutoff = now - self._window_ms
        cap = self.config.min_items
        views = self.views
        until = None
        for c in list(full):
            d = views[c]
            while d and next(iter(d.values())) <= cutoff:
                del d[next(iter(d))]
            if len(d) >= cap:
                oldest = next(iter(d.values()))
                if until is None or oldest < until:
                    until = oldest
            else:
                full.discard(c)
        prefix = self.config.prefix
        self._members = members = sorted(f"{prefix}:{c}" for c in full)
        self._until = 0 if until is None else until + self._window_ms
        return list(members)
