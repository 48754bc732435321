"""Per-user state kept by the dataflow's user step: dedup, windows, the profile and the
rule-based segments (:mod:`pulse.state.rules`).

One :class:`UserState` exists per active user, on the worker that owns the user's key.
It is deliberately small and bounded (a capped ring of recent event ids, the user's open
windows, a capped profile) because Bytewax snapshots it at every epoch in which the user
was active.

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
from pulse.operators.windows import UserWindows, WindowAgg
from pulse.state.profile import ProfileConfig, UserProfile
from pulse.state.rules import EnthusiastRules, RuleConfig


@dataclass(frozen=True)
class UserConfig:
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    rules: RuleConfig = field(default_factory=RuleConfig)
    dedup_capacity: int = 1_024
    tumbling_s: tuple[int, ...] = (60, 3600)
    session_gap_s: int = 1800
    allowed_lateness_s: int = 5
    #: the profile document is re-sent at most once per this much event time
    profile_interval_s: float = 1.0


class Learned(NamedTuple):
    duplicate: bool
    weight: float
    closed: list[WindowAgg]
    late: bool


class UserState:
    """Everything the user step remembers about one user."""

    def __init__(self, config: UserConfig) -> None:
        self.config = config
        self.user_id: Optional[str] = None
        self.event_ids: dict[str, None] = {}
        self.windows = UserWindows(config.tumbling_s, config.session_gap_s, config.allowed_lateness_s)
        self.profile = UserProfile(config.profile)
        self.rules = EnthusiastRules(config.rules)
        self.profile_sent_at: Optional[int] = None
        self.profile_dirty = False

    def learn_one(self, ev: Event) -> Learned:
        self.user_id = ev.user_id
        if ev.event_id is not None:
            if ev.event_id in self.event_ids:
                return Learned(True, 0.0, [], False)
            self.event_ids[ev.event_id] = None
            if len(self.event_ids) > self.config.dedup_capacity:
                del self.event_ids[next(iter(self.event_ids))]
        weight = self.profile.learn_one(ev)
        self.rules.learn_one(ev)
        closed, late = self.windows.learn_one(ev)
        self.profile_dirty = True  # (rule segments can only change here too)
        return Learned(False, weight, closed, bool(late))

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
