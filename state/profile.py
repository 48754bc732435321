"""Decay-weighted user profiles.

Each event adds ``action weight × dwell factor`` to the user's affinity for its item and
its categories, and every affinity decays in event time: a weight ``w`` that arrived
``age`` milliseconds ago counts ``w · e^(−λ·age)`` with ``λ = ln 2 / half_life``. Scores
are stored as (value, as-of time) pairs and decayed lazily, so an update is O(1).

Dwell is implicit feedback: a dwell longer than ``long_dwell_ms`` boosts the item (up to
×2), one shorter than ``quick_exit_ms`` (a bounce) turns the weight slightly negative.

State is bounded: at most ``max_categories`` category and ``max_items`` item affinities
(the weakest are dropped), a capped list of recent items and of purchased items.

Example:

>>> from pulse.operators.events import Event
>>> p = UserProfile(half_life_s=3600)
>>> p.learn_one(Event(user_id="u", type="purchase", ts=0, item_id="a", category="shoes"))
5.0
>>> p.learn_one(Event(user_id="u", type="view", ts=3_600_000, item_id="b", category="hats"))
1.0
>>> round(p.category_scores(3_600_000)["shoes"], 2)   # 5, one half-life ago
2.5
"""

from __future__ import annotations

import math
from operator import itemgetter
from dataclasses import dataclass, field
from typing import Mapping, Optional

from pulse.operators.events import Event

#: Default action weights per event type (``rate`` is scaled by the rating, see below).
DEFAULT_ACTION_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "scroll": 0.5,
    "dwell": 1.0,
    "search": 0.5,
    "bookmark": 3.0,
    "share": 3.0,
    "add_to_cart": 4.0,
    "purchase": 5.0,
    "remove_from_cart": -2.0,
    "rate": 1.0,
}


@dataclass(frozen=True)
class ProfileConfig:
    half_life_s: float = 7 * 24 * 3600
    action_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_ACTION_WEIGHTS))
    long_dwell_ms: int = 30_000
    quick_exit_ms: int = 3_000
    max_categories: int = 32
    max_items: int = 50
    max_recent: int = 50
    max_seen: int = 2_000
    max_purchased: int = 200

    @property
    def decay_per_ms(self) -> float:
        return math.log(2) / (self.half_life_s * 1000)


def event_weight(ev: Event, config: ProfileConfig) -> float:
    """The implicit-feedback weight of one event: action weight × dwell factor.

    A ``rate`` event's weight grows with its rating: ``rating / 2.5`` (a 5-star rating
    counts twice a 2.5-star one)."""
    w = config.action_weights.get(ev.type, 1.0)
    if ev.type == "rate" and ev.rating is not None:
        w *= ev.rating / 2.5
    if ev.dwell_ms is not None and w > 0:
        if ev.dwell_ms >= config.long_dwell_ms:
            w *= min(2.0, 1.0 + ev.dwell_ms / (4 * config.long_dwell_ms))
        elif ev.dwell_ms < config.quick_exit_ms:
            w = -0.25 * w
    return w


class DecayedScores:
    """A bounded map key → score decaying in event time.

    Forward decay (see :mod:`pulse.state.trending`): scores are stored relative to a
    landmark, so an update is one multiplication and the ranking never needs a pass of
    ``exp`` over all keys. The best few keys (as last asked for by :meth:`at`) are kept
    in order as scores grow, so that a profile document does not sort the table."""

    __slots__ = ("cap", "decay", "landmark", "values", "_top", "_top_n")

    def __init__(self, cap: int, decay_per_ms: float) -> None:
        self.cap = cap
        self.decay = decay_per_ms
        self.landmark: Optional[int] = None
        self.values: dict[str, float] = {}
        self._top: Optional[list[str]] = None  # the best _top_n keys, by (-score, key)
        self._top_n = 0

    def add(self, key: str, weight: float, ts: int) -> None:
        if self.landmark is None:
            self.landmark = ts
        x = self.decay * (ts - self.landmark)
        if x > 300.0:  # rebase before the stored values could overflow
            f = math.exp(-x)
            self.values = {k: v * f for k, v in self.values.items()}
            self.landmark, x = ts, 0.0
        self._bump(key, weight * math.exp(x))

    def at(self, now: int, top: Optional[int] = None, digits: Optional[int] = None) -> dict[str, float]:
        """Scores as of event time ``now``, strongest first, ties by key (the ``top``
        ones; rounded to ``digits`` when given)."""
        if self.landmark is None:
            return {}
        values = self.values
        if top is not None and top == self._top_n and self._top is not None:
            keys = self._top
        else:
            keys = sorted(values, key=values.get, reverse=True)
            n = len(keys)
            end = n if top is None else min(top, n)
            i = 0
            while i < end:  # runs of equal scores (also across the cut) rank by key
                v = values[keys[i]]
                j = i + 1
                while j < n and values[keys[j]] == v:
                    j += 1
                if j - i > 1:
                    keys[i:j] = sorted(keys[i:j])
                i = j
            del keys[end:]
            if top is not None:
                self._top, self._top_n = list(keys), top
        f = math.exp(-self.decay * (now - self.landmark))
        if digits is not None:
            scale = 10.0**digits  # round(x * 10^d) / 10^d: round(x, d) without its slow path
            f *= scale
            return {k: round(values[k] * f) / scale for k in keys}
        return {k: values[k] * f for k in keys}

    def _bump(self, key: str, inc: float) -> None:
        """Add an increment already scaled to the landmark (see :class:`UserProfile`)."""
        values = self.values
        v = values[key] = values.get(key, 0.0) + inc
        if len(values) > 2 * self.cap:  # amortised: prune back to cap once it doubles
            self.values = dict(sorted(values.items(), key=itemgetter(1), reverse=True)[: self.cap])
            self._top = None
            return
        top = self._top
        if top is None:
            return
        if key in top:
            if inc < 0:  # one of the best may fall behind others: rank again when asked
                self._top = None
                return
            i = top.index(key)
        elif len(top) < self._top_n:
            i = len(top)
            top.append(key)
        else:
            last = top[-1]
            lv = values[last]
            if v < lv or (v == lv and key > last):
                return
            i = len(top) - 1
        while i > 0:  # move up past the keys it now beats
            prev = top[i - 1]
            pv = values[prev]
            if v < pv or (v == pv and key > prev):
                break
            top[i] = prev
            i -= 1
        top[i] = key


