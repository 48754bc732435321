"""Pulse's Bytewax operators: small typed functions that take a stream and return one.

A Pulse dataflow is these steps, top to bottom (see :mod:`pulse.flows.pipeline`):

1. :func:`parse_records` — raw records → events | dead letters (per batch);
2. :func:`track_users` — per user: dedup, event-time windows, decayed profile, the
   user's list blended from a view of the models → updates for the models | dead
   letters (duplicates) | late events; the user's documents go to ``write``;
3. :func:`learn_models` — the model step: trending, co-visitation, River segments and
   anomalies, applied in canonical order → Redis writes (verdicts, global keys).

The steps hold no I/O of their own: sources, sinks, the view and the user step's
``write`` (the worker's own Redis connection) are given by the flow.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, List, Optional, Tuple, Union

import bytewax.operators as op
import orjson
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from pulse.operators.events import DeadLetter, Event, PartitionEnd, Raw
from pulse.operators.formats import Format
from pulse.operators.order import SequencedMerge
from pulse.operators.windows import summarize
from pulse.state.engine import Engine, EngineConfig, ModelUpdate
from pulse.state.recs import Recommender, UserRecs
from pulse.state.store import Put, Write
from pulse.state.user import UserConfig, UserState

#: the model step's one key
MODELS_KEY = "models"


@dataclass
class Late:
    """An event that arrived after its windows were closed (it still counts for the
    profile and the models; only the windows miss it)."""

    event: Event


@dataclass
class Counters:
    """Process-local counts for the run summary (thread-safe enough: += under the GIL
    on ints from one worker thread per counter)."""

    events_in: int = 0
    bytes_read: int = 0
    events_ok: int = 0
    late: int = 0
    dlq: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def dead(self, reason: str) -> None:
        with self.lock:
            self.dlq[reason] = self.dlq.get(reason, 0) + 1

    @property
    def events_dlq(self) -> int:
        return sum(self.dlq.values())


@dataclass
class StepOptions:
    """How the stateful steps behave in this run."""

    user: UserConfig = field(default_factory=UserConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    #: live runs: evict a user's state after this many wall-clock seconds idle and
    #: refresh debounced recommendations on a wall-clock timer. None for replays.
    live_idle_s: Optional[float] = None
    #: keep snapshots (only worth their cost when recovery is on)
    snapshots: bool = False
    #: replays: the source partitions, so the model step applies updates in canonical order
    #: (see pulse.operators.order); None for live runs (arrival order)
    ordered_sources: Optional[list] = None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


_idle_cache: tuple = (0.0, None, None)  # (monotonic time it holds until, idle_s, deadline)


def _idle_deadline(idle_s: float) -> datetime:
    """``now + idle_s`` (UTC), recomputed at most once a second (or per 1% of
    ``idle_s``): every user key asks after every batch, and an eviction a second early
    does not matter."""
    global _idle_cache
    until, cached_s, deadline = _idle_cache
    now = time.monotonic()
    if now >= until or cached_s != idle_s:
        deadline = _utcnow() + timedelta(seconds=idle_s)
        _idle_cache = (now + min(1.0, idle_s / 100), idle_s, deadline)
    return deadline


# -- 1. parse ---------------------------------------------------------------------------
def parse_records(step_id: str, up: Stream[Raw], fmt: Format) -> Tuple[Stream[Event], Stream[Union[DeadLetter, PartitionEnd]]]:
    """Parse raw records per batch; returns (events, dead letters and partition ends)."""
    parse = fmt.parse

    def parse_batch(batch: list) -> list:
        return [parse(r) if type(r) is Raw else r for r in batch]

    parsed = op.flat_map_batch(f"{step_id}_parse", up, parse_batch)
    split = op.branch(f"{step_id}_split", parsed, lambda x: isinstance(x, Event))
    return split.trues, split.falses


# -- 2. per user --------------------------------------------------------------------------
UserOut = Union[ModelUpdate, DeadLetter, Late]


@dataclass
class UserOutputs:
    """What the user step needs beyond its state: the recommender, the view of the
    models it blends from (called when needed: see :mod:`pulse.state.view`), and where
    the user's documents go (``write``, and ``flush`` before an epoch's snapshot
    counts)."""

    recommender: Recommender
    view: Callable[[], object]
    write: Callable[[list], None]
    flush: Callable[[], None]


class _UserLogic(StatefulBatchLogic[Event, UserOut, tuple]):
    def __init__(self, state: UserState, recs: UserRecs, options: StepOptions, outputs: UserOutputs) -> None:
        self.state = state
        self.recs = recs
        self.options = options
        self.outputs = outputs
        self._recs_deadline: Optional[datetime] = None  # live runs: when a held-back list is due

    def _profile(self, doc: dict) -> Put:
        st = self.state
        self.recs.categories = list(doc["categories"].items())[:3]
        keys = self.options.engine.keys
        return Put(keys.profile(st.user_id), orjson.dumps({"user_id": st.user_id, **doc}), self.options.engine.user_ttl_s)

    def on_batch(self, values: List[Event]) -> Tuple[Iterable[UserOut], bool]:
        out: list[UserOut] = []
        writes: list[Write] = []
        st, recs = self.state, self.recs
        learn_recs = self.outputs.recommender.learn_one
        view = None
        for ev in values:
            learned = st.learn_one(ev)
            if learned.duplicate:
                out.append(DeadLetter("duplicate_event", ev.src, ev.line, ev.to_json(), "event_id",
                                      f"event_id {ev.event_id!r} was already seen for user {ev.user_id!r}", ev.user_id, ev.seq))
                continue
            if learned.late:
                out.append(Late(ev))
            if st.profile_due(ev.ts):
                writes.append(self._profile(st.profile_doc(ev.ts)))
            if view is None:
                view = self.outputs.view()
            writes.extend(learn_recs(recs, ev, learned.weight, view))
            closed = summarize(learned.closed, self.options.engine.model_windows) if learned.closed else ()
            out.append(ModelUpdate.of(ev, learned.weight, closed, learned.bot))
        if writes:
            self.outputs.write(writes)
        return out, self.RETAIN

    def _final(self) -> list[UserOut]:
        st = self.state
        if st.user_id is None:
            return []
        closed = summarize(st.windows.close_all(), self.options.engine.model_windows)
        writes = self.outputs.recommender.pending(self.recs, st.user_id, self.outputs.view())
        if st.profile_dirty:
            writes.append(self._profile(st.profile_doc(st.profile.last_seen or 0)))
        if writes:
            self.outputs.write(writes)
        return [ModelUpdate.closing(st.user_id, closed)] if closed else []

    def on_eof(self) -> Tuple[Iterable[UserOut], bool]:
        return self._final(), self.RETAIN

    def notify_at(self) -> Optional[datetime]:
        if self.options.live_idle_s is None:
            return None
        if self.recs.recs_due is not None:
            if self._recs_deadline is None:
                self._recs_deadline = _utcnow() + timedelta(seconds=self.options.engine.recs_interval_s)
            return self._recs_deadline
        return _idle_deadline(self.options.live_idle_s)

    def on_notify(self) -> Tuple[Iterable[UserOut], bool]:
        if self.recs.recs_due is not None:
            # Live runs: a list held back by the debounce is due by the wall clock too.
            self._recs_deadline = None
            self.outputs.write(self.outputs.recommender.pending(self.recs, self.state.user_id, self.outputs.view()))
            return [], self.RETAIN
        # Idle in a live run: close the windows, write the last profile, free the state.
        return self._final(), self.DISCARD

    def snapshot(self) -> Optional[tuple]:
        if not self.options.snapshots:
            return None
        # Everything this worker wrote in the epoch must be in Redis before the snapshot
        # counts: a resume replays only what came after.
        self.outputs.flush()
        return copy.deepcopy((self.state, self.recs))


def track_users(step_id: str, events: Stream[Event], options: StepOptions, outputs: UserOutputs) -> Stream[UserOut]:
    """Key events by user; keep each user's dedup ring, windows, profile and list state;
    write the user's profile and list (``outputs``)."""
    keyed = op.key_on(f"{step_id}_key", events, lambda ev: ev.user_id)
    max_seen = options.engine.max_seen

    def build(resume: Optional[tuple]) -> _UserLogic:
        state, recs = resume if resume is not None else (UserState(options.user), UserRecs(max_seen))
        return _UserLogic(state, recs, options, outputs)

    out = op.stateful_batch(f"{step_id}_state", keyed, build)
    return op.key_rm(f"{step_id}_unkey", out)


