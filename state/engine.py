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
``global_interval_s`` of event time (and ``global_min_events`` events), and at the end.

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

import orjson

from pulse.operators.events import Event
from pulse.operators.recommend import BlendConfig, Candidates, Rec, Scratch, Source, blend_parts
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


class UserRecState:
    """The engine's small per-user state (kept in a bounded LRU)."""

    __slots__ = ("recent", "seen", "purchased", "categories", "profile", "segment", "traits",
                 "anomaly", "recs_at", "recs_due", "recs_n", "last_ts")

    def __init__(self) -> None:
        self.recent: list[str] = []  # distinct items, most recent last
        self.seen: dict[str, None] = {}
        self.purchased: dict[str, None] = {}
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
        self._category_reasons: dict[str, str] = {}  # category -> "category:<c>"
        self.segmenter = Segmenter(c.segments)
        self.detector = AnomalyDetector(c.anomaly)
        self.users: OrderedDict[str, UserRecState] = OrderedDict()
        self.item_categories: dict[str, tuple[str, ...]] = {}
        self.clock = 0  # the largest event time seen
        self.events = 0
        self.events_flagged = 0
        self._due: list[tuple[int, str]] = []  # (due time, user) for debounced recs
        self._dirty_items: set[str] = set()
        self._dirty_categories: set[str] = set()
        self._global_at: Optional[int] = None
        self._global_events = 0
        self._stream_last = (0, 0)

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
            st = self.users[user_id] = UserRecState()
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
        if (due and due[0][0] <= clock) or self._global_at is None or (
            self.events - self._global_events >= self.config.global_min_events
        ):
            writes.extend(self.tick(clock))
        return writes

    def _learn_event(self, st: UserRecState, ev: Event, weight: float) -> None:
        item = ev.item_id
        if item is None:
            return
        self.index.add(item)
        category = ev.category
        if category:
            self.item_categories[item] = category
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
        seen = st.seen
        if item in seen:
            del seen[item]
        seen[item] = None
        if len(seen) > self.config.max_seen:
            del seen[next(iter(seen))]
        if ev.type == "purchase":
            st.purchased[item] = None
            if len(st.purchased) > self.config.max_seen:
                del st.purchased[next(iter(st.purchased))]

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
        :func:`~pulse.operators.recommend.blend_parts`). Trending-like parts offer the
        best ``2k`` of their cached ranking (items the user must not get are dropped
        later, by the blend, so they still set their kind's scale); co-visitation parts are
        the cached neighbour lists of the user's last few distinct items, newer ones
        counting more. Kinds without weight are left out."""
        weights = self.config.blend.weights
        depth = self.config.blend.k * 2
        c = Candidates()
        kinds, reasons, numbers, scores = c.kinds.append, c.reasons.append, c.numbers.append, c.scores.append
        factors, sizes, names = c.factors.append, c.sizes.append, c.kind_names

        def head(t: Trending, kind: str, reason: str, f: float) -> None:
            nums, stored = t.head_arrays(depth)
            if len(nums):
                if not names or names[-1] != kind:
                    names.append(kind)
                kinds(len(names) - 1)
                reasons(reason)
                numbers(nums)
                scores(stored)
                factors(f * t.factor(now))
                sizes(len(nums))

        if weights.get("trending", 0.0) > 0:
            head(self.trending, "trending", "trending", 1.0)
        if st.anomaly["flagged"]:
            return c
        if weights.get("co_visit", 0.0) > 0:
            gamma = self.config.recs_seed_recency
            f = 1.0
            cv = self.covisit
            lists, updates, refresh_after = cv._lists, cv._updates, cv.refresh_after
            known = self.index.numbers.get
            recent = st.recent
            kind = -1
            for k in range(len(recent) - 1, max(-1, len(recent) - 1 - self.config.recs_seed_items), -1):
                i = known(recent[k])
                if i is not None:
                    entry = lists[i] if i < len(lists) else None
                    if entry is None or updates[i] >= refresh_after:
                        entry = cv.ranked(i)
                    js, sc, reason = entry
                    if reason:
                        if kind < 0:
                            names.append("co_visit")
                            kind = len(names) - 1
                        kinds(kind)
                        reasons(reason)
                        numbers(js)
                        scores(sc)
                        factors(f)
                        sizes(len(js))
                f *= gamma
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
        for k, reason, js, sc, f in zip(c.kinds, c.reasons, c.numbers, c.scores, c.factors):
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
        return blend_parts(self._parts(st, now), self.config.blend, self.index.ids, exclude,
                           self.item_categories, self._scratch)

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
        """Writes that became due as event time reached ``now``."""
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
        return writes

    def flush(self) -> list[Write]:
        """Everything still pending (end of input)."""
        writes: list[Write] = []
        for _, u in sorted(self._due):
            st = self.users.get(u)
            if st is not None and st.recs_due is not None:
                writes.append(self._recs_write(u, st, max(st.last_ts, st.recs_at or 0)))
        self._due = []
        writes.extend(self.global_writes(self.clock))
        return writes

    def global_writes(self, now: int) -> list[Write]:
        self._global_at = now
        self._global_events = self.events
        keys = self.keys
        writes: list[Write] = [
            ZReplace(keys.trending, tuple((i, round(s, 6)) for i, s in self.trending.top(now, self.config.trending_size))),
        ]
        for cat in sorted(self._dirty_categories):
            writes.append(ZReplace(keys.category_trending(cat), tuple((i, round(s, 6)) for i, s in self.by_category[cat].top(now, 50))))
        for item in sorted(self._dirty_items):
            sim = self.covisit.similar(item, self.config.similar_size)
            top = sim[0][1] if sim else 1.0
            doc = [{"item_id": j, "score": round(s / top, 6)} for j, s in sim]
            writes.append(Put(keys.similar(item), orjson.dumps(doc)))
        self._dirty_items.clear()
        self._dirty_categories.clear()
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


def learn_many(engine: Engine, updates: Iterable[UserUpdate]) -> list[Write]:
    out: list[Write] = []
    for up in updates:
        out.extend(engine.learn_one(up))
    return out