class UserProfile:
    """A user's decay-weighted affinities, counts and recent activity."""

    def __init__(self, config: ProfileConfig = ProfileConfig(), half_life_s: Optional[float] = None) -> None:
        if half_life_s is not None:
            config = ProfileConfig(**{**config.__dict__, "half_life_s": half_life_s})
        self.config = config
        decay = config.decay_per_ms
        self.categories = DecayedScores(config.max_categories, decay)
        self.items = DecayedScores(config.max_items, decay)
        self.activity = DecayedScores(1, decay)  # one key: decayed engagement
        self._decay = decay
        self._landmark: Optional[int] = None  # shared by the three tables
        self.counts: dict[str, int] = {}
        self.first_seen: Optional[int] = None
        self.last_seen: Optional[int] = None
        self.recent: list[tuple[str, int, float]] = []  # (item, ts, weight), newest last
        self.seen: dict[str, None] = {}  # insertion-ordered set of items interacted with
        self.purchased: dict[str, None] = {}
        self.dwell_total_ms = 0
        self.dwell_n = 0

    def _growth(self, ts: int) -> float:
        """``e^(λ·(ts − landmark))`` of the three tables, which share one landmark."""
        tables = (self.categories, self.items, self.activity)
        if self._landmark is None:
            self._landmark = ts
            for t in tables:
                t.landmark = ts
        x = self._decay * (ts - self._landmark)
        if x > 300.0:  # rebase before the stored values could overflow
            f = math.exp(-x)
            for t in tables:
                t.values = {k: v * f for k, v in t.values.items()}
                t.landmark = ts
            self._landmark, x = ts, 0.0
        return math.exp(x)

    def learn_one(self, ev: Event) -> float:
        """Fold one event in; returns its weight."""
        cfg = self.config
        w = event_weight(ev, cfg)
        ts = ev.ts
        kind = ev.type
        counts = self.counts
        counts[kind] = counts.get(kind, 0) + 1
        first, last = self.first_seen, self.last_seen
        self.first_seen = ts if first is None or ts < first else first
        self.last_seen = ts if last is None or ts > last else last
        g = self._growth(ts)
        inc = w * g
        self.activity._bump("e", abs(inc))
        dwell = ev.dwell_ms
        if dwell is not None:
            self.dwell_total_ms += dwell
            self.dwell_n += 1
        for c in ev.category:
            self.categories._bump(c, inc)
        item = ev.item_id
        if item is not None:
            self.items._bump(item, inc)
            if w > 0:
                self.recent.append((item, ts, w))
                if len(self.recent) > cfg.max_recent:
                    del self.recent[0]
            seen = self.seen
            if item in seen:
                del seen[item]
            seen[item] = None
            if len(seen) > cfg.max_seen:
                del seen[next(iter(seen))]
            if kind == "purchase":
                self.purchased[item] = None
                if len(self.purchased) > cfg.max_purchased:
                    del self.purchased[next(iter(self.purchased))]
        return w

    # -- views -----------------------------------------------------------------------
    def category_scores(self, now: int) -> dict[str, float]:
        return self.categories.at(now)

    def scores(self, now: int, frequency_scale: float = 50.0, recency_scale_s: float = 7 * 24 * 3600) -> dict:
        """Recency, frequency and engagement, each normalized to [0, 1]."""
        total = sum(self.counts.values())
        age_s = max(0, now - (self.last_seen or now)) / 1000
        recency = math.exp(-age_s / recency_scale_s)
        frequency = 1 - math.exp(-total / frequency_scale)
        act = self.activity
        activity = act.values.get("e", 0.0) * math.exp(-act.decay * (now - act.landmark)) if act.landmark is not None else 0.0
        engagement = 1 - math.exp(-activity / frequency_scale)
        # (round(x * 1e6) / 1e6: round(x, 6) without its slow path)
        return {"recency": round(recency * 1e6) / 1e6, "frequency": round(frequency * 1e6) / 1e6,
                "engagement": round(engagement * 1e6) / 1e6}

    def to_doc(self, now: int, top: int = 10) -> dict:
        """The profile document a frontend reads (without segment and anomaly)."""
        counts = self.counts
        return {
            "counts": dict(sorted(counts.items())) if len(counts) > 1 else dict(counts),
            "events": sum(counts.values()),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            **self.scores(now),
            "dwell_mean_ms": round(self.dwell_total_ms / self.dwell_n, 3) if self.dwell_n else None,
            "categories": self.categories.at(now, top, 6),
            "items": self.items.at(now, top, 6),
        }
