"""The recommendation engine: the global models and what it writes to Redis.

The engine is the dataflow's one shard of global state. It receives every accepted event
(with the user step's profile document and closed windows) and holds:

* :class:`~pulse.state.trending.Trending` popularity: global, per category, per segment;
* :class:`~pulse.state.covisit.CoVisitation` item-to-item co-visitation;
* the River models of :mod:`pulse.state.segments` and :mod:`pulse.state.anomaly`;
* an :class:`~pulse.state.covisit.ItemIndex` that numbers items, so that a user's
  candidates are gathered and blended as numpy arrays
  (:func:`~pulse.operators.recommend.blend_parts`);
* a bounded LRU of per-user recommendation state (recent items, exclusions, segment,
  anomaly flag, when recommendations were last written).

It turns all of that into :data:`~pulse.state.store.Write` values. Everything written
is a function of event time and of the events' order, never of the wall clock, so a
replay writes the same values every time.

Recommendations are debounced per user: refreshed at most once per ``recs_interval_s``
of event time; a user whose newer events were held back is refreshed as soon as the
engine's clock (the largest event time it has seen) passes the due time, and at the end
of the input. Global keys (trending, similar items, meta) are written once per
``global_interval_s`` of event time (and ``global_min_events`` events), the similar lists
and category trending spread over the events that follow (:meth:`Engine.global_writes`),
and at the end.

Example:

>>> from pulse.operators.events import Event
>>> eng = Engine(EngineConfig(recs_interval_s=0))
>>> writes = eng.learn_one(UserUpdate("u1", Event(user_id="u1", type="view", ts=1_000, item_id="a"), 1.0, None, ()))
>>> sorted(w.key for w in writes)
['pulse:item:{a}:similar', 'pulse:meta', 'pulse:segments', 'pulse:trending', 'pulse:user:{u1}:recs']
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Collection, Iterable, NamedTuple, Optional, Sequence

import numpy as np
import orjson

from pulse.operators.events import Event
from pulse.operators.recommend import BlendConfig, Candidates, Rec, Scratch, Source, blend_parts, warm_up
from pulse.operators.windows import WindowAgg
from pulse.state.anomaly import AnomalyConfig, AnomalyDetector
from pulse.state.covisit import CoVisitation, ItemIndex
from pulse.state.keys import SCHEMA_VERSION, KeySchema
from pulse.state.segments import SegmentConfig, Segmenter
from pulse.state.store import HashSet, Put, StreamAdd, Write, ZReplace
from pulse.state.trending import Trending


class UserUpdate(NamedTuple):
    """What the user step sends the engine for one user.

    ``event`` is None when only the profile or windows changed (end of input, idle
    timer); ``profile`` is the profile document when it is due; ``windows`` are the
    user's windows that closed."""

    user_id: str
    event: Optional[Event]
    weight: float
    profile: Optional[dict]
    windows: Sequence[WindowAgg]


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
    #: False only for offline evaluation, which asks for lists itself
    write_recs: bool = True
    global_interval_s: float = 5.0
    #: ... and only after this many events, so a fast replay of days of event time
    #: does not rewrite the global keys every few events (live runs also write them
    #: on a wall-clock timer)
    global_min_events: int = 2_000
    trending_size: int = 100
    similar_size: int = 20
    user_ttl_s: int = 30 * 86_400
    max_users: int = 1_000_000
    max_recent: int = 50
    max_seen: int = 2_000


