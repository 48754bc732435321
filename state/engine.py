"""The model step: the global models, learned from every accepted event.

The engine is the dataflow's one shard of global state. It receives every accepted event
(with the user's closed windows), applies them in canonical order (see
:mod:`pulse.operators.order`) and holds:

* :class:`~pulse.state.trending.Trending` popularity: global, per category, per segment;
* :class:`~pulse.state.covisit.CoVisitation` item-to-item co-visitation;
* the River models of :mod:`pulse.state.segments` and :mod:`pulse.state.anomaly`;
* an :class:`~pulse.state.covisit.ItemIndex` that numbers items, so that lists and
  heads are numpy arrays a blend gathers cheaply (:class:`~pulse.state.view.LocalView`);
* per user only what the models need: the recent distinct items (co-visitation pairs
  a new item with them), the segment and the anomaly verdict.

For each update it returns the writes due: the user's verdicts
(``pulse:user:{<id>}:segment``) when they change, and the global keys. The user step
blends users' lists from a :mod:`~pulse.state.view` of these models. Everything is a
function of event time and of the events' order, never of the wall clock, so a replay
learns the same models whatever the shape of the cluster.

Global keys (trending, similar items, meta) are written once per ``global_interval_s``
of event time (and ``global_min_events`` events), the similar lists and category
trending spread over the events that follow (:meth:`Engine.global_writes`), and at the
end.

Example:

>>> from pulse.operators.events import Event
>>> eng = Engine(EngineConfig())
>>> writes = eng.learn_one(ModelUpdate.of(Event(user_id="u1", type="view", ts=1_000, item_id="a"), 1.0, ()))
>>> sorted(w.key for w in writes)
['pulse:item:{a}:nbrs', 'pulse:item:{a}:similar', 'pulse:meta', 'pulse:segments', 'pulse:trending']
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple, Optional, Sequence

import orjson

from pulse.operators.events import Event
from pulse.operators.recommend import BlendConfig, Candidates, Scratch, blend_parts
from pulse.operators.windows import WindowSummary
from pulse.state.anomaly import AnomalyConfig, AnomalyDetector
from pulse.state.covisit import CoVisitation, ItemIndex
from pulse.state.keys import SCHEMA_VERSION, KeySchema
from pulse.state.segments import SegmentConfig, Segmenter
from pulse.state.store import HashSet, Put, StreamAdd, Write, ZReplace
from pulse.state.trending import Trending
from pulse.state.view import MAX_ITEM_CATEGORIES, ItemCategories


class ModelUpdate(NamedTuple):
    """What the user step sends the model step for one user: the accepted event's item,
    categories, event time, weight and position (partition ``src``, index ``seq``), and
    summaries of the user's windows that closed, of the kinds a model learns from
    (:attr:`EngineConfig.model_windows`). ``event`` is False when only windows closed (end
    of input, an idle user). Plain values, not the :class:`Event`: it crosses processes."""

    user_id: str
    event: bool
    item_id: Optional[str]
    category: tuple[str, ...]
    ts: int
    weight: float
    windows: Sequence[WindowSummary]
    src: str = ""
    seq: int = -1
    #: why the user step's bot rules (pulse.state.bots) take the user for a bot, or ""
    bot: str = ""

    @classmethod
    def of(cls, ev: Event, weight: float, windows: Sequence[WindowSummary], bot: str = "") -> "ModelUpdate":
        return cls(ev.user_id, True, ev.item_id, ev.category, ev.ts, weight, windows, ev.src, ev.seq, bot)

    @classmethod
    def closing(cls, user_id: str, windows: Sequence[WindowSummary]) -> "ModelUpdate":
        return cls(user_id, False, None, (), 0, 0.0, windows)


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
    user_ttl_s: int = 30 * 86_400
    max_users: int = 1_000_000
    max_seen: int = 2_000

    @property
    def model_windows(self) -> frozenset:
        """The window kinds the models learn from (the user step sends only those)."""
        return frozenset((self.segments.window, self.anomaly.window))


class UserModelState:
    """What the models remember per user."""

    __slots__ = ("recent", "segment", "traits", "anomaly")

    def __init__(self) -> None:
        self.recent: list[str] = []  # the last covisit_window distinct items, most recent last
        self.segment: Optional[str] = None
        self.traits: tuple[str, ...] = ()
        self.anomaly: dict = _NOT_FLAGGED


_NOT_FLAGGED = {"score": 0.0, "flagged": False}


def recomm_id(user_id: str, ts: int, n: int) -> str:
    """A fresh id for every list, yet the same on every replay."""
    h = hashlib.blake2b(f"{user_id}\x00{ts}\x00{n}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Engine:
    """The global models plus the little per-user state they need; see the module docstring."""

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
        self.segmenter = Segmenter(c.segments)
        self.detector = AnomalyDetector(c.anomaly)
        self.users: dict[str, UserModelState] = {}
        self.item_categories: dict[str, tuple[str, ...]] = {}
        self.categories = ItemCategories()  # by item number, for the blend's category cap
        self._scratch = Scratch()  # work arrays of flagged users' lists
        #: held while the models change, and by blends that read them from other
        #: worker threads (the compiled kernels release the GIL)
        self.lock = threading.Lock()
        self.clock = 0  # the largest event time seen
        self.events = 0
        self.events_flagged = 0
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
        self._stream_last = (0, 0)

    def __getstate__(self) -> dict:
        # (the lock and the blend's work arrays are not state)
        return {k: v for k, v in self.__dict__.items() if k not in ("lock", "_scratch")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()
        self._scratch = Scratch()

    @property
    def global_due(self) -> bool:
        """Whether events arrived since the last round of global writes."""
        return self._global_at is not None and self.events > self._global_events

    def _stream_id(self) -> str:
        # Stream ids must grow; derive them from event time so a replay reuses them
        # (Redis then refuses the duplicates instead of appending them twice).
        ms, seq = self._stream_last
        self._stream_last = (self.clock, 0) if self.clock > ms else (ms, seq + 1)
        return f"{self._stream_last[0]}-{self._stream_last[1]}"

    # -- learning ----------------------------------------------------------------
    def user(self, user_id: str) -> UserModelState:
        st = self.users.get(user_id)
        if st is None:
            st = self.users[user_id] = UserModelState()
            if len(self.users) > self.config.max_users:
                del self.users[next(iter(self.users))]
        return st

    def learn_one(self, up: ModelUpdate) -> list[Write]:
        """Fold in one update; returns the writes it causes."""
        writes: list[Write] = []
        st = self.user(up.user_id)
        if up.windows:
            verdict = (st.segment, st.traits, st.anomaly)
            for window in up.windows:
                self._learn_window(up.user_id, st, window, writes)
            if (st.segment, st.traits, st.anomaly) != verdict:
                writes.append(self._verdict_write(up.user_id, st))
                if st.anomaly["flagged"] and not verdict[2]["flagged"]:
                    writes.append(self._flagged_list(up.user_id, st))
        if up.bot and not st.anomaly["flagged"]:
            self._flag_by_rules(up, st, writes)
        if up.event:
            self.events += 1
            if up.ts > self.clock:
                self.clock = up.ts
            self._learn_event(st, up)
        if self._global_at is None or self._gq_pos < len(self._gq) or (
            self.events - self._global_events >= self.config.global_min_events
        ):
            writes.extend(self.tick(self.clock))
        return writes

    def verdict(self, user_id: str) -> tuple[Optional[str], bool]:
        """The user's segment and whether the user is flagged (what a blend needs)."""
        st = self.users.get(user_id)
        return (None, False) if st is None else (st.segment, st.anomaly["flagged"])

    def _flagged_list(self, user_id: str, st: UserModelState) -> Put:
        """A newly flagged user's list, at once: trending only (what the user step's
        blend gives a flagged user; it may not see the flag before the user's next
        event, and a replay's last windows close after the user's last event)."""
        c = Candidates()
        nums, stored = self.trending.head_arrays(2 * self.config.blend.k)
        if len(nums):
            c.add("trending", "trending", nums, stored, self.trending.factor(self.clock))
        recs = blend_parts(c, self.config.blend, self.index.ids, (), self.item_categories, self._scratch, None,
                           (self.categories.matrix, self.categories.count))
        doc = {
            "user_id": user_id,
            "recomm_id": recomm_id(user_id, self.clock, -1),
            "generated_at": iso_ms(self.clock),
            "segment": st.segment,
            "items": [{"item_id": r.item_id, "score": r.score, "reason": r.reason} for r in recs],
        }
        return Put(self.keys.recs(user_id), orjson.dumps(doc), self.config.user_ttl_s)

    def _verdict_write(self, user_id: str, st: UserModelState) -> Put:
        doc = {"user_id": user_id, "segment": st.segment, "segment_traits": list(st.traits), "anomaly": st.anomaly}
        return Put(self.keys.verdict(user_id), orjson.dumps(doc), self.config.user_ttl_s)

    def _learn_event(self, st: UserModelState, up: ModelUpdate) -> None:
        item, weight = up.item_id, up.weight
        if item is None:
            return
        number = self.index.add(item)
        category = up.category
        if category and self.item_categories.get(item) != category[:MAX_ITEM_CATEGORIES]:
            self.item_categories[item] = category[:MAX_ITEM_CATEGORIES]
            self.categories.set(number, category)
        flagged = st.anomaly["flagged"]
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
            if st.segment is not None:
                t = self.by_segment.get(st.segment)
                if t is None:
                    t = self.by_segment[st.segment] = Trending(self.config.trending_half_life_s, numbers=self.index.numbers)
                t.learn_one(item, weight, ts)
                self._dirty_segments.add(st.segment)
            self._dirty_items.update(self.covisit.learn_one(st.recent, item, weight, ts))
        elif flagged:
            self.events_flagged += 1
        if weight > 0:
            recent = st.recent
            if not recent or recent[-1] != item:
                if item in recent:
                    recent.remove(item)  # keep items distinct: a revisit moves it to the end
                recent.append(item)
                if len(recent) > self.config.covisit_window:  # (co-visitation pairs no older ones)
                    del recent[0]

    def _flag_by_rules(self, up: ModelUpdate, st: UserModelState, writes: list[Write]) -> None:
        # The bot rules' verdict joins the model's: the same flag, cleared the same way
        # (after clear_after normal windows), with the rules' reason.
        st.anomaly = {"score": 1.0, "flagged": True, "reason": f"rules: {up.bot}", "clear_in": self.config.anomaly.clear_after}
        self.detector.flags += 1
        writes.append(StreamAdd(self.keys.anomalies, self._stream_id(),
                                (("user_id", up.user_id), ("score", "1.000000"), ("reason", st.anomaly["reason"]),
                                 ("window_end", iso_ms(up.ts)))))
        writes.append(self._verdict_write(up.user_id, st))
        writes.append(self._flagged_list(up.user_id, st))

    def _learn_window(self, user_id: str, st: UserModelState, window: WindowSummary, writes: list[Write]) -> None:
        if window.kind == self.config.anomaly.window:
            was = st.anomaly["flagged"]
            verdict = self.detector.learn_one(window, st.anomaly)
            st.anomaly = verdict
            if verdict["flagged"] and not was:
                writes.append(
                    StreamAdd(
                        self.keys.anomalies,
                        self._stream_id(),
                        (("user_id", user_id), ("score", f"{verdict['score']:.6f}"), ("reason", verdict["reason"]),
                         ("window_end", iso_ms(window.end_ms))),
                    )
                )
        if window.kind == self.config.segments.window:
            segment, traits = self.segmenter.learn_one(window)
            st.segment, st.traits = segment, tuple(traits)

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
        writes.append(Put(keys.segments, orjson.dumps(self.segmenter.summary())))
        writes.append(
            HashSet(
                keys.meta,
                (
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("events_processed", str(self.events)),
                    ("last_event_time", iso_ms(self.clock) if self.clock else ""),
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
