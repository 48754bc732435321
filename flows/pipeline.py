"""The Pulse dataflow, wired top to bottom (the diagram in the README):

    source (recorded log | Kafka)
      └─ parse_records ──────────────── dead letters ──┐
           └─ track_users (per user) ── duplicates ────┤──> DLQ (JSONL file | Kafka topic)
                │                     └─ late events ──┴──> late output (counted)
                │   profile, list (blended from a view of the models) ──> Redis
                └─ learn_models (the model step) ── verdicts, global keys ──> Redis

Replays and live runs share every step; only the source and the DLQ sink differ.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink

from pulse.operators.events import DeadLetter, Event, Raw
from pulse.operators.formats import Format
from pulse.operators.steps import Counters, Late, StepOptions, UserOutputs, learn_models, parse_records, track_users
from pulse.state.engine import Engine, ModelUpdate
from pulse.state.recs import Recommender
from pulse.state.store import RedisLike, RedisSink, RedisStore, WorkerStores
from pulse.state.view import LocalView, RemoteView


@dataclass
class RunHandles:
    """What a run exposes to its caller (summaries, tests) and shares between the
    workers of this process: counters, the Redis stores, the model step's engine when it
    runs here, and the view the user step blends from."""

    counters: Counters = field(default_factory=Counters)
    stores: list[RedisStore] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)
    #: part of a cluster of several processes (the model step may run in another one)
    cluster: bool = False
    _views: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _writers: Optional[WorkerStores] = None

    def writers(self, redis_url: RedisLike, flush_interval_s: float) -> WorkerStores:
        """The Redis stores of this process's workers (one each)."""
        with self._lock:
            if self._writers is None:
                self._writers = WorkerStores(redis_url, flush_interval_s, on_store=self.stores.append)
            return self._writers

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
        engine = self.engines[-1] if self.engines else None
        key = id(engine) if engine is not None else ("remote" if self.cluster else "empty")
        view = self._views.get(key)
        if view is None:
            with self._lock:
                view = self._views.get(key)
                if view is None:
                    cfg = options.engine
                    if engine is not None:
                        view = LocalView(engine)
                    elif self.cluster:
                        view = RemoteView(redis_url, cfg.keys, cfg.blend, cfg.recs_seed_recency, cfg.recs_seed_items)
                    else:
                        view = LocalView(Engine(cfg))
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

    outputs = UserOutputs(Recommender(options.engine), lambda: handles.view(redis_url, options), write, flush)
    flow = Dataflow(name)
    raw = op.input("input", flow, source)
    events, rest = parse_records("parse", raw, fmt)
    parsed = op.branch("ends", rest, lambda x: isinstance(x, DeadLetter))
    dead, ends = parsed.trues, parsed.falses
    users = track_users("users", events, options, outputs)
    split = op.branch("user_out", users, lambda x: isinstance(x, ModelUpdate))
    updates: Stream[ModelUpdate] = split.trues
    other = op.branch("dead_or_late", split.falses, lambda x: isinstance(x, DeadLetter))
    dead_letters = op.merge("dead_letters", dead, other.trues)
    op.output("dlq", dead_letters, dlq_sink)
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
        # Dead letters and partition ends tell the model step which records it will never
        # see as updates, so it can apply the rest in canonical order.
        model_in = op.merge("model_in", updates, dead_letters, ends)
    else:
        model_in = updates
    writes = learn_models("learn", model_in, options, on_engine=handles.engines.append)
    keyed = op.key_on("write_key", writes, lambda w: w.key)
    op.output("redis", keyed, RedisSink(writers))
    return flow


def _bump_late(counters: Counters) -> None:
    counters.late += 1


def encode_dead_letter(d: DeadLetter) -> bytes:
    return d.to_json()


def encode_late(late: Late) -> bytes:
    return late.event.to_json()


__all__ = ["RunHandles", "build_flow", "encode_dead_letter", "encode_late", "Event"]
