"""Rule-based segments: ``enthusiast:<category>``.

A user is an *enthusiast* of category X while they have viewed at least ``min_items``
distinct items of X within the trailing ``window_s`` of event time, counted back from the
user's latest event (by default 5 items in 24 hours). Unlike the River segments, which
are learned clusters, these are plain rules a merchandiser can read and trust; a user can
be in several at once.

The state is small because it is kept for every user and Bytewax snapshots it.
Membership only asks whether the ``min_items``-th most recently viewed distinct item is
inside the window, so per category only the ``min_items`` most recently viewed items are
kept (last view time and a hash of the item id, oldest first), and at most
``max_categories`` categories (the least recently viewed one goes first). Expired views
are dropped from the front. All of it lies in one ``array('q')`` beside a tuple of the
category names (interned: users share one copy of each name); a view rewrites its
category's few numbers, and a membership query reads the categories holding
``min_items`` views.

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

import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Iterator, Optional

from pulse.operators.events import EVENT_TYPES, Event
from pulse.operators.windows import stable_hash
from pulse.state.profile import compact_config, restore_config

LATEST, FULL = 0, 1  # the array's header: latest view time, number of full categories



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

    def __reduce__(self):  # (see pulse.state.profile.compact_config)
        return restore_config, (type(self), compact_config(self))


class EnthusiastRules:
    """One user's recent views per category and the ``enthusiast:<c>`` rule over them."""

    __slots__ = ("config", "_categories", "_views")

    def __init__(self, config: RuleConfig = RuleConfig()) -> None:
        self.config = config
        #: the categories viewed, least recently viewed first (None before the first view)
        self._categories: Optional[tuple[str, ...]] = None
        #: the latest view time seen, how many categories hold min_items views (the
        #: memberships), then per category of ``_categories`` a block: its views kept as
        #: (view time, item hash) pairs, oldest first, then their number (last, so that
        #: the recently viewed categories are found from the end)
        self._views: Optional[array] = None

    def _blocks(self) -> Iterator[tuple[str, int, int]]:
        """(category, where its views start, how many) per category, most recently
        viewed first."""
        views = self._views
        if views is None:
            return
        end = len(views)
        for c in reversed(self._categories):
            n = views[end - 1]
            start = end - 1 - 2 * n
            yield c, start, n
            end = start

    def _cut(self, j: int) -> array:
        """Remove the views of the ``j``-th category (least recently viewed first) from
        the array and return them, as (view time, item hash) pairs flat."""
        views = self._views
        end = len(views)
        for _ in range(len(self._categories) - 1 - j):
            end -= 1 + 2 * views[end - 1]
        start = end - 1 - 2 * views[end - 1]
        pairs = views[start:end - 1]
        del views[start:end]
        if len(pairs) == 2 * self.config.min_items:
            views[FULL] -= 1
        return pairs

    @property
    def views(self) -> dict[str, tuple[int, ...]]:
        """The view times kept per category (oldest first), least recently viewed category
        first: what the state holds, for inspection."""
        views = self._views
        return {c: tuple(views[start:start + 2 * n:2]) for c, start, n in reversed(list(self._blocks()))}

    def learn_one(self, ev: Event) -> None:
        """Count a view of ``ev.item_id`` in each of ``ev.category``; ignore anything else."""
        config = self.config
        if ev.type not in config.event_types or not ev.category:
            return
        item = ev.item_id
        if item is None:
            return
        ts = ev.ts
        views = self._views
        latest = 0 if views is None else views[LATEST]
        if ts > latest:
            latest = ts
        cutoff = latest - int(config.window_s * 1000)
        if ts <= cutoff:  # already outside the window
            return
        if views is None:
            views = self._views = array("q", (latest, 0))
            self._categories = ()
        views[LATEST] = latest
        h = stable_hash(item)
        cap = config.min_items
        for c in ev.category:
            c = sys.intern(c)
            categories = self._categories
            try:
                j = categories.index(c)
            except ValueError:
                pairs = array("q")
                if len(categories) >= config.max_categories:
                    self._cut(0)
                    categories = categories[1:]
                self._categories = categories + (c,)
            else:
                pairs = self._cut(j)
                if j < len(categories) - 1:  # it goes last: the most recently viewed
                    self._categories = categories[:j] + categories[j + 1:] + (c,)
            items = pairs[1::2]
            k = items.index(h) if h in items else -1
            if k < 0 or pairs[2 * k] < ts:  # (else a later view of it counts already)
                if k >= 0:
                    del pairs[2 * k:2 * k + 2]
                i = 2 * bisect_right(pairs[::2], ts)  # oldest first
                pairs[i:i] = array("q", (ts, h))
                if len(pairs) > 2 * cap:  # only the newest min_items matter
                    del pairs[:2]
                while pairs[0] <= cutoff:  # drop expired views from the front
                    del pairs[:2]
            n = len(pairs) // 2
            views.extend(pairs)
            views.append(n)
            if n == cap:
                views[FULL] += 1

    def predict_one(self, now: int) -> list[str]:
        """The user's rule segments as of event time ``now`` (the user's latest event
        time; it should not go back), sorted. Views at or before ``now − window`` no
        longer count, and are forgotten."""
        views = self._views
        if views is None or not views[FULL]:
            return []
        cutoff = now - int(self.config.window_s * 1000)
        cap = self.config.min_items
        prefix = self.config.prefix
        members = []
        for c, start, n in list(self._blocks()):
            if n == cap:  # only a member can stop being one
                expired = 0
                while expired < n and views[start + 2 * expired] <= cutoff:
                    expired += 1
                if expired:  # (blocks before this one, in the array, do not move)
                    del views[start:start + 2 * expired]
                    views[start + 2 * (n - expired)] = n - expired
                    views[FULL] -= 1
                else:
                    members.append(f"{prefix}:{c}")
        members.sort()
        return members
