"""Behavioural bot rules, beside the River anomaly model: plain rules on the rate and
the shape of a user's sessions, which catch the bots that send a browser's user agent
(so the validator lets them in) and that a model of per-minute features misses.

Within one session (its ``session_id``, or a gap of ``session_gap_s`` without events),
counting *item events* (views and clicks, the page loads a person makes one at a time):

* ``rate``: at least ``max_per_minute`` item events within one minute of event time;
* ``sub_second``: at least ``fast_share`` of the gaps between consecutive item events
  are shorter than ``fast_gap_ms``;
* ``no_dwell``: fewer dwell reports than ``dwell_share`` of the item events, or a mean
  dwell under ``max_dwell_ms``;
* ``no_scroll``: fewer scroll reports than ``scroll_share`` of the item events;
* ``random_walk``: item events in at least ``walk_categories`` distinct categories (a
  person browses one or two per session; a scraper walks the whole catalogue).

The shape rules are read once the session has ``min_session_events`` item events. A
session is a bot's when the rate rule holds, or at least ``min_rules`` shape rules hold
together. The user's standing verdict is that of the latest session judged: a bot's
session flags the user (with the reason) until a later session reaches
``min_session_events`` item events without the rules holding, so a bot's next session
stays flagged from its first event, and a person's short sessions change nothing. The
user step sends each change of the verdict on; the River step joins it to the model's
anomaly flag (:mod:`pulse.state.river_models`: the ``pulse:anomalies`` stream, the
``pulse:user:{<id>}:segment`` verdict), and flagged users stay out of the global models
and get non-personalized lists.

The state is kept per user, so it is small: one ``array('q')`` of 12 numbers, the
session id and the reason (about 250 bytes), made only once a user sends an item event
within ``fast_gap_ms`` of their previous event; a user who never does has no bot state
at all.

Example:

>>> from pulse.operators.events import Event
>>> rules = BotRules(BotRuleConfig(min_session_events=20))
>>> reasons = [rules.learn_one(Event(user_id="b", type="view", ts=t * 300, item_id=f"i{t}",
...                                  category=f"c{t % 9}", session_id="s1")) for t in range(25)]
>>> reasons[18], reasons[19]
('', 'sub_second: 100% of 19 gaps < 1000 ms; no_dwell: 0 dwell reports; no_scroll: 0 scroll reports; random_walk: 9 categories')
>>> rules.learn_one(Event(user_id="b", type="view", ts=90_000_000, item_id="i1", session_id="s2")) == reasons[19]
True
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Optional

from pulse.operators.events import Event
from pulse.operators.windows import stable_hash
from pulse.state.profile import compact_config, restore_config

# The array's fields (JUDGED: 1 once the current session is taken for a bot's, so its
# verdict is not worked out again at every event).
LAST_SEEN, LAST_ITEM, ITEMS, FAST, DWELLS, DWELL_SUM, SCROLLS, CATEGORIES, MINUTE, MINUTE_ITEMS, MAX_MINUTE, JUDGED = range(12)
_NEW_SESSION = array("q", [-1, -1, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0])
ITEM_TYPES = frozenset(("view", "click"))


@dataclass(frozen=True)
class BotRuleConfig:
    """The rules' thresholds (see the module docstring); ``enabled=False`` turns them off."""

    enabled: bool = True
    min_session_events: int = 30
    max_per_minute: int = 120
    fast_gap_ms: int = 1000
    fast_share: float = 0.7
    dwell_share: float = 0.1
    max_dwell_ms: float = 500.0
    scroll_share: float = 0.05
    walk_categories: int = 4
    min_rules: int = 2
    session_gap_s: int = 1800

    def __post_init__(self) -> None:
        if self.min_session_events < 2 or self.max_per_minute < 1 or self.fast_gap_ms < 1:
            raise ValueError("bot rules: min_session_events >= 2, max_per_minute >= 1 and fast_gap_ms >= 1")
        if not 1 <= self.min_rules <= 4:
            raise ValueError("bot rules: min_rules is between 1 and 4 (of sub_second, no_dwell, no_scroll, random_walk)")
        for name in ("fast_share", "dwell_share", "scroll_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"bot rules: {name} is a share, between 0 and 1")

    def __reduce__(self):  # (see pulse.state.profile.compact_config)
        return restore_config, (type(self), compact_config(self))

    def starts_tracking(self, ev: Event, last_seen: Optional[int]) -> bool:
        """Whether a user without bot state needs it from ``ev`` on: an item event
        within ``fast_gap_ms`` of the user's previous event."""
        return self.enabled and ev.type in ITEM_TYPES and last_seen is not None and ev.ts - last_seen < self.fast_gap_ms


class BotRules:
    """One user's current session, counted for the bot rules, and the user's standing
    verdict (see the module docstring)."""

    __slots__ = ("config", "_s", "_session", "_reason")

    def __init__(self, config: BotRuleConfig = BotRuleConfig()) -> None:
        self.config = config
        self._s = array("q", _NEW_SESSION)
        self._session: Optional[str] = None
        self._reason = ""  # the standing verdict: why the user is taken for a bot, or ""

    def __getstate__(self):
        return self.config, self._s, self._session, self._reason

    def __setstate__(self, state) -> None:
        self.config, self._s, self._session, self._reason = state

    @property
    def reason(self) -> str:
        """Why the user is taken for a bot (``""`` when not)."""
        return self._reason

    def learn_one(self, ev: Event) -> str:
        """Count ``ev`` into its session; returns the standing verdict: why the user is
        taken for a bot, or ``""``."""
        s, c = self._s, self.config
        if ev.session_id != self._session or (s[LAST_SEEN] >= 0 and ev.ts - s[LAST_SEEN] > c.session_gap_s * 1000):
            s[:] = _NEW_SESSION  # (the verdict stands until this session is judged)
            self._session = ev.session_id
        s[LAST_SEEN] = ev.ts
        if ev.dwell_ms is not None:
            s[DWELLS] += 1
            s[DWELL_SUM] += ev.dwell_ms
        if ev.scroll_pct is not None or ev.type == "scroll":
            s[SCROLLS] += 1
        if ev.type in ITEM_TYPES:
            if s[LAST_ITEM] >= 0 and 0 <= ev.ts - s[LAST_ITEM] < c.fast_gap_ms:
                s[FAST] += 1
            s[LAST_ITEM] = ev.ts
            s[ITEMS] += 1
            for category in ev.category:
                s[CATEGORIES] |= 1 << (stable_hash(category) % 63)
            minute = ev.ts // 60_000
            s[MINUTE_ITEMS] = s[MINUTE_ITEMS] + 1 if minute == s[MINUTE] else 1
            s[MINUTE] = minute
            if s[MINUTE_ITEMS] > s[MAX_MINUTE]:
                s[MAX_MINUTE] = s[MINUTE_ITEMS]
        if not s[JUDGED]:
            verdict = self._verdict()
            if verdict:
                s[JUDGED] = 1
                if not self._reason:  # (a bot's next session keeps the first reason)
                    self._reason = verdict
            elif s[ITEMS] >= c.min_session_events:
                self._reason = ""  # a session long enough to judge, and no rule holds
        return self._reason

    def _verdict(self) -> str:
        s, c = self._s, self.config
        if s[MAX_MINUTE] >= c.max_per_minute:
            return f"rate: {s[MAX_MINUTE]} item events in one minute"
        items = s[ITEMS]
        if items < c.min_session_events:
            return ""
        held = []
        gaps = items - 1
        if s[FAST] >= c.fast_share * gaps:
            held.append(f"sub_second: {100 * s[FAST] // gaps}% of {gaps} gaps < {c.fast_gap_ms} ms")
        if s[DWELLS] < c.dwell_share * items or s[DWELL_SUM] < c.max_dwell_ms * s[DWELLS]:
            held.append(f"no_dwell: {s[DWELLS]} dwell reports" + (f", {s[DWELL_SUM] // s[DWELLS]} ms on average" if s[DWELLS] else ""))
        if s[SCROLLS] < c.scroll_share * items:
            held.append(f"no_scroll: {s[SCROLLS]} scroll reports")
        categories = s[CATEGORIES].bit_count()
        if categories >= c.walk_categories:
            held.append(f"random_walk: {categories} categories")
        return "; ".join(held) if len(held) >= c.min_rules else ""