class ItemSet:
    """An insertion-ordered set of item ids with their item numbers also in an int64
    array (what the compiled blend excludes by). Bounded: past ``capacity`` items the
    oldest tenth is dropped at once (the array is rebuilt then, rarely).

    >>> s = ItemSet(capacity=10)
    >>> s.add("a", 4); s.add("b", 7); s.add("a", 4)
    >>> list(s), s.numbers().tolist(), "b" in s
    (['b', 'a'], [4, 7], True)
    """

    __slots__ = ("ids", "array", "size", "capacity")

    def __init__(self, capacity: int = 2_000) -> None:
        self.ids: dict[str, int] = {}  # id -> number, oldest first
        self.array = _NO_NUMBERS
        self.size = 0
        self.capacity = capacity

    def __contains__(self, item: object) -> bool:
        return item in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return iter(self.ids)

    def add(self, item: str, number: int) -> None:
        """Add ``item`` (or make it the newest)."""
        ids = self.ids
        if item in ids:
            del ids[item]
            ids[item] = number
            return
        ids[item] = number
        if len(ids) > self.capacity:
            for old in list(ids)[: max(1, self.capacity // 10)]:
                del ids[old]
            self.array = np.fromiter(ids.values(), dtype=np.int64, count=len(ids))
            self.size = len(ids)
            return
        if self.size == len(self.array):
            grown = np.empty(max(8, 2 * self.size), dtype=np.int64)
            grown[: self.size] = self.array
            self.array = grown
        self.array[self.size] = number
        self.size += 1

    def numbers(self) -> np.ndarray:
        """The items' numbers (a view: do not keep it)."""
        return self.array[: self.size]


_NO_NUMBERS = np.zeros(0, dtype=np.int64)
#: categories per item the diversity cap counts (an item's first ones)
MAX_ITEM_CATEGORIES = 8


class UserRecState:
    """The engine's small per-user state (kept in a bounded LRU)."""

    __slots__ = ("recent", "seen", "purchased", "categories", "profile", "segment", "traits",
                 "anomaly", "recs_at", "recs_due", "recs_n", "last_ts")

    def __init__(self, max_seen: int = 2_000) -> None:
        self.recent: list[str] = []  # distinct items, most recent last
        self.seen = ItemSet(max_seen)  # items interacted with
        self.purchased = ItemSet(max_seen)
        self.categories: list[tuple[str, float]] = []
        self.profile: Optional[dict] = None
        self.segment: Optional[str] = None
        self.traits: list[str] = []
        self.anomaly: dict = {"score": 0.0, "flagged": False}
        self.recs_at: Optional[int] = None
        self.recs_due: Optional[int] = None
        self.recs_n = 0
        self.last_ts = 0


_NO_USER = UserRecState()  # read-only stand-in for users the engine does not know


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recomm_id(user_id: str, ts: int, n: int) -> str:
    """A fresh id for every list, yet the same on every replay."""
    h = hashlib.blake2b(f"{user_id}\x00{ts}\x00{n}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Engine:
    """Global models plus per-user recommendation state; see the module docstring."""

    #: a round of global writes spreads its similar lists and category trending over
    #: this share of the events the previous round took (see :meth:`global_writes`)
    GLOBAL_SPREAD = 0.5
    # defaults for engines restored from snapshots taken before rounds were spread
    _gq: list = []
    _gq_pos = _gq_start = 0
    _gq_span = 1

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
        self._scratch = Scratch()  # work arrays of the blend
        warm_up()
        self._category_reasons: dict[str, str] = {}  # category -> "category:<c>"
        self._seed_factors = [c.recs_seed_recency**k for k in range(c.recs_seed_items)]
        self.segmenter = Segmenter(c.segments)
        self.detector = AnomalyDetector(c.anomaly)
        self.users: OrderedDict[str, UserRecState] = OrderedDict()
        self.item_categories: dict[str, tuple[str, ...]] = {}
        self._category_numbers: dict[str, int] = {}  # category -> number (the compiled cap's)
        self._item_cats = np.full((64, MAX_ITEM_CATEGORIES), -1, dtype=np.int64)  # item number -> its numbers
        self.clock = 0  # the largest event time seen
        self.events = 0
        self.events_flagged = 0
        self._due: list[tuple[int, str]] = []  # (due time, user) for debounced recs
        self._dirty_items: set[str] = set()
        self._dirty_categories: set[str] = set()
        self._global_at: Optional[int] = None
        self._global_events = 0
        # a round of global writes in progress (see global_writes): (is a category, name)
        # still to write from _gq_pos on, a share per event over _gq_span events
        self._gq: list[tuple[bool, str]] = []
        self._gq_pos = 0
        self._gq_start = 0
        self._gq_span = 1
        self._stream_last = (0, 0)

    def __getstate__(self) -> dict:
        # (the blend's work arrays are not state: a snapshot leaves them out)
        return {**self.__dict__, "_scratch": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scratch = Scratch(len(self.index))

    def _number_categories(self, number: int, category: Sequence[str]) -> None:
        # the compiled category cap reads categories as numbers: a row per item number,
        # its first MAX_ITEM_CATEGORIES categories, padded with -1
        cats = self._item_cats
        if number >= len(cats):
            grown = np.full((max(number + 1, 2 * len(cats)), MAX_ITEM_CATEGORIES), -1, dtype=np.int64)
            grown[: len(cats)] = cats
            cats = self._item_cats = grown
        row = [self._category_numbers.setdefault(c, len(self._category_numbers)) for c in category]
        row = row[:MAX_ITEM_CATEGORIES]
        cats[number] = -1
        cats[number, : len(row)] = row

    def _stream_id(self) -> str:
        # Stream ids must grow; derive them from event time so a replay reuses them
        # (Redis then refuses the duplicates instead of appending them twice).
        ms, seq = self._stream_last
        self._stream_last = (self.clock, 0) if self.clock > ms else (ms, seq + 1)
        return f"{self._stream_last[0]}-{self._stream_last[1]}"

    # -- learning ----------------------------------------------------------------
    def user(self, user_id: str) -> UserRecState:
        st = self.users.get(user_id)
        if st is None:
            st = self.users[user_id] = UserRecState(self.config.max_seen)
            if len(self.users) > self.config.max_users:
                self.users.popitem(last=False)
        else:
            self.users.move_to_end(user_id)
        return st

    def learn_one(self, up: UserUpdate) -> list[Write]:
        """Fold in one update; returns the writes it causes."""
        writes: list[Write] = []
        st = self.user(up.user_id)
        ev = up.event
        profile_changed = up.profile is not None
        if up.profile is not None:
            st.profile = up.profile
            st.categories = list(up.profile.get("categories", {}).items())
        for window in up.windows:
            profile_changed |= self._learn_window(up.user_id, st, window, writes)
        if ev is not None:
            self.events += 1
            if ev.ts > self.clock:
                self.clock = ev.ts
            st.last_ts = max(st.last_ts, ev.ts)
            self._learn_event(st, ev, up.weight)
            if self.config.write_recs:
                self._schedule_recs(up.user_id, st, ev.ts, writes)
        if profile_changed and st.profile is not None:
            writes.append(self._profile_write(up.user_id, st))
        clock, due = self.clock, self._due
        if (due and due[0][0] <= clock) or self._global_at is None or self._gq_pos < len(self._gq) or (
            self.events - self._global_events >= self.config.global_min_events
        ):
            writes.extend(self.tick(clock))
        return writes

    def _learn_event(self, st: UserRecState, ev: Event, weight: float) -> None:
        item = ev.item_id
        if item is None:
            return
        number = self.index.add(item)
        category = ev.category
        if category and self.item_categories.get(item) != category[:MAX_ITEM_CATEGORIES]:
            self.item_categories[item] = category[:MAX_ITEM_CATEGORIES]
            self._number_categories(number, category)
        flagged = st.anomaly["flagged"]
        if not flagged and weight > 0:
            # Flagged users do not feed the global models.
            ts = ev.ts
            self.trending.learn_one(item, weight, ts)
            for cat in category:
                t = self.by_category.get(cat)
                if t is None:
                    t = self.by_category[cat] = Trending(self.config.trending_half_life_s, numbers=self.index.numbers)
                t.learn_one(item, weight, ts)
                self._dirty_categories.add(cat)
            if st.segment is not None:
                t = self.by_segment.get(st.segment)
                if t is None:
                    t = self.by_segment[st.segment] = Trending(self.config.trending_half_life_s, numbers=self.index.numbers)
                t.learn_one(item, weight, ts)
            self._dirty_items.update(self.covisit.learn_one(st.recent, item, weight, ts))
        elif flagged:
            self.events_flagged += 1
        if weight > 0:
            recent = st.recent
            if not recent or recent[-1] != item:
                if item in recent:
                    recent.remove(item)  # keep items distinct: a revisit moves it to the end
                recent.append(item)
                if len(recent) > self.config.max_recent:
                    del recent[0]
        st.seen.add(item, number)
        if ev.type == "purchase":
            st.purchased.add(item, number)

    def _learn_window(self, user_id: str, st: UserRecState, window: WindowAgg, writes: list[Write]) -> bool:
        changed = False
        if window.kind == self.config.anomaly.window:
            previous = st.anomaly
            was = previous["flagged"]
            verdict = self.detector.learn_one(window, previous)
            st.anomaly = verdict
            changed = verdict != previous
            if verdict["flagged"] and not was:
                writes.append(
                    StreamAdd(
                        self.keys.anomalies,
                        self._stream_id(),
                        (("user_id", user_id), ("score", f"{verdict['score']:.6f}"), ("reason", verdict["reason"]),
                         ("window_end", _iso(window.end_ms))),
                    )
                )
            if verdict["flagged"] != was and self.config.write_recs and st.recs_at is not None:
                # Flagged users fall back to non-personalized lists (and back again when
                # cleared): replace the list they have now rather than at their next event.
                writes.append(self._recs_write(user_id, st, max(st.last_ts, st.recs_at)))
        if window.kind == self.config.segments.window:
            segment, traits = self.segmenter.learn_one(window, st.categories)
            if segment != st.segment or traits != st.traits:
                st.segment, st.traits = segment, traits
                changed = True
        return changed

    # -- recommendations -----------------------------------------------------------
    def _parts(self, st: UserRecState, now: int) -> Candidates:
        """The candidate parts for one user, in item numbers (see
        :func:`~pulse.operators.recommend.blend_parts`). Co-visitation parts are the
        cached neighbour lists of the user's last few distinct items (seeds), newer ones
        counting more; trending-like parts offer the best ``2k`` of their cached ranking
        (items the user must not get are dropped later, by the blend, so they still set
        their kind's scale). Kinds without weight are left out."""
        weights = self.config.blend.weights
        depth = self.config.blend.k * 2
        cv = self.covisit
        c = Candidates(cv.lists)

        def head(t: Trending, kind: str, reason: str, f: float) -> None:
            nums, stored = t.head_arrays(depth)
            if len(nums):
                c.add(kind, reason, nums, stored, f * t.factor(now))

        if weights.get("trending", 0.0) > 0:
            head(self.trending, "trending", "trending", 1.0)
        if st.anomaly["flagged"]:
            return c
        if weights.get("co_visit", 0.0) > 0 and st.recent:
            # the last few distinct items, newest first, with their recency factors
            recent = st.recent
            n_seeds = self.config.recs_seed_items
            nums = list(map(self.index.numbers.get, recent[-1:-n_seeds - 1:-1]))
            factors = self._seed_factors
            built, updates, refresh_after, n_built = cv._built, cv.table.updates, cv.refresh_after, len(cv._built)
            seeds, seed_factors = c.seeds, c.seed_factors
            for i, f in zip(nums, factors):
                if i is not None and i < n_built:
                    if not built[i] or updates[i] >= refresh_after:  # (CoVisitation.fresh, inlined)
                        cv._build(i)  # (an empty list adds nothing)
                    seeds.append(i)
                    seed_factors.append(f)
            c.seed_reasons = list(map(cv.reasons.__getitem__, seeds))
        # category affinity × trending within the category
        if weights.get("category", 0.0) > 0:
            for cat, affinity in st.categories[:3]:
                t = self.by_category.get(cat)
                if t is not None and affinity > 0:
                    reason = self._category_reasons.get(cat)
                    if reason is None:
                        reason = self._category_reasons[cat] = f"category:{cat}"
                    head(t, "category", reason, affinity)
        if st.segment is not None and weights.get("segment", 0.0) > 0:
            t = self.by_segment.get(st.segment)
            if t is not None:
                head(t, "segment", "segment", 1.0)
        return c

    def candidates(self, st: UserRecState, now: int, exclude: Collection[str] = ()) -> list[Source]:
        """Candidate sources for one user (see :mod:`pulse.operators.recommend`), as
        dicts, for inspection: :meth:`recommend` blends the same parts, in item numbers.
        Each part's scores are already multiplied by its factor. Nothing is excluded here
        (``exclude`` is ignored): the blend drops excluded items from every source."""
        ids = self.index.ids
        sources: dict[str, Source] = {}
        c = self._parts(st, now)
        seed_parts = [(0, reason, *c.pool.get(i), f) for i, reason, f in zip(c.seeds, c.seed_reasons, c.seed_factors)]
        for k, reason, js, sc, f in seed_parts + list(zip(c.kinds, c.reasons, c.numbers, c.scores, c.factors)):
            kind = c.kind_names[k]
            part = {ids[j]: s * f for j, s in zip(js.tolist(), sc.tolist())}
            src = sources.get(kind)
            if src is None:
                src = sources[kind] = Source(kind, {}, [])
            for j, s in part.items():
                src.scores[j] = src.scores.get(j, 0.0) + s
            src.parts.append((reason, part, 1.0))
        return list(sources.values())

    def recommend(self, user_id: str, now: Optional[int] = None, exclude_seen: Optional[bool] = None) -> list[Rec]:
        """The user's current list (``exclude_seen`` overrides the configuration)."""
        st = self.users.get(user_id) or _NO_USER
        now = self.clock if now is None else now
        if exclude_seen is None:
            exclude_seen = self.config.blend.exclude_seen
        exclude = st.seen if exclude_seen else st.purchased
        cats = self.item_categories
        return blend_parts(self._parts(st, now), self.config.blend, self.index.ids, (), cats, self._scratch,
                           exclude.numbers(), (self._item_cats, len(self._category_numbers)))

    def _schedule_recs(self, user_id: str, st: UserRecState, ts: int, writes: list[Write]) -> None:
        interval = int(self.config.recs_interval_s * 1000)
        if st.recs_at is None or ts - st.recs_at >= interval:
            writes.append(self._recs_write(user_id, st, ts))
        elif st.recs_due is None:
            st.recs_due = st.recs_at + interval
            heapq.heappush(self._due, (st.recs_due, user_id))

    def _recs_write(self, user_id: str, st: UserRecState, now: int) -> Put:
        st.recs_at = now
        st.recs_due = None
        st.recs_n += 1
        recs = self.recommend(user_id, now)
        doc = {
            "user_id": user_id,
            "recomm_id": recomm_id(user_id, now, st.recs_n),
            "generated_at": _iso(now),
            "segment": st.segment,
            "items": [{"item_id": r.item_id, "score": r.score, "reason": r.reason} for r in recs],
        }
        return Put(self.keys.recs(user_id), orjson.dumps(doc), self.config.user_ttl_s)

    def _profile_write(self, user_id: str, st: UserRecState) -> Put:
        doc = {
            "user_id": user_id,
            **(st.profile or {}),
            "segment": st.segment,
            "segment_traits": st.traits,
            "anomaly": st.anomaly,
        }
        return Put(self.keys.profile(user_id), orjson.dumps(doc), self.config.user_ttl_s)

    # -- time ----------------------------------------------------------------------
    def tick(self, now: int) -> list[Write]:
        """Writes that became due as event time reached ``now``: debounced
        recommendations, a new round of global writes, or this event's share of the
        round in progress."""
        writes: list[Write] = []
        due = self._due
        while due and due[0][0] <= now:
            _, u = heapq.heappop(due)
            st = self.users.get(u)
            if st is not None and st.recs_due is not None:
                writes.append(self._recs_write(u, st, st.recs_due))
        if self._global_at is None or (
            now - self._global_at >= self.config.global_interval_s * 1000
            and self.events - self._global_events >= self.config.global_min_events
        ):
            writes.extend(self.global_writes(now))
        elif self._gq_pos < len(self._gq):
            writes.extend(self._global_share(now))
        return writes

    def flush(self) -> list[Write]:
        """Everything still pending (end of input)."""
        writes: list[Write] = []
        for _, u in sorted(self._due):
            st = self.users.get(u)
            if st is not None and st.recs_due is not None:
                writes.append(self._recs_write(u, st, max(st.last_ts, st.recs_at or 0)))
        self._due = []
        writes.extend(self.global_writes(self.clock, spread=False))
        return writes

    def global_writes(self, now: int, spread: bool = True) -> list[Write]:
        """Start a round of global writes as of ``now``: trending, segments and meta at
        once; the trending of every category and the similar list of every item that
        changed since the last round are queued (with what the last round left), and
        written a share per event over the next ``GLOBAL_SPREAD`` × (the last round's
        events) events, so no single event pays for them all (with 2,000 changed items
        that took 100-300 ms at once). ``spread=False`` writes them all now (the end of
        the input, an idle live run). The spreading counts events, never the wall
        clock, so a replay writes the same values every time."""
        span = max(1, int((self.events - self._global_events) * self.GLOBAL_SPREAD)) if spread else 1
        self._global_at = now
        self._global_events = self.events
        keys = self.keys
        writes: list[Write] = [
            ZReplace(keys.trending, tuple((i, round(s, 6)) for i, s in self.trending.top(now, self.config.trending_size))),
        ]
        cats, items = self._dirty_categories, self._dirty_items
        for is_cat, name in self._gq[self._gq_pos:]:  # what the last round did not get to
            (cats if is_cat else items).add(name)
        self._gq = [(True, c) for c in sorted(cats)] + [(False, i) for i in sorted(items)]
        self._gq_pos, self._gq_start, self._gq_span = 0, self.events, span
        cats.clear()
        items.clear()
        writes.extend(self._global_share(now))
        writes.append(Put(keys.segments, orjson.dumps(self.segmenter.summary())))
        writes.append(
            HashSet(
                keys.meta,
                (
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("events_processed", str(self.events)),
                    ("last_event_time", _iso(self.clock) if self.clock else ""),
                    ("last_event_ms", str(self.clock)),
                    ("users", str(len(self.users))),
                    ("items", str(len(self.trending))),
                    ("anomalies_flagged", str(self.detector.flags)),
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
        keys, by_category, similar, size = self.keys, self.by_category, self.covisit.similar, self.config.similar_size
        writes: list[Write] = []
        for is_cat, name in queue[pos:end]:
            if is_cat:
                writes.append(ZReplace(keys.category_trending(name), tuple((i, round(s, 6)) for i, s in by_category[name].top(now, 50))))
            else:
                sim = similar(name, size)
                top = sim[0][1] if sim else 1.0
                doc = [{"item_id": j, "score": round(s / top, 6)} for j, s in sim]
                writes.append(Put(keys.similar(name), orjson.dumps(doc)))
        if end == total:
            self._gq, self._gq_pos = [], 0
        else:
            self._gq_pos = end
        return writes


def learn_many(engine: Engine, updates: Iterable[UserUpdate]) -> list[Write]:
    out: list[Write] = []
    for up in updates:
        out.extend(engine.learn_one(up))
    return out