# -- 3. the models ---------------------------------------------------------------------
ModelIn = Union[ModelUpdate, DeadLetter, PartitionEnd]


def _update_ts(up: ModelUpdate) -> int:
    return up.ts


def _update_key(up: ModelUpdate):
    return (up.src, up.seq) if up.event else None


def _update_user(up: ModelUpdate) -> str:
    return up.user_id


class _ModelLogic(StatefulBatchLogic[ModelIn, Write, tuple]):
    def __init__(self, resume: Optional[tuple], options: StepOptions, on_engine: Optional[Callable[[Engine], None]]) -> None:
        if resume is not None:
            self.engine, self.merge = resume
        else:
            self.engine = Engine(options.engine)
            self.merge = (
                SequencedMerge(options.ordered_sources, _update_ts, _update_key, _update_user, live=options.live_idle_s is not None)
                if options.ordered_sources is not None
                else None
            )
        self.options = options
        self._global_wall = 0
        if on_engine is not None:
            on_engine(self.engine)

    def _learn(self, updates: Iterable[ModelUpdate]) -> list[Write]:
        out: list[Write] = []
        learn = self.engine.learn_one
        with self.engine.lock:
            for up in updates:
                out.extend(learn(up))
        return out

    def on_batch(self, values: List[ModelIn]) -> Tuple[Iterable[Write], bool]:
        merge = self.merge
        if merge is None:
            return self._learn(v for v in values if type(v) is ModelUpdate), self.RETAIN
        ready: list[ModelUpdate] = []
        for item in values:
            ready.extend(merge.push(item))
        return self._learn(ready), self.RETAIN

    def on_eof(self) -> Tuple[Iterable[Write], bool]:
        out = self._learn(self.merge.drain()) if self.merge is not None else []
        with self.engine.lock:
            out.extend(self.engine.flush())
        return out, self.RETAIN

    def notify_at(self) -> Optional[datetime]:
        if self.options.live_idle_s is None:
            return None
        return _utcnow() + timedelta(seconds=max(self.options.engine.global_interval_s / 5, 0.05))

    def on_notify(self) -> Tuple[Iterable[Write], bool]:
        # Live runs: event time stands still when traffic pauses, so let the wall clock
        # write the global keys of what arrived since the last round.
        now_ms = int(_utcnow().timestamp() * 1000)
        eng = self.engine
        with eng.lock:
            if eng.global_due and now_ms - self._global_wall >= eng.config.global_interval_s * 1000:
                self._global_wall = now_ms
                return eng.global_writes(eng.clock, spread=False), self.RETAIN
            # The round in progress advances with events; the input is idle: finish it.
            return eng.global_rest(eng.clock), self.RETAIN

    def snapshot(self) -> Optional[tuple]:
        if not self.options.snapshots:
            return None
        with self.engine.lock:
            return copy.deepcopy((self.engine, self.merge))


def learn_models(
    step_id: str,
    updates: Stream[ModelIn],
    options: StepOptions,
    on_engine: Optional[Callable[[Engine], None]] = None,
) -> Stream[Write]:
    """Route every update to the model step and learn the global models from it; emits
    the users' verdicts and the global keys as Redis writes. Replays also route dead
    letters and partition ends here, so the models see updates in canonical order."""
    keyed = op.key_on(f"{step_id}_key", updates, lambda _: MODELS_KEY)

    def build(resume: Optional[tuple]) -> _ModelLogic:
        return _ModelLogic(resume, options, on_engine)

    return op.key_rm(f"{step_id}_unkey", op.stateful_batch(f"{step_id}_models", keyed, build))
