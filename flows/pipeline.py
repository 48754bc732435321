"""The Pulse dataflow, wired top to bottom (the diagram in the README):

    source (recorded log | Kafka)
      └─ parse_records ──────────────── dead letters ──┐
           └─ track_users (per user) ── duplicates ────┤──> DLQ (JSONL file | Kafka topic)
                │   profile ──> Redis   └─ late events ┴──> late output (counted)
                ├─ learn_river (one key, closed windows only) ── segments, anomalies ──> Redis
                │     └─ verdicts ──┐
                └─ recommend_users (per user) ── verdict, list (blended from a view) ──> Redis
                      └─ item updates
                           └─ learn_models (the model step) ── global keys ──> Redis

Every step writes the keys it owns over the Redis connection of the worker it runs on
(:class:`~pulse.state.store.WorkerStores`). Replays and live runs share every step;
only the source and the DLQ sink differ.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink

from pulse.flows.metrics import flush_hook
from pulse.operators.events import DeadLetter, Event, Raw
from pulse.operators.formats import Format
from pulse.operators.steps import Counters, Late, StepOptions, UserOutputs, learn_models, learn_river, parse_records, recommend_users, track_users, withdrawal
from pulse.operators.messages import ModelUpdate
from pulse.state.items import ItemModels
from pulse.state.keys import KeySchema
from pulse.state.recs import Recommender
from pulse.state.store import RedisLike, RedisStore, WorkerStores
from pulse.state.updates import UpdateNotifier
from pulse.state.view import LocalView, RemoteView


@dataclass
class RunHandles:
    """What a run exposes to its caller (summaries, tests) and shares between the
    workers of this process: counters, the Redis stores (with their hooks: change
    notifications, metrics), the model step's models when it runs here, and the view
    the user step blends from."""

    counters: Counters = field(default_factory=Counters)
    stores: list[RedisStore] = field(default_factory=list)
    models: list[ItemModels] = field(default_factory=list)
    #: part of a cluster of several processes (the model step may run in another one)
    cluster: bool = False
    #: worker threads in this process
    workers: int = 1
    #: resumed from a recovery store (see :func:`pulse.flows.replay.prepare_recovery`)
    resumed: bool = False
    #: announce every list written on ``pulse:updates`` (see pulse.state.updates); None: don't
    updates: Optional[KeySchema] = None
    updates_maxlen: int = 10_000
    #: a live run: flushes observe freshness, kept here for the monitor's quantiles
    live: bool = False
    freshness: deque = field(default_factory=lambda: deque(maxlen=2_000))
    _views: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _writers: Optional[WorkerStores] = None

    def writers(self, redis_url: RedisLike, flush_interval_s: float) -> WorkerStores:
        """The Redis stores of this process's workers (one each)."""
        with self._lock:
            if self._writers is None:
                # (a live run does not remember every user it wrote, which would grow
                # without bound: it counts the user states it made instead; it flushes
                # from the worker threads, for freshness, and a replay from the stores'
                # own threads, for speed: see pulse.state.store)
                self._writers = WorkerStores(redis_url, flush_interval_s, on_store=self.stores.append, hooks=self._store_hooks,
                                             track_users=not self.live, flush_on_add=self.live)
            return self._writers

    def _store_hooks(self) -> tuple:
        """The hooks of one worker's store: its own notifier, the shared metrics."""
        notify = None
        if self.updates is not None:
            # Entry ids from event time only where one writer's order is the run's order,
            # from the start: a resumed run numbers the lists after its snapshot afresh,
            # and an id another list already took would be refused (a list never announced).
            deterministic = self.workers == 1 and not self.cluster and not self.resumed
            notify = UpdateNotifier(self.updates, deterministic, self.updates_maxlen)
        return notify, flush_hook(self.live, self.freshness if self.live else None)

    def close(self) -> None:
        """Flush and close what the steps wrote through (the end of a run)."""
        if self._writers is not None:
            self._writers.close()
        for view in self._views.values():
            if isinstance(view, RemoteView):
                view.close()

    def view(self, redis_url: RedisLike, options: StepOptions):
        """The view of the models the user step blends from: the model step's own
        models when it runs in this process, else (in a cluster) a view filled from
        Redis (see :mod:`pulse.state.view`). Before the model step's first update it
        has learned nothing: a process of its own sees empty models, as it would."""
        models = self.models[-1] if self.models else None
        key = id(models) if models is not None else ("remote" if self.cluster else "empty")
        view = self._views.get(key)
        if view is None:
            with self._lock:
                view = self._views.get(key)
                if view is None:
                    cfg = options.engine
                    if models is not None:
                        view = LocalView(models)
                    elif self.cluster:
                        view = RemoteView(redis_url, cfg.keys, cfg.blend, cfg.recs_seed_recency, cfg.recs_seed_items)
                    else:
                        view = LocalView(ItemModels(cfg))
                    self._views[key] = view
        return view


