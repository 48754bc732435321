"""Pulse's Bytewax operators: small typed functions that take a stream and return one.

A Pulse dataflow is these steps, top to bottom (see :mod:`pulse.flows.pipeline`):

1. :func:`parse_records` — raw records → events | dead letters (per batch);
2. :func:`track_users` — per user: dedup, event-time windows, decayed profile →
   updates | dead letters (duplicates) | late events; the profile goes to ``write``;
3. :func:`learn_river` — the River models (segments, anomaly flags, joined by the bot
   rules' flags), fed only by the windows that closed and the changes of the rules'
   verdicts (and coverage counts of the rest) → a verdict per such update; the
   segments' summary and the anomalies go to ``write``;
4. :func:`recommend_users` — per user again, with the verdicts: segment and flag, the
   recent items, exclusions and the list blended from a view of the models → an item
   update per update; verdicts and lists go to ``write``;
5. :func:`learn_models` — the model step: trending and co-visitation, applied in
   canonical order; the global keys go to ``write``.

The steps hold no I/O of their own: sources, sinks, the view and ``write`` (the Redis
store of the worker a step runs on: every step writes the keys it owns over its own
worker's connection) are given by the flow. What one step sends another is plain
values: it may cross processes (see :meth:`Event.to_wire`).
"""

from __future__ import annotations

import dataclasses
import pickle
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
from pulse.operators.order import BlockOrder, Coverage, SequencedMerge, coverage
from pulse.operators.recent import recent_event_writes
from pulse.operators.windows import summarize
from pulse.operators.messages import ItemUpdate, ModelUpdate
from pulse.state.config import EngineConfig
from pulse.state.documents import iso_ms
from pulse.state.items import ItemModels
from pulse.state.rounds import GlobalRounds
from pulse.state.recs import Recommender
from pulse.state.river_models import RiverModels, Verdict
from pulse.state.privacy import pseudonym, pseudonymous_payload
from pulse.state.profile import profile_value
from pulse.state.store import Delete, Put, StreamAdd, StreamPurge, Write
from pulse.state.user import UserConfig, UserState

