"""The Pulse dataflow, wired top to bottom (the diagram in the README):

    source (recorded log | Kafka)
      └─ parse_records ──────────────── dead letters ──┐
           └─ track_users (per user) ── duplicates ────┤──> DLQ (JSONL file | Kafka topic)
                │                     └─ late events ──┴──> late output (counted)
                └─ learn_models (the model step) ── global writes ──┐
                     └─ recommend (per user, reads a model view) ───┴──> Redis

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
from pulse.operators.steps import Counters, Late, StepOptions, learn_models, parse_records, recommend, track_users
from pulse.state.engine import Engine, ModelUpdate, RecsUpdate
from pulse.state.store import RedisSink, RedisStore
from pulse.state.view import LocalView, RemoteView


@dataclass
class RunHandles:
    """What a run exposes to its caller (summaries, tests): counters, the Redis stores
    and the engines built by this process's workers."""

    counters: Counters = field(default_factory=Counters)
    stores: list[RedisStore] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)
    views: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def view(self, redis_url: str, options: StepOptions):
        """The model view of this process's recommendation steps: the model step itself
        when it runs in this process (it does before any update reaches them), else a
        view filled from Redis (see :mod:`pulse.state.view`)."""
        if self.views:
            return self.views[0]
        with self.lock:
            if not self.views:
                cfg = options.engine
                self.views.append(LocalView(self.engines[0]) if self.engines else
                                  RemoteView(redis_url, cfg.keys, cfg.blend, cfg.recs_seed_recency, cfg.recs_seed_items))
            return self.views[0]


def build_flow(
    name: str,
    source: Source[Raw],
    fmt: Format,
    options: StepOptions,
    redis_url: str,
    dlq_sink: DynamicSink,
    handles: RunHandles,
    late_sink: Optional[DynamicSink] = None,
    flush_interval_s: float = 0.05,
) -> Dataflow:
    """Build the dataflow: ``source`` → parse → per-user state → models → per-user
    lists and documents → Redis."""
    counters = handles.counters
    flow = Dataflow(name)
    raw = op.input("input", flow, source)
    events, rest = parse_records("parse", raw, fmt)
    parsed = op.branch("ends", rest, lambda x: isinstance(x, DeadLetter))
    dead, ends = parsed.trues, parsed.falses
    users = track_users("users", events, options)
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
        counters.events_ok += sum(1 for up in batch if up.event is not None)
        return batch

    updates = op.flat_map_batch("count_ok", updates, count_ok)
    if options.ordered_sources is not None:
        # Dead letters and partition ends tell the model step which records it will never
        # see as updates, so it can apply the rest in canonical order.
        model_in = op.merge("model_in", updates, dead_letters, ends)
    else:
        model_in = updates
    learned = learn_models("learn", model_in, options, on_engine=handles.engines.append)
    per_user = op.branch("models_out", learned, lambda x: isinstance(x, RecsUpdate))
    user_writes = recommend("recommend", per_user.trues, options, lambda: handles.view(redis_url, options))
    writes = op.merge("writes", per_user.falses, user_writes)
    keyed = op.key_on("write_key", writes, lambda w: w.key)
    op.output("redis", keyed, RedisSink(redis_url, flush_interval_s, on_store=handles.stores.append))
    return flow


def _bump_late(counters: Counters) -> None:
    counters.late += 1


def encode_dead_letter(d: DeadLetter) -> bytes:
    return d.to_json()


def encode_late(late: Late) -> bytes:
    return late.event.to_json()


__all__ = ["RunHandles", "build_flow", "encode_dead_letter", "encode_late", "Event"]