def build_flow(
    name: str,
    source: Source[Raw],
    fmt: Format,
    options: StepOptions,
    redis_url: RedisLike,
    dlq_sink: DynamicSink,
    handles: RunHandles,
    late_sink: Optional[DynamicSink] = None,
    flush_interval_s: float = 0.05,
) -> Dataflow:
    """Build the dataflow: ``source`` → parse → per-user state and lists → models →
    Redis."""
    counters = handles.counters
    writers = handles.writers(redis_url, flush_interval_s)

    def write(writes: list) -> None:
        writers.current().add(writes)

    def flush() -> None:
        writers.current().flush()

    outputs = UserOutputs(Recommender(options.engine), lambda: handles.view(redis_url, options), write, flush, counters)
    flow = Dataflow(name)
    raw = op.input("input", flow, source)
    events, rest = parse_records("parse", raw, fmt, options.pseudonymize_key)
    parsed = op.branch("ends", rest, lambda x: isinstance(x, DeadLetter))
    dead, ends = parsed.trues, parsed.falses
    # consent: false is the user's opt-out: beside its dead letter, the user step forgets
    # the user at that point of their events (pulse.state.privacy)
    optouts = op.branch("optouts", dead, lambda d: d.reason == "no_consent" and d.user_id is not None)
    events = op.merge("with_optouts", events, op.map("withdrawals", optouts.trues, withdrawal))
    users = track_users("users", events, options, outputs)
    split = op.branch("user_out", users, lambda x: isinstance(x, ModelUpdate))
    updates: Stream[ModelUpdate] = split.trues
    other = op.branch("dead_or_late", split.falses, lambda x: isinstance(x, DeadLetter))
    dead_letters = op.merge("dead_letters", dead, other.trues)
    op.output("dlq", dead_letters, dlq_sink)
    # what the ordered steps count as dead letters: an opt-out's record is counted by its
    # forgetting update instead (which comes later: the ordered steps must not pass its
    # place before it is in)
    refused = op.merge("refused", optouts.falses, other.trues)
    late: Stream[Late] = other.falses
    if late_sink is not None:
        op.output("late", late, late_sink)
    else:
        op.inspect("late_count", late, lambda _step, _x: _bump_late(counters))

    def count_ok(batch: list) -> list:
        counters.events_ok += sum(1 for up in batch if up.event)
        return batch

    updates = op.flat_map_batch("count_ok", updates, count_ok)
    if options.ordered_sources is not None:
        # Dead letters and partition ends tell the ordered steps which records they will
        # never see as updates, so they can apply the rest in canonical order.
        river_in = op.merge("river_in", updates, refused, ends)
    else:
        river_in = updates
    verdicts = learn_river("river", river_in, options, write, flush)
    items = recommend_users("lists", op.merge("with_verdicts", updates, verdicts), options, outputs)
    if options.ordered_sources is not None:
        items = op.merge("items_in", items, refused, ends)
    learned = learn_models("learn", items, options, write, flush, on_models=handles.models.append)
    op.inspect("learned", learned, _nothing)  # (the flow's end: see learn_models)
    return flow


def _nothing(_step: str, _item: None) -> None:
    pass


def _bump_late(counters: Counters) -> None:
    counters.late += 1


def encode_dead_letter(d: DeadLetter) -> bytes:
    return d.to_json()


def encode_late(late: Late) -> bytes:
    return late.event.to_json()


__all__ = ["RunHandles", "build_flow", "encode_dead_letter", "encode_late", "Event"]
