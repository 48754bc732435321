"""Per-user state kept by the dataflow's user step: dedup, windows, the profile, the
rule-based segments (:mod:`pulse.state.rules`) and the bot rules (:mod:`pulse.state.bots`).

One :class:`UserState` exists per active user, on the worker that owns the user's key,
so it is laid out for size (about 1.3 KiB for a user of five events, 10 KiB for one of
200 busy ones; see ``benchmarks/user_memory.py``), and bounded because Bytewax
snapshots it at every epoch in which the user was active: the recent event ids as a capped ring of 8-byte hashes
(:class:`EventIds`), the user's open windows as a short log of their events
(:mod:`pulse.operators.windows`), the profile and the rule state as a few arrays
(:mod:`pulse.state.profile`, :mod:`pulse.state.rules`).

Example:

>>> from pulse.operators.events import Event
>>> s = UserState(UserConfig())
>>> out = s.learn_one(Event(user_id="u", type="view", ts=1_000, item_id="a", event_id="e1"))
>>> out.duplicate, out.weight
(False, 1.0)
>>> s.learn_one(Event(user_id="u", type="view", ts=1_000, item_id="a", event_id="e1")).duplicate
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from pulse.operators.events import Event
from pulse.operators.windows import UserWindows, WindowAgg, stable_hash
from pulse.state.bots import BotRuleConfig, BotRules
from pulse.state.profile import ProfileConfig, UserProfile, compact_config, restore_config
from pulse.state.rules import EnthusiastRules, RuleConfig


@dataclass(frozen=True)
class UserConfig:
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    rules: RuleConfig = field(default_factory=RuleConfig)
    bots: BotRuleConfig = field(default_factory=BotRuleConfig)
    dedup_capacity: int = 1_024
    tumbling_s: tuple[int, ...] = (60, 3600)
    session_gap_s: int = 1800
    allowed_lateness_s: int = 5
    #: the profile document is re-sent at most once per this much event time
    profile_interval_s: float = 1.0

    def __reduce__(self):  # (see pulse.state.profile.compact_config)
        return restore_config, (type(self), compact_config(self))


class Learned(NamedTuple):
    duplicate: bool
    weight: float
    closed: list[WindowAgg]
    late: bool
    #: the bot rules' new verdict when it changed at this event (why the user is taken
    #: for a bot, or "" when no longer), else None
    bot: Optional[str] = None


class EventIds(bytearray):
    """The ids of a user's most recent events, as a ring of 8-byte hashes, oldest first.

    ``event_id in ids`` asks whether an id is among them; two distinct ids are taken for
    one only if their 64-bit hashes (:func:`~pulse.operators.windows.stable_hash`)
    collide, about n / 2^62 for a ring of n ids.

    >>> ids = EventIds()
    >>> ids.add("e1", capacity=2), ids.add("e2", capacity=2), ids.add("e1", capacity=2)
    (True, True, False)
    >>> ids.add("e3", capacity=2), "e1" in ids, "e3" in ids
    (True, False, True)
    """

    __slots__ = ()

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and self._find(_digest(event_id)) >= 0

    def add(self, event_id: str, capacity: int) -> bool:
        """Remember ``event_id`` (forgetting the oldest beyond ``capacity`` ids); False if
        it was already there."""
        h = _digest(event_id)
        if self._find(h) >= 0:
            return False
        self.extend(h)
        if len(self) > 8 * capacity:
            del self[:8]  # (cheap: a bytearray drops its head in place)
        return True

    def _find(self, h: bytes) -> int:
        i = self.find(h)
        while i > 0 and i % 8:  # a match across two hashes is no match
            i = self.find(h, i + 1)
        return i


def _digest(event_id: str) -> bytes:
    return stable_hash(event_id).to_bytes(8, "little", signed=True)


class UserState:
    """Everything the user step remembers about one user."""

    __slots__ = ("config", "user_id", "event_ids", "windows", "profile", "rules", "bots", "profile_sent_at", "profile_dirty")

    def __init__(self, config: UserConfig) -> None:
        self.config = config
        self.user_id: Optional[str] = None
        self.event_ids = EventIds()
        self.windows = UserWindows(config.tumbling_s, config.session_gap_s, config.allowed_lateness_s)
        self.profile = UserProfile(config.profile)
        self.rules = EnthusiastRules(config.rules)
        self.bots: Optional[BotRules] = None  # made when a user first looks hurried (BotRuleConfig.starts_tracking)
        self.profile_sent_at: Optional[int] = None
        self.profile_dirty = False

    def learn_one(self, ev: Event) -> Learned:
        self.user_id = ev.user_id
        if ev.event_id is not None and not self.event_ids.add(ev.event_id, self.config.dedup_capacity):
            return Learned(True, 0.0, [], False)
        last_seen = self.profile.last_seen
        weight = self.profile.learn_one(ev)
        self.rules.learn_one(ev)
        closed, late = self.windows.learn_one(ev)
        self.profile_dirty = True  # (rule segments can only change here too)
        if self.bots is None:
            if not self.config.bots.starts_tracking(ev, last_seen):
                return Learned(False, weight, closed, bool(late))
            self.bots = BotRules(self.config.bots)
        before = self.bots.reason
        after = self.bots.learn_one(ev)
        return Learned(False, weight, closed, bool(late), after if after != before else None)

    def profile_due(self, now: int) -> bool:
        """Whether the profile should be re-sent now (debounced in event time)."""
        if not self.profile_dirty:
            return False
        return self.profile_sent_at is None or now - self.profile_sent_at >= self.config.profile_interval_s * 1000

    def profile_doc(self, now: int) -> dict:
        self.profile_sent_at = now
        self.profile_dirty = False
        doc = self.profile.to_doc(now)
        last = self.profile.last_seen
        doc["rule_segments"] = self.rules.predict_one(now if last is None or now > last else last)
        return doc