# Bytewax runs a key on worker hash(key) mod workers, and a one-file log is read on
# worker 0 (partitions go round-robin): these names hash so that, in every cluster of 2
# to 16 workers, the model step (the busiest single key) runs off worker 0 and the River
# step on another worker than the model step (tests/test_placement.py checks it).
#: the model step's one key
MODELS_KEY = "models-4"
#: the River models' one key
RIVER_KEY = "river-11"


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
    #: the per-user states this process holds now, and has made, by step ("user": the
    #: user step's, "list": the list step's). A live run frees an idle user's
    #: (``live_idle_s``): that is what bounds its memory over many distinct users.
    held: dict = field(default_factory=lambda: {"user": 0, "list": 0})
    made: dict = field(default_factory=lambda: {"user": 0, "list": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def dead(self, reason: str) -> None:
        with self.lock:
            self.dlq[reason] = self.dlq.get(reason, 0) + 1

    def state_made(self, step: str) -> None:
        with self.lock:  # (several worker threads make and free states)
            self.held[step] += 1
            self.made[step] += 1

    def state_freed(self, step: str) -> None:
        with self.lock:
            self.held[step] -= 1

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
    #: keep each user's latest N events (pulse:user:{<id>}:events); 0: none
    recent_events: int = 0
    #: replace user ids by their keyed HMAC as they are parsed (pulse.state.privacy)
    pseudonymize_key: Optional[bytes] = None
    #: the steps run in several processes: events reach the user step as
    #: :meth:`Event.to_wire` tuples (see there why)
    across_processes: bool = False


def _frozen(state: object) -> bytes:
    """A step's snapshot: its state pickled at once. Bytewax wants an immutable snapshot
    and pickles it later; bytes are immutable, so there is no deep copy to make (which,
    pickled again, cost about 2.7x as much per user state: 176 against 65 us)."""
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def _thawed(snapshot: Optional[bytes]):
    """The state a :func:`_frozen` snapshot holds (None: no snapshot, a fresh key)."""
    return None if snapshot is None else pickle.loads(snapshot)


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
        _idle_cache = (now + _idle_slack(idle_s), idle_s, deadline)
    return deadline


def _idle_slack(idle_s: float) -> float:
    """How much earlier than ``idle_s`` after a key's last batch its cached deadline
    may fall."""
    return min(1.0, idle_s / 100)


def _idle(active_at: float, idle_s: float) -> bool:
    """Whether a key last active at ``active_at`` (monotonic) has been idle ``idle_s``.
    Bytewax calls ``on_notify`` after ``on_batch`` when the time ``notify_at`` gave
    *before* the batch has passed: after a stall (Redis down, a backlog read at full
    speed) a user's event and their idle deadline come in one activation, and the user
    is not idle."""
    return time.monotonic() - active_at >= idle_s - _idle_slack(idle_s)


# -- 1. parse ---------------------------------------------------------------------------
def parse_records(step_id: str, up: Stream[Raw], fmt: Format,
                  pseudonymize_key: Optional[bytes] = None) -> Tuple[Stream[Event], Stream[Union[DeadLetter, PartitionEnd]]]:
    """Parse raw records per batch; returns (events, dead letters and partition ends).
    With ``pseudonymize_key`` every user id becomes its pseudonym here, before any step
    keeps or writes it."""
    parse = fmt.parse

    def parse_batch(batch: list) -> list:
        return [parse(r) if type(r) is Raw else r for r in batch]

    def parse_pseudonymous(batch: list) -> list:
        out = parse_batch(batch)
        for n, x in enumerate(out):
            if type(x) is Event:
                out[n] = x.model_copy(update={"user_id": pseudonym(x.user_id, pseudonymize_key)})
            elif type(x) is DeadLetter:
                out[n] = _pseudonymous_dead_letter(x, pseudonymize_key)
        return out

    parsed = op.flat_map_batch(f"{step_id}_parse", up, parse_batch if pseudonymize_key is None else parse_pseudonymous)
    split = op.branch(f"{step_id}_split", parsed, lambda x: isinstance(x, Event))
    return split.trues, split.falses


def _pseudonymous_dead_letter(d: DeadLetter, key: bytes) -> DeadLetter:
    """``d`` with nothing raw of its user: the pseudonym as its user id, and its payload's
    ids replaced, or the payload withheld where they cannot be found (:func:`pseudonymous_payload`)."""
    payload = pseudonymous_payload(d.payload, key)
    user_id = pseudonym(d.user_id, key) if d.user_id is not None else None
    if payload is None:
        return dataclasses.replace(d, payload=b"", user_id=user_id, payload_withheld=True)
    return dataclasses.replace(d, payload=payload, user_id=user_id)


def withdrawal(d: DeadLetter) -> Event:
    """The ``forget`` of a user whose event said ``consent: false`` (its dead letter):
    the user step drops the user at that point of their events. ``consent`` stays
    False: the record is accounted for as a dead letter, not as an accepted event."""
    return Event.model_construct(user_id=d.user_id, type="forget", ts=0, consent=False, src=d.source, seq=d.seq,
                                 line=d.position, item_id=None, category=(), event_id=None, session_id=None)



# -- 2. per user --------------------------------------------------------------------------
UserOut = Union[ModelUpdate, DeadLetter, Late]


@dataclass
class UserOutputs:
    """What the per-user steps need beyond their state: the recommender, the view of the
    models the list step blends from (called when needed: see :mod:`pulse.state.view`),
    and where the users' documents go (``write``, and ``flush`` before an epoch's
    snapshot counts)."""

    recommender: Recommender
    view: Callable[[], object]
    write: Callable[[list], None]
    flush: Callable[[], None]
    #: where the steps count the per-user states they make and free
    counters: Counters = field(default_factory=Counters)


class _UserLogic(StatefulBatchLogic[Event, UserOut, bytes]):
    def __init__(self, state: UserState, options: StepOptions, outputs: UserOutputs) -> None:
        self.state = state
        self.options = options
        self.outputs = outputs
        if options.live_idle_s is not None:  # (live runs: the last batch, see _idle; a float a user)
            self.active_at = time.monotonic()

    def _profile(self, doc: dict) -> Put:
        st = self.state
        keys = self.options.engine.keys
        return Put(keys.profile(st.user_id), profile_value(doc), self.options.engine.profile_ttl_s)

    def _forget(self, ev: Event, writes: list[Write]) -> ModelUpdate:
        # Everything of the user goes: the state now, the keys this step writes (after
        # whatever of them still waits in this worker's store, which the deletes
        # replace); the update takes the forgetting on to the other steps.
        self.state = UserState(self.options.user)
        keys = self.options.engine.keys
        writes.append(Delete(keys.profile(ev.user_id)))
        if self.options.recent_events > 0:
            writes.append(Delete(keys.recent_events(ev.user_id)))
        return ModelUpdate.forgetting(ev)

    def _recent(self, events: list[Event], writes: list[Write]) -> None:
        if events:
            cfg = self.options.engine
            writes.extend(recent_event_writes(events, cfg.keys, self.options.recent_events, cfg.events_ttl_s))
            events.clear()

    def on_batch(self, values: List[Event]) -> Tuple[Iterable[UserOut], bool]:
        if self.options.live_idle_s is not None:
            self.active_at = time.monotonic()
        out: list[UserOut] = []
        writes: list[Write] = []
        recent: Optional[list[Event]] = [] if self.options.recent_events > 0 else None
        st = self.state
        if self.options.across_processes:
            values = [Event.from_wire(v) for v in values]
        for ev in values:
            if ev.type == "forget":
                if recent is not None:
                    recent.clear()  # (they would be deleted at once)
                out.append(self._forget(ev, writes))
                st = self.state
                continue
            if recent is not None:
                recent.append(ev)
            learned = st.learn_one(ev)
            if learned.duplicate:
                out.append(DeadLetter("duplicate_event", ev.src, ev.line, ev.to_json(), "event_id",
                                      f"event_id {ev.event_id!r} was already seen for user {ev.user_id!r}", ev.user_id, ev.seq))
                continue
            if learned.late:
                out.append(Late(ev))
            affinities = None
            if st.profile_due(ev.ts):
                doc = st.profile_doc(ev.ts)
                writes.append(self._profile(doc))
                affinities = tuple(doc["categories"].items())[:3]
            closed = summarize(learned.closed, self.options.engine.model_windows) if learned.closed else ()
            out.append(ModelUpdate.of(ev, learned.weight, closed, affinities, learned.bot))
        if recent is not None:
            self._recent(recent, writes)
        if writes:
            self.outputs.write(writes)
        if st.user_id is None:  # a user forgotten with no event after: nothing to keep
            return out, self._free()
        return out, self.RETAIN

    def _free(self) -> bool:
        self.outputs.counters.state_freed("user")
        return self.DISCARD

    def _final(self, evicted: bool) -> list[UserOut]:
        st = self.state
        if st.user_id is None:
            return []
        closed = summarize(st.windows.close_all(), self.options.engine.model_windows)
        if st.profile_dirty:
            self.outputs.write([self._profile(st.profile_doc(st.profile.last_seen or 0))])
        # An evicted user starts afresh when they come back: the bot rules' and the
        # model's flags go with their state (else the River step would hold them for
        # ever: memory that idle eviction would not bound).
        bot = "" if evicted and st.bots is not None and st.bots.reason else None
        return [ModelUpdate.closing(st.user_id, closed, bot, evicted)] if closed or bot is not None or evicted else []

    def on_eof(self) -> Tuple[Iterable[UserOut], bool]:
        return self._final(evicted=False), self.RETAIN

    def notify_at(self) -> Optional[datetime]:
        if self.options.live_idle_s is None:
            return None
        return _idle_deadline(self.options.live_idle_s)

    def on_notify(self) -> Tuple[Iterable[UserOut], bool]:
        if not _idle(self.active_at, self.options.live_idle_s):
            return [], self.RETAIN  # (active since the deadline was set: a new one is)
        # Idle in a live run: close the windows, write the last profile, free the state.
        return self._final(evicted=True), self._free()

    def snapshot(self) -> Optional[bytes]:
        if not self.options.snapshots:
            return None
        # Everything this worker wrote in the epoch must be in Redis before the snapshot
        # counts: a resume replays only what came after.
        self.outputs.flush()
        return _frozen(self.state)


def track_users(step_id: str, events: Stream[Event], options: StepOptions, outputs: UserOutputs) -> Stream[UserOut]:
    """Key events by user; keep each user's dedup ring, windows and profile; write the
    user's profile (``outputs``); emit an update per accepted event."""
    keyed = op.key_on(f"{step_id}_key", events, lambda ev: ev.user_id)
    if options.across_processes:
        keyed = op.map_value(f"{step_id}_wire", keyed, Event.to_wire)

    def build(resume: Optional[bytes]) -> _UserLogic:
        outputs.counters.state_made("user")
        return _UserLogic(_thawed(resume) if resume is not None else UserState(options.user), options, outputs)

    out = op.stateful_batch(f"{step_id}_state", keyed, build)
    return op.key_rm(f"{step_id}_unkey", out)


# -- 3. per user, with the River verdicts: the user's list --------------------------------
#: the user's updates, and the River step's verdicts as plain tuples
ListIn = Union[ModelUpdate, tuple]


class _Verdicts:
    """The River step's verdicts that came before their updates: by position, and for
    updates without an event (a user's last windows) per user, first come first."""

    def __init__(self) -> None:
        self.at: dict[tuple[str, int], Verdict] = {}
        self.closing: dict[str, list[Verdict]] = {}

    def add(self, v: Verdict) -> None:
        if v.seq >= 0:
            self.at[(v.src, v.seq)] = v
        else:
            self.closing.setdefault(v.user_id, []).append(v)

    @property
    def empty(self) -> bool:
        return not self.at and not self.closing

    def take(self, up: ModelUpdate) -> Optional[Verdict]:
        if up.seq >= 0:
            return self.at.pop((up.src, up.seq), None)
        queue = self.closing.get(up.user_id)
        if not queue:
            return None
        v = queue.pop(0)
        if not queue:
            del self.closing[up.user_id]
        return v


def _user_first(x: ListIn) -> str:
    return x[0]  # (an update's user_id, and a verdict's: both come first)


class _ListLogic(StatefulBatchLogic[ListIn, ItemUpdate, bytes]):
    def __init__(self, resume: Optional[tuple], options: StepOptions, outputs: UserOutputs) -> None:
        # (the verdicts that came early and the updates that wait are rare and short-lived:
        # None while there are none, which most users are most of the time)
        if resume is not None:
            self.recs, self.verdicts, self.waiting = resume
        else:
            self.recs = outputs.recommender.new_state()
            self.verdicts: Optional[_Verdicts] = None
            #: the user's updates, in order, from the first one whose verdict is still to come
            self.waiting: Optional[list[ModelUpdate]] = None
        self.options = options
        self.outputs = outputs
        self.user_id: Optional[str] = None
        self._recs_deadline: Optional[datetime] = None  # live runs: when a held-back list is due
        if options.live_idle_s is not None:  # (live runs: the last batch, see _idle; a float a user)
            self.active_at = time.monotonic()

    def on_batch(self, values: List[ListIn]) -> Tuple[Iterable[ItemUpdate], bool]:
        if self.options.live_idle_s is not None:
            self.active_at = time.monotonic()
        waiting = self.waiting if self.waiting is not None else []
        for v in values:
            if type(v) is tuple:  # a verdict, as the River step sends it
                if self.verdicts is None:
                    self.verdicts = _Verdicts()
                self.verdicts.add(Verdict._make(v))
            else:
                waiting.append(v)
        out: list[ItemUpdate] = []
        writes: list[Put] = []
        learn = self.outputs.recommender.learn_update
        view = None
        done = 0
        for up in waiting:
            verdict = None
            if up.needs_verdict:
                verdict = self.verdicts.take(up) if self.verdicts is not None else None
                if verdict is None:
                    break
            self.user_id = up.user_id
            if up.forget:
                w, item_update = self.outputs.recommender.forget(up)
                self.recs = self.outputs.recommender.new_state()
            else:
                if view is None:
                    view = self.outputs.view()
                w, item_update = learn(self.recs, up, verdict, view)
            writes.extend(w)
            out.append(item_update)
            done += 1
        del waiting[:done]
        self.waiting = waiting or None
        if self.verdicts is not None and self.verdicts.empty:
            self.verdicts = None
        if writes:
            self.outputs.write(writes)
        if not self.recs.known and self.waiting is None and self.verdicts is None:
            # A user forgotten with nothing after, or only the last windows of a user
            # this step had already freed: nothing to keep.
            return out, self._free()
        return out, self.RETAIN

    def _free(self) -> bool:
        self.outputs.counters.state_freed("list")
        return self.DISCARD

    def _pending(self) -> None:
        if self.user_id is not None:
            writes = self.outputs.recommender.pending(self.recs, self.user_id, self.outputs.view())
            if writes:
                self.outputs.write(writes)

    def on_eof(self) -> Tuple[Iterable[ItemUpdate], bool]:
        if self.waiting:
            up = self.waiting[0]
            raise RuntimeError(f"the River step gave no verdict for the windows of user {up.user_id!r} "
                               f"(record {up.seq} of {up.src!r}); {len(self.waiting)} updates wait")
        self._pending()
        return [], self.RETAIN

    def notify_at(self) -> Optional[datetime]:
        if self.options.live_idle_s is None:
            return None
        if self.recs.recs_due is not None:
            if self._recs_deadline is None:
                self._recs_deadline = _utcnow() + timedelta(seconds=self.options.engine.recs_interval_s)
            return self._recs_deadline
        self._recs_deadline = None  # (the list was written by an event in the meantime)
        return _idle_deadline(self.options.live_idle_s)

    def on_notify(self) -> Tuple[Iterable[ItemUpdate], bool]:
        if self.recs.recs_due is not None:
            # Live runs: a list held back by the debounce is due by the wall clock too.
            self._recs_deadline = None
            self._pending()
            return [], self.RETAIN
        # (the deadline passed may be the list's, written since by an event; or the idle
        # one, with an event in the same activation: see _idle)
        if self.waiting or not _idle(self.active_at, self.options.live_idle_s):
            return [], self.RETAIN
        return [], self._free()  # idle in a live run: free the state

    def snapshot(self) -> Optional[bytes]:
        if not self.options.snapshots:
            return None
        self.outputs.flush()
        return _frozen((self.recs, self.verdicts, self.waiting))


def recommend_users(step_id: str, updates: Stream[ListIn], options: StepOptions, outputs: UserOutputs) -> Stream[ItemUpdate]:
    """Key updates and the River step's verdicts by user; keep what each user's list
    depends on, write verdicts and lists (``outputs``); emit what the model step learns
    of each update (an update with windows waits for its verdict)."""
    keyed = op.key_on(f"{step_id}_key", updates, _user_first)

    def build(resume: Optional[bytes]) -> _ListLogic:
        outputs.counters.state_made("list")
        return _ListLogic(_thawed(resume), options, outputs)

    return op.key_rm(f"{step_id}_unkey", op.stateful_batch(f"{step_id}_state", keyed, build))


# -- 4. the River models ----------------------------------------------------------------
RiverIn = Union[Coverage, PartitionEnd]


def _river_key(up: ModelUpdate):
    return (up.src, up.seq) if up.seq >= 0 else None


class _RiverLogic(StatefulBatchLogic[RiverIn, tuple, bytes]):
    def __init__(self, resume: Optional[tuple], options: StepOptions, write: Callable[[list], None], flush: Callable[[], None]) -> None:
        if resume is not None:
            self.models, self.order = resume
        else:
            self.models = RiverModels(options.engine.river)
            # (without the source's partitions, as in a hand-built flow: arrival order)
            self.order = (
                BlockOrder(options.ordered_sources, _river_key, _update_user, live=options.live_idle_s is not None)
                if options.ordered_sources is not None
                else None
            )
        self.options = options
        self.write = write
        self.flush = flush

    def _learn(self, ups: Iterable[ModelUpdate]) -> list[tuple]:
        models = self.models
        keys = self.options.engine.keys
        verdicts: list[tuple] = []
        writes: list[Write] = []
        for up in ups:
            if up.forget:
                verdicts.append(tuple(models.forget(up.user_id, up.src, up.seq)))
                writes.append(StreamPurge(keys.anomalies, "user_id", up.user_id))
                continue
            verdict = models.learn_one(up.user_id, up.src, up.seq, up.windows, up.bot, up.ts)
            if up.evicted:
                models.release(up.user_id)
            verdicts.append(tuple(verdict))
            for anomaly, window_end, new in verdict.anomalies:
                if new:
                    writes.append(StreamAdd(keys.anomalies, models.entry_id(),
                                            (("user_id", up.user_id), ("score", f"{anomaly['score']:.6f}"),
                                             ("reason", anomaly["reason"]), ("window_end", iso_ms(window_end)))))
        if self.models.summary_due():
            writes.append(Put(self.options.engine.keys.segments, orjson.dumps(self.models.summary())))
        if writes:
            self.write(writes)
        return verdicts

    def on_batch(self, values: List[RiverIn]) -> Tuple[Iterable, bool]:
        ready: list[ModelUpdate] = []
        order = self.order
        for item in values:
            if order is not None:
                ready.extend(order.push(item))
            elif type(item) is Coverage:
                ready.extend(item.items)
        return self._learn(ready), self.RETAIN

    def on_eof(self) -> Tuple[Iterable, bool]:
        out = self._learn(self.order.drain() if self.order is not None else ())
        if self.models.segmenter.learned:
            self.write([Put(self.options.engine.keys.segments, orjson.dumps(self.models.summary()))])
        return out, self.RETAIN

    def snapshot(self) -> Optional[bytes]:
        if not self.options.snapshots:
            return None
        self.flush()  # (what this step wrote in the epoch is in Redis before it counts)
        return _frozen((self.models, self.order))


def _river_batch(batch: list, live: bool) -> list:
    """One worker's batch of model input → what the River step needs of it: the updates
    that closed windows or changed the bot rules' verdict, with the coverage of every
    record (see :class:`~pulse.operators.order.BlockOrder`), and the partition ends."""
    out: list = [x for x in batch if type(x) is PartitionEnd]
    positions = [(x.src, x.seq) if type(x) is ModelUpdate else (x.source, x.seq) for x in batch
                 if (type(x) is ModelUpdate and x.seq >= 0) or type(x) is DeadLetter]
    needed = [x for x in batch if type(x) is ModelUpdate and x.needs_verdict]
    if positions or needed:
        out.append(coverage(positions, needed, live))
    return out


def learn_river(step_id: str, updates: Stream, options: StepOptions,
                write: Callable[[list], None], flush: Callable[[], None]) -> Stream[tuple]:
    """The River models: from the model input (updates, and in replays dead letters and
    partition ends) only the updates that closed windows cross, with per-batch coverage
    counts of the rest. Emits a :class:`~pulse.state.river_models.Verdict` per such update,
    as a plain tuple (it crosses to the user's process: see :meth:`Event.to_wire`);
    writes ``pulse:segments`` and the anomalies stream through ``write`` (this worker's
    store), and ``flush`` es it before a snapshot."""
    live = options.live_idle_s is not None
    per_batch = op.flat_map_batch(f"{step_id}_batch", updates, lambda batch: _river_batch(batch, live))
    keyed = op.key_on(f"{step_id}_key", per_batch, lambda _: RIVER_KEY)

    def build(resume: Optional[bytes]) -> _RiverLogic:
        return _RiverLogic(_thawed(resume), options, write, flush)

    return op.key_rm(f"{step_id}_unkey", op.stateful_batch(f"{step_id}_models", keyed, build))


# -- 5. the models ---------------------------------------------------------------------
ModelIn = Union[ItemUpdate, DeadLetter, PartitionEnd]


def _update_ts(up: ItemUpdate) -> int:
    return up.ts


def _update_key(up: ItemUpdate):
    return (up.src, up.seq) if up.seq >= 0 else None


def _update_user(up: ModelUpdate) -> str:
    return up.user_id


class _ModelLogic(StatefulBatchLogic[tuple, None, bytes]):
    def __init__(self, resume: Optional[tuple], options: StepOptions, write: Callable[[list], None], flush: Callable[[], None],
                 on_models: Optional[Callable[[ItemModels], None]]) -> None:
        if resume is not None:
            self.models, self.rounds, self.merge = resume
        else:
            self.models = ItemModels(options.engine)
            self.rounds = GlobalRounds(options.engine)
            self.merge = (
                SequencedMerge(options.ordered_sources, _update_ts, _update_key, _update_user, live=options.live_idle_s is not None)
                if options.ordered_sources is not None
                else None
            )
        self.options = options
        self.write = write
        self.flush = flush
        self._global_wall = 0
        if on_models is not None:
            on_models(self.models)

    def _learn(self, updates: Iterable[ItemUpdate]) -> None:
        out: list[Write] = []
        models, rounds = self.models, self.rounds
        learn, after = models.learn_one, rounds.after_update
        with models.lock:
            for up in updates:
                learn(up)
                out.extend(after(models))
        if out:
            self.write(out)

    def on_batch(self, values: List[tuple]) -> Tuple[Iterable[None], bool]:
        items = [_unbundled(x) for bundle in values for x in bundle]
        merge = self.merge
        if merge is None:
            self._learn(v for v in items if type(v) is ItemUpdate)
            return (), self.RETAIN
        ready: list[ItemUpdate] = []
        for item in items:
            ready.extend(merge.push(item))
        self._learn(ready)
        return (), self.RETAIN

    def on_eof(self) -> Tuple[Iterable[None], bool]:
        if self.merge is not None:
            self._learn(self.merge.drain())
        with self.models.lock:
            self.write(self.rounds.flush(self.models))
        return (), self.RETAIN

    def notify_at(self) -> Optional[datetime]:
        if self.options.live_idle_s is None:
            return None
        return _utcnow() + timedelta(seconds=max(self.options.engine.global_interval_s / 5, 0.05))

    def on_notify(self) -> Tuple[Iterable[None], bool]:
        # Live runs: event time stands still when traffic pauses, so let the wall clock
        # write the global keys of what arrived since the last round.
        now_ms = int(_utcnow().timestamp() * 1000)
        models, rounds = self.models, self.rounds
        with models.lock:
            if rounds.due(models) and now_ms - self._global_wall >= self.options.engine.global_interval_s * 1000:
                self._global_wall = now_ms
                writes = rounds.start_round(models, models.clock, spread=False)
            else:
                # The round in progress advances with events; the input is idle: finish it.
                writes = rounds.rest(models, models.clock)
        if writes:
            self.write(writes)
        return (), self.RETAIN

    def snapshot(self) -> Optional[bytes]:
        if not self.options.snapshots:
            return None
        self.flush()  # (what this step wrote in the epoch is in Redis before it counts)
        with self.models.lock:
            return _frozen((self.models, self.rounds, self.merge))


def _bundle(batch: list) -> list[tuple]:
    """One worker's batch of model input as one item: the item updates as plain tuples.
    Bytewax pickles what crosses to the model step's process one item at a time, and
    there a tuple costs a fraction of an instance (see :meth:`Event.to_wire`)."""
    return [tuple(tuple(x) if type(x) is ItemUpdate else x for x in batch)] if batch else []


def _unbundled(x):
    return ItemUpdate._make(x) if type(x) is tuple else x


def learn_models(
    step_id: str,
    updates: Stream[ModelIn],
    options: StepOptions,
    write: Callable[[list], None],
    flush: Callable[[], None],
    on_models: Optional[Callable[[ItemModels], None]] = None,
) -> Stream[None]:
    """Route every item update to the model step, a worker's batch at a time, and
    learn the item-side models from it; writes the global keys through ``write`` (the
    store of the worker the step runs on) and ``flush`` es it before a snapshot.
    Replays also route dead letters and partition ends here, so the models see updates
    in canonical order.

    Returns the step's output, which stays empty: Bytewax runs a flow only until its
    outputs are done, so a flow ends it in one (``op.inspect``) to have the step's
    last writes, at the end of the input, made."""
    bundles = op.flat_map_batch(f"{step_id}_bundle", updates, _bundle)
    keyed = op.key_on(f"{step_id}_key", bundles, lambda _: MODELS_KEY)

    def build(resume: Optional[bytes]) -> _ModelLogic:
        return _ModelLogic(_thawed(resume), options, write, flush, on_models)

    return op.key_rm(f"{step_id}_unkey", op.stateful_batch(f"{step_id}_models", keyed, build))
