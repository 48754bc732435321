"""The model step: the item-side models, learned from every accepted event.

The engine receives an :class:`ItemUpdate` for every accepted event from the step that
keeps users' lists (:mod:`pulse.state.recs`, keyed by user), applies them in canonical
order (see :mod:`pulse.operators.order`) and holds:

* :class:`~pulse.state.trending.Trending` popularity: global, per category, per segment;
* :class:`~pulse.state.covisit.CoVisitation` item-to-item co-visitation;
* an :class:`~pulse.state.covisit.ItemIndex` that numbers items, so that lists and
  heads are numpy arrays a blend gathers cheaply (:class:`~pulse.state.view.LocalView`).

It keeps nothing per user: each update brings what the models need of its user (the
recent distinct items co-visitation pairs the new item with, the segment, whether the
user is flagged, which keeps the user out of the models). The River models run in a
step of their own (:mod:`pulse.state.river_models`). Everything is a function of event
time and of the events' order, never of the wall clock, so a replay learns the same
models whatever the shape of the cluster.

Global keys (trending, similar items, meta) are written once per ``global_interval_s``
of event time (and ``global_min_events`` events), the similar lists and category
trending spread over the events that follow (:meth:`Engine.global_writes`), and at the
end.

Example:

>>> eng = Engine(EngineConfig())
>>> writes = eng.learn_one(ItemUpdate("u1", True, "a", (), 1_000, 1.0, (), None, False))
>>> sorted(w.key for w in writes)
['pulse:item:{a}:nbrs', 'pulse:item:{a}:similar', 'pulse:meta', 'pulse:trending']
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple, Optional, Sequence

import orjson

from pulse.operators.events import Event
from pulse.operators.recommend import BlendConfig
from pulse.operators.windows import WindowSummary
from pulse.state.anomaly import AnomalyConfig
from pulse.state.covisit import CoVisitation, ItemIndex
from pulse.state.keys import SCHEMA_VERSION, KeySchema
from pulse.state.river_models import RiverConfig
from pulse.state.segments import SegmentConfig
from pulse.state.store import HashSet, Put, Write, ZReplace
from pulse.state.trending import Trending
from pulse.state.view import MAX_ITEM_CATEGORIES, ItemCategories


class ModelUpdate(NamedTuple):
    """What the user step sends on for one accepted event: its item, categories, event
    time, weight and position (partition ``src``, index ``seq``), summaries of the user's
    windows that closed, of the kinds a model learns from (:attr:`EngineConfig.model_windows`),
    the user's strongest categories when the profile changed (else None), and the bot
    rules' verdict when it changed at this event (:mod:`pulse.state.bots`: the reason, or
    "" when cleared; else None). ``event`` is False when only windows closed (end of
    input, an idle user), and for a ``consent: false`` record; ``forget`` says the user
    is forgotten here (:meth:`forgetting`). Plain values, not the :class:`Event`: it
    crosses processes."""

    user_id: str
    event: bool
    item_id: Optional[str]
    category: tuple[str, ...]
    ts: int
    weight: float
    windows: Sequence[WindowSummary]
    src: str = ""
    seq: int = -1
    purchase: bool = False
    affinities: Optional[tuple[tuple[str, float], ...]] = None
    bot: Optional[str] = None
    forget: bool = False
    #: a live run freed the user's state (idle for ``live_idle_s``): the River step
    #: lets go of the user too
    evicted: bool = False

    @classmethod
    def of(cls, ev: Event, weight: float, windows: Sequence[WindowSummary],
           affinities: Optional[tuple[tuple[str, float], ...]] = None, bot: Optional[str] = None) -> "ModelUpdate":
        return cls(ev.user_id, True, ev.item_id, ev.category, ev.ts, weight, windows, ev.src, ev.seq,
                   ev.type == "purchase", affinities, bot)

    @classmethod
    def closing(cls, user_id: str, windows: Sequence[WindowSummary], bot: Optional[str] = None,
                evicted: bool = False) -> "ModelUpdate":
        return cls(user_id, False, None, (), 0, 0.0, windows, bot=bot, evicted=evicted)

    @classmethod
    def forgetting(cls, ev: Event) -> "ModelUpdate":
        """The user is to be forgotten at ``ev`` (:mod:`pulse.state.privacy`): a ``forget``
        event (an accepted event), or a ``consent: false`` one (``ev.consent`` False:
        accounted for as its dead letter)."""
        return cls(ev.user_id, ev.consent, None, (), ev.ts, 0.0, (), ev.src, ev.seq, forget=True)

    @property
    def needs_verdict(self) -> bool:
        """Whether the River step has a say on this update (and the list step waits for
        it): windows closed, the bot rules' verdict changed, the user is forgotten or evicted."""
        return bool(self.windows) or self.bot is not None or self.forget or self.evicted


