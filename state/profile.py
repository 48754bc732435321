"""Decay-weighted user profiles.

Each event adds ``action weight × dwell factor`` to the user's affinity for its item and
its categories, and every affinity decays in event time: a weight ``w`` that arrived
``age`` milliseconds ago counts ``w · e^(−λ·age)`` with ``λ = ln 2 / half_life``.

Dwell is implicit feedback: a dwell longer than ``long_dwell_ms`` boosts the item (up to
×2), one shorter than ``quick_exit_ms`` (a bounce) turns the weight slightly negative.

Scores use forward decay (see :mod:`pulse.state.trending`): they are stored relative to
a landmark time, so an update is one multiplication by ``e^(λ·(t − landmark))`` and
ranking never needs a pass of ``exp`` over all keys; the landmark moves forward (every
score rescaled once) before stored values could overflow.

One profile exists per user, so it is laid out for size: the numbers (first and last
event time, dwell total and count, the landmark, the decayed engagement, then every
category score and every item score) share one ``array('d')``, and the category and
item ids one tuple beside it (categories first; a tuple is rebuilt only when an id comes
or goes), the ids interned so that users share one copy of each. Event times, dwell totals and counts are integers, exact in a double up to
2^53. The counts per event type are packed in one integer, :data:`COUNT_BITS` bits per
type. At most ``2 × max_categories`` categories and ``2 × max_items`` items are kept: when
a table reaches that, it keeps its ``max_*`` strongest.

Example:

>>> from pulse.operators.events import Event
>>> p = UserProfile(half_life_s=3600)
>>> p.learn_one(Event(user_id="u", type="purchase", ts=0, item_id="a", category="shoes"))
5.0
>>> p.learn_one(Event(user_id="u", type="view", ts=3_600_000, item_id="b", category="hats"))
1.0
>>> round(p.category_scores(3_600_000)["shoes"], 2)   # 5, one half-life ago
2.5
>>> p.counts, p.last_seen
({'purchase': 1, 'view': 1}, 3600000)
"""

from __future__ import annotations

import dataclasses
import math
import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from operator import neg
from typing import Any, Mapping, Optional

import orjson

from pulse.operators.events import EVENT_TYPES, Event
from pulse.state.schema import DOC_DIGITS, doc_number

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


def compact_config(config: Any) -> tuple:
    """A frozen dataclass config as the (field, value) pairs that differ from its
    defaults, nested configs likewise, mappings and lists as tuples: short to pickle and
    hashable. Configs pickle as ``restore_config, (type, compact_config(config))``, so a
    snapshot of a user carries a few bytes of config, not the whole of it."""
    default = type(config)()
    changes = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value == getattr(default, f.name):
            continue
        if dataclasses.is_dataclass(value):
            value = compact_config(value)
        elif isinstance(value, Mapping):
            value = tuple(value.items())
        elif isinstance(value, list):
            value = tuple(value)
        changes.append((f.name, value))
    return tuple(changes)


@lru_cache(maxsize=None)
def restore_config(cls: type, changes: tuple) -> Any:
    """The config of :func:`compact_config`: one instance per distinct config, shared by
    every user loaded from a snapshot (rather than a copy each)."""
    default = cls()
    kwargs = {}
    for name, value in changes:
        was = getattr(default, name)
        if dataclasses.is_dataclass(was):
            value = restore_config(type(was), value)
        elif isinstance(was, Mapping):
            value = dict(value)
        kwargs[name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class ProfileConfig:
    half_life_s: float = 7 * 24 * 3600
    action_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_ACTION_WEIGHTS))
    long_dwell_ms: int = 30_000
    quick_exit_ms: int = 3_000
    max_categories: int = 32
    max_items: int = 50

    def __post_init__(self) -> None:
        #: λ = ln 2 / half-life, per millisecond (computed once: every event needs it)
        object.__setattr__(self, "decay_per_ms", math.log(2) / (self.half_life_s * 1000))

    def __reduce__(self):
        return restore_config, (type(self), compact_config(self))


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


#: bits per event type in the packed counts (a count wraps past 2^40 events of one type)
COUNT_BITS = 40
_COUNT_MASK = (1 << COUNT_BITS) - 1
_TYPE_SHIFT = {t: COUNT_BITS * i for i, t in enumerate(EVENT_TYPES)}
_BY_NAME = tuple(sorted(_TYPE_SHIFT.items()))  # (type, shift), the order the counts are shown in

#: decimals of the affinities in a profile document (:meth:`UserProfile.to_doc`)
AFFINITY_DECIMALS = 6
_MILLIONTHS = 10**AFFINITY_DECIMALS
_SIGNIFICANT = 10**DOC_DIGITS
_EXACT = 10**9 * _MILLIONTHS  # affinities from 10^9 on are left to doc_number (see doc_affinities)
_POWERS = tuple(10**k for k in range(len(str(_EXACT))))

# The numbers before the scores.
FIRST, LAST, DWELL_TOTAL, DWELL_N, LANDMARK, ACTIVITY, SCORES = range(7)


class UserProfile:
    """A user's decay-weighted affinities, counts and dwell."""

    __slots__ = ("config", "_numbers", "_keys", "_n_categories", "_counts")

    def __init__(self, config: ProfileConfig = ProfileConfig(), half_life_s: Optional[float] = None) -> None:
        if half_life_s is not None:
            config = dataclasses.replace(config, half_life_s=half_life_s)
        self.config = config
        self._numbers = array("d", bytes(8 * SCORES))  # see FIRST ... ACTIVITY, then the scores
        self._keys: tuple[str, ...] = ()  # the ids of the scores: categories, then items
        self._n_categories = 0
        self._counts = 0  # packed, COUNT_BITS per event type; 0 before the first event

    @property
    def counts(self) -> dict[str, int]:
        """Events per type (the types seen), by type name."""
        packed = self._counts
        return {t: n for t, shift in _BY_NAME if (n := packed >> shift & _COUNT_MASK)}

    @property
    def first_seen(self) -> Optional[int]:
        return int(self._numbers[FIRST]) if self._counts else None

    @property
    def last_seen(self) -> Optional[int]:
        return int(self._numbers[LAST]) if self._counts else None

    def learn_one(self, ev: Event) -> float:
        """Fold one event in; returns its weight."""
        w = event_weight(ev, self.config)
        ts = ev.ts
        n = self._numbers
        if self._counts:
            if ts < n[FIRST]:
                n[FIRST] = ts
            if ts > n[LAST]:
                n[LAST] = ts
        else:
            n[FIRST] = n[LAST] = n[LANDMARK] = ts
        self._counts += 1 << _TYPE_SHIFT[ev.type]
        inc = w * self._growth(ts)
        n[ACTIVITY] += abs(inc)
        dwell = ev.dwell_ms
        if dwell is not None:
            n[DWELL_TOTAL] += dwell
            n[DWELL_N] += 1
        for c in ev.category:
            self._bump(sys.intern(c), inc, True)
        item = ev.item_id
        if item is not None:
            self._bump(sys.intern(item), inc, False)
        return w

    def _growth(self, ts: int) -> float:
        """``e^(λ·(ts − landmark))``."""
        n = self._numbers
        x = self.config.decay_per_ms * (ts - n[LANDMARK])
        if x > 300.0:  # rebase before the stored values could overflow
            f = math.exp(-x)
            for i in range(ACTIVITY, len(n)):
                n[i] *= f
            n[LANDMARK], x = ts, 0.0
        return math.exp(x)

    def _bump(self, key: str, inc: float, category: bool) -> None:
        """Add an increment already scaled to the landmark to a category's or an item's
        score; a new key goes last in its table."""
        keys = self._keys
        nc = self._n_categories
        lo, hi = (0, nc) if category else (nc, len(keys))
        try:
            i = keys.index(key, lo, hi)
        except ValueError:
            self._keys = keys[:hi] + (key,) + keys[hi:]
            self._numbers.insert(SCORES + hi, 0.0 + inc)
            if category:
                self._n_categories = nc = nc + 1
                hi = nc
            else:
                hi += 1
            cap = self.config.max_categories if category else self.config.max_items
            if hi - lo > 2 * cap:  # amortised: prune back to cap once it doubles
                self._prune(lo, hi, cap)
                if category:
                    self._n_categories = cap
            return
        self._numbers[SCORES + i] += inc

    def _prune(self, lo: int, hi: int, cap: int) -> None:
        """Keep the ``cap`` strongest keys of ``keys[lo:hi]``, strongest first (ties in
        the order they stood)."""
        n, keys = self._numbers, self._keys
        best = sorted(range(lo, hi), key=lambda i: n[SCORES + i], reverse=True)[:cap]
        self._keys = keys[:lo] + tuple(keys[i] for i in best) + keys[hi:]
        n[SCORES + lo:SCORES + hi] = array("d", [n[SCORES + i] for i in best])

    # -- views -----------------------------------------------------------------------
    def _decayed(self, now: int) -> float:
        """``e^(−λ·(now − landmark))``: what a stored score is worth as of ``now``."""
        return math.exp(-self.config.decay_per_ms * (now - self._numbers[LANDMARK]))

    def _scores(self, lo: int, hi: int, f: float, top: Optional[int] = None, digits: Optional[int] = None) -> dict[str, float]:
        """Scores of ``keys[lo:hi]`` times ``f`` (see :meth:`_decayed`), strongest first,
        ties by key (the ``top`` ones; rounded to ``digits`` when given)."""
        if hi - lo < 2:  # (most users have one category: nothing to rank)
            if lo == hi:
                return {}
            ranked = ((-self._numbers[SCORES + lo], self._keys[lo]),)
        else:
            scores = self._numbers[SCORES + lo:SCORES + hi].tolist()
            keys = self._keys[lo:hi]
            if top is not None and len(scores) > top:
                # rank only what can make the top: the scores at or above the top-th largest
                # (sorting plain floats is far cheaper than sorting (score, key) pairs)
                least = sorted(scores, reverse=True)[top - 1]
                ranked = sorted([(-v, k) for v, k in zip(scores, keys) if v >= least])[:top]
            else:
                ranked = sorted(zip(map(neg, scores), keys))  # (-score, key)
        if digits is not None:
            scale = 10.0**digits  # round(x * 10^d) / 10^d: round(x, d) without its slow path
            f *= scale
            return {k: round(-v * f) / scale for v, k in ranked}
        return {k: -v * f for v, k in ranked}

    def category_scores(self, now: int) -> dict[str, float]:
        return self._scores(0, self._n_categories, self._decayed(now))

    def scores(self, now: int, frequency_scale: float = 50.0, recency_scale_s: float = 7 * 24 * 3600) -> dict:
        """Recency, frequency and engagement, each normalized to [0, 1] (what a reader
        of the profile document works out from ``last_seen``, ``counts`` and
        ``engagement``)."""
        age_s = max(0, now - (self.last_seen or now)) / 1000
        return {"recency": math.exp(-age_s / recency_scale_s), "frequency": 1 - math.exp(-sum(self.counts.values()) / frequency_scale),
                "engagement": self._engagement(self._decayed(now), frequency_scale)}

    def _engagement(self, f: float, scale: float = 50.0) -> float:
        """``1 − e^(−activity / scale)``, the decayed activity (``f``: see :meth:`_decayed`)."""
        activity = self._numbers[ACTIVITY] * f if self._counts else 0.0
        return 1 - math.exp(-activity / scale)

    def to_doc(self, now: int, top: int = 10) -> dict:
        """The profile as a frontend reads it (without the rule segments; see
        :func:`profile_value`): the affinities here at 6 decimals, which the blend takes
        its category affinities from, and to :data:`~pulse.state.schema.DOC_DIGITS`
        significant digits in the stored value."""
        n = self._numbers
        nc = self._n_categories
        seen = bool(self._counts)
        f = self._decayed(now)  # (one landmark for every table)
        return {
            "counts": self.counts,
            "first_seen": int(n[FIRST]) if seen else None,
            "last_seen": int(n[LAST]) if seen else None,
            "engagement": doc_number(self._engagement(f)),
            "dwell_mean_ms": round(n[DWELL_TOTAL] / n[DWELL_N]) if n[DWELL_N] else None,
            "categories": self._scores(0, nc, f, top, AFFINITY_DECIMALS),
            "items": self._scores(nc, len(self._keys), f, top, AFFINITY_DECIMALS),
        }