class ItemUpdate(NamedTuple):
    """What the model step learns from one accepted event: the item, its categories,
    event time and weight, and of its user the recent distinct items before this one
    (oldest first), the segment, and whether the user is flagged (a flagged user's
    events do not feed the models). ``new_flag`` counts a user flagged at this update,
    ``new_user`` a user's first update. ``event`` is False for an update without an
    event (a user's last windows closed: only ``new_flag`` may count)."""

    user_id: str
    event: bool
    item_id: Optional[str]
    category: tuple[str, ...]
    ts: int
    weight: float
    recent: tuple[str, ...]
    segment: Optional[str]
    flagged: bool
    new_flag: bool = False
    new_user: bool = False
    src: str = ""
    seq: int = -1


@dataclass(frozen=True)
class EngineConfig:
    keys: KeySchema = field(default_factory=KeySchema)
    blend: BlendConfig = field(default_factory=BlendConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    trending_half_life_s: float = 86_400.0
    covisit_half_life_s: float = 30 * 86_400.0
    covisit_window: int = 10
    covisit_recency: float = 0.9
    covisit_neighbours: int = 100
    covisit_alpha: float = 0.7
    covisit_beta: float = 0.3
    #: how many of the user's recent items seed co-visitation candidates, and how much
    #: each step back in the user's history counts
    recs_seed_items: int = 8
    recs_seed_recency: float = 0.9
    recs_interval_s: float = 1.0
    global_interval_s: float = 5.0
    #: ... and only after this many events, so a fast replay of days of event time
    #: does not rewrite the global keys every few events (live runs also write them
    #: on a wall-clock timer)
    global_min_events: int = 2_000
    trending_size: int = 100
    similar_size: int = 20
    #: retention of each kind of per-user key (seconds; pulse:user:{<id>}:profile,
    #: :recs, :segment, :events)
    profile_ttl_s: int = 30 * 86_400
    recs_ttl_s: int = 30 * 86_400
    verdict_ttl_s: int = 30 * 86_400
    events_ttl_s: int = 30 * 86_400
    max_seen: int = 2_000

    @property
    def model_windows(self) -> frozenset:
        """The window kinds the models learn from (the user step sends only those)."""
        return frozenset((self.segments.window, self.anomaly.window))

    @property
    def river(self) -> RiverConfig:
        return RiverConfig(self.segments, self.anomaly, self.global_interval_s)


def recomm_id(user_id: str, ts: int, n: int) -> str:
    """A fresh id for every list, yet the same on every replay: 96 bits of a hash as 16
    base64url characters (a first collision is expected after about 2^48 lists; a UUID's text took
    36 characters in every user's list).

    >>> recomm_id("u1", 1_000, 1)
    'NHm-5r0aFowEMaJK'
    """
    return base64.urlsafe_b64encode(hashlib.blake2b(f"{user_id}\x00{ts}\x00{n}".encode(), digest_size=12).digest()).decode()


#: the last day :func:`iso_ms` formatted, and its date (documents of one day share it)
_iso_day: tuple[Optional[int], str] = (None, "")


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds.

    >>> iso_ms(1_767_571_200_123), iso_ms(1_767_657_599_999)
    ('2026-01-05T00:00:00.123Z', '2026-01-05T23:59:59.999Z')
    """
    global _iso_day
    day, rest = divmod(ms, 86_400_000)
    cached, date = _iso_day
    if day != cached:
        # (only the date needs the calendar; a UTC day is always 86,400 s: no leap seconds in epoch time)
        date = datetime.fromtimestamp(day * 86_400, tz=timezone.utc).strftime("%Y-%m-%dT")
        _iso_day = (day, date)
    seconds, milli = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{date}{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


class Engine:
    """The item-side models; see the module docstring."""

    #: a round of global writes spreads its similar lists and category trending over
    #: this share of the events the previous round took (see :meth:`global_writes`)
    GLOBAL_SPREAD = 0.5

    def __init__(self, config: EngineConfig = EngineConfig()) -> None:
        self.config = config
        c = config
        self.keys = c.keys
        self.index = ItemIndex()  # item id <-> number, shared by the models' arrays
        self.trending = Trending(c.trending_half_life_s, numbers=self.index.numbers)
        self.by_category: dict[str, Trending] = {}
        self.by_segment: dict[str, Trending] = {}
        self.covisit = CoVisitation(c.covisit_half_life_s, c.covisit_window, c.covisit_recency, c.covisit_neighbours,
                                    c.covisit_alpha, c.covisit_beta, index=self.index)
        self.item_categories: dict[str, tuple[str, ...]] = {}
        self.categories = ItemCategories()  # by item number, for the blend's category cap
        #: held while the models change, and by blends that read them from other
        #: worker threads (the compiled kernels release the GIL)
        self.lock = threading.Lock()
        self.clock = 0  # the largest event time seen
        self.events = 0
        self.events_flagged = 0
        self.flags = 0  # users newly flagged
        self.users = 0  # users' first updates
        self._dirty_items: set[str] = set()
        self._dirty_categories: set[str] = set()
        self._dirty_segments: set[str] = set()
        self._global_at: Optional[int] = None
        self._global_events = 0
        # a round of global writes in progress (see global_writes): (kind, name) still
        # to write from _gq_pos on, a share per event over _gq_span events
        self._gq: list[tuple[int, str]] = []
        self._gq_pos = 0
        self._gq_start = 0
        self._gq_span = 1

    def __getstate__(self) -> dict:
        # (the lock is not state)
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    @property
    def global_due(self) -> bool:
        """Whether events arrived since the last round of global writes."""
        return self._global_at is not None and self.events > self._global_events

    # -- learning ----------------------------------------------------------------
    def learn_one(self, up: ItemUpdate) -> list[Write]:
        """Fold in one update; returns the writes it causes."""
        self.flags += up.new_flag
        self.users += up.new_user
        if up.event:
            self.events += 1
            if up.ts > self.clock:
                self.clock = up.ts
            self._learn_event(up)
        if self._global_at is None or self._gq_pos < len(self._gq) or (
            self.events - self._global_events >= self.config.global_min_events
        ):
            return self.tick(self.clock)
        return []

    def _learn_event(self, up: ItemUpdate) -> None:
        item, weight = up.item_id, up.weight
        if item is None:
            return
        number = self.index.add(item)
        category = up.category
        if category and self.item_categories.get(item) != category[:MAX_ITEM_CATEGORIES]:
            self.item_categories[item] = category[:MAX_ITEM_CATEGORIES]
            self.categories.set(number, category)
        flagged = up.flagged
        if not flagged and weight > 0:
            # Flagged users do not feed the global models.
            ts = up.ts
            self.trending.learn_one(item, weight, ts)
            for cat in category:
                t = self.by_category.get(cat)
                if t is None:
                    t = self.by_category[cat] = Trending(self.config.trending_half_life_s, numbers=self.index.numbers)
                t.learn_one(item, weight, ts)
                self._dirty_categories.add(cat)
            segment = up.segment
            if segment is not None:
                t = self.by_segment.get(segment)
                if t is None:
                    t = self.by_segment[segment] = Trending(self.config.trending_half_life_s, numbers=self.index.numbers)
                t.learn_one(item, weight, ts)
                self._dirty_segments.add(segment)
            self._dirty_items.update(self.covisit.learn_one(up.recent, item, weight, ts))
        elif flagged:
            self.events_flagged += 1

    # -- time ----------------------------------------------------------------------
    def tick(self, now: int) -> list[Write]:
        """Writes that became due as event time reached ``now``: a new round of global
        writes, or this event's share of the round in progress."""
        if self._global_at is None or (
            now - self._global_at >= self.config.global_interval_s * 1000
            and self.events - self._global_events >= self.config.global_min_events
        ):
            return self.global_writes(now)
        if self._gq_pos < len(self._gq):
            return self._global_share(now)
        return []

    def flush(self) -> list[Write]:
        """Everything still pending (end of input)."""
        return self.global_writes(self.clock, spread=False)

    def global_writes(self, now: int, spread: bool = True) -> list[Write]:
        """Start a round of global writes as of ``now``: trending, segments and meta at
        once; the trending of every category and segment and the neighbour lists of
        every item that changed since the last round are queued (with what the last
        round left), and written a share per event over the next ``GLOBAL_SPREAD`` ×
        (the last round's events) events, so no single event pays for them all (with
        2,000 changed items that took 100-300 ms at once). ``spread=False`` writes them
        all now (the end of the input, an idle live run). The spreading counts events,
        never the wall clock, so a replay writes the same values every time."""
        span = max(1, int((self.events - self._global_events) * self.GLOBAL_SPREAD)) if spread else 1
        self._global_at = now
        self._global_events = self.events
        keys = self.keys
        writes: list[Write] = [
            ZReplace(keys.trending, tuple((i, round(s, 6)) for i, s in self.trending.top(now, self.config.trending_size))),
        ]
        dirty = (self._dirty_categories, self._dirty_segments, self._dirty_items)
        for kind, name in self._gq[self._gq_pos:]:  # what the last round did not get to
            dirty[kind].add(name)
        self._gq = [(kind, name) for kind in (_CATEGORY, _SEGMENT, _ITEM) for name in sorted(dirty[kind])]
        self._gq_pos, self._gq_start, self._gq_span = 0, self.events, span
        for names in dirty:
            names.clear()
        writes.extend(self._global_share(now))
        writes.append(
            HashSet(
                keys.meta,
                (
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("events_processed", str(self.events)),
                    ("last_event_time", iso_ms(self.clock) if self.clock else ""),
                    ("last_event_ms", str(self.clock)),
                    ("users", str(self.users)),
                    ("items", str(len(self.trending))),
                    ("anomalies_flagged", str(self.flags)),
                ),
            )
        )
        return writes

    def global_rest(self, now: int) -> list[Write]:
        """All that the round in progress has still to write, now."""
        self._gq_span = 1
        return self._global_share(now)

    def _global_share(self, now: int) -> list[Write]:
        """The round's writes due by this event: after ``k`` events of a round spread
        over ``span`` events, the first ``ceil(total·(k+1)/span)`` of its queue."""
        queue, pos = self._gq, self._gq_pos
        total = len(queue)
        k = self.events - self._gq_start + 1
        end = total if k >= self._gq_span else min(total, -(-total * k // self._gq_span))
        if end <= pos:
            return []
        keys = self.keys
        writes: list[Write] = []
        for kind, name in queue[pos:end]:
            if kind == _CATEGORY:
                top = self.by_category[name].top(now, 50)
                writes.append(ZReplace(keys.category_trending(name), tuple((i, round(s, 6)) for i, s in top)))
            elif kind == _SEGMENT:
                top = self.by_segment[name].top(now, 50)
                writes.append(ZReplace(keys.segment_trending(name), tuple((i, round(s, 6)) for i, s in top)))
            else:
                writes.extend(self._item_writes(name))
        if end == total:
            self._gq, self._gq_pos = [], 0
        else:
            self._gq_pos = end
        return writes

    def _item_writes(self, item: str) -> list[Write]:
        """An item's public similar list (scores relative to the best) and the list the
        blend reads in other processes (see :class:`~pulse.state.view.RemoteView`)."""
        ranked = self.covisit.similar(item, self.covisit.list_size)
        top = ranked[0][1] if ranked else 1.0
        cats = self.item_categories
        similar = [{"item_id": j, "score": round(s / top, 6)} for j, s in ranked[: self.config.similar_size]]
        nbrs = {"c": cats.get(item, ()), "n": [(j, s, cats.get(j, ())) for j, s in ranked]}
        return [Put(self.keys.similar(item), orjson.dumps(similar)), Put(self.keys.nbrs(item), orjson.dumps(nbrs))]


_CATEGORY, _SEGMENT, _ITEM = 0, 1, 2