def profile_value(doc: dict) -> bytes:
    """The stored value of a profile document (:meth:`UserProfile.to_doc` with the rule
    segments): its affinities to :data:`~pulse.state.schema.DOC_DIGITS` significant digits.

    >>> profile_value({"counts": {"view": 1}, "categories": {"shoes": 0.123457}, "items": {}})
    b'{"counts":{"view":1},"categories":{"shoes":0.1235},"items":{}}'
    """
    return orjson.dumps({**doc, "categories": doc_affinities(doc["categories"]), "items": doc_affinities(doc["items"])})


def doc_affinities(scores: Mapping[str, float]) -> dict[str, float]:
    """:func:`~pulse.state.schema.doc_number` of each affinity of a profile document,
    which holds them at :data:`AFFINITY_DECIMALS` decimals, in a third less time (no
    decimal string made and read back per value: 0.75 -> 0.49 us an affinity).

    Such an affinity is the double nearest to a whole number ``m`` of millionths, and
    to round it to ``DOC_DIGITS`` significant digits is to round ``m`` to as many
    leading digits: the double nearest to the result in millionths is what
    ``doc_number`` reads back too. Only a tie (the digits dropped are 5, 50, 500, ...)
    turns on which side of ``m`` millionths the double lies; ties, and affinities of
    10^9 and more (where a double's error nears a millionth), go through ``doc_number``.

    >>> doc_affinities({"a": 14.996099, "b": 0.001234, "c": -3.499737, "d": 0.123450})
    {'a': 15.0, 'b': 0.001234, 'c': -3.5, 'd': 0.1235}
    """
    out = {}
    for key, y in scores.items():
        m = round(y * _MILLIONTHS)  # (exactly m: y is within half an ulp of m millionths)
        a = m if m >= 0 else -m
        if a >= _SIGNIFICANT:  # (else y has DOC_DIGITS digits or fewer: it is its own rounding)
            if a >= _EXACT:
                y = doc_number(y)
            else:
                unit = _POWERS[bisect_right(_POWERS, a) - DOC_DIGITS]  # of the last digit kept, in millionths
                kept, dropped = divmod(a, unit)
                if 2 * dropped == unit:
                    y = doc_number(y)
                else:
                    y = (kept + (2 * dropped > unit)) * unit / _MILLIONTHS  # (int / int: correctly rounded)
                    if m < 0:
                        y = -y
        out[key] = y
    return out
