"""The Pulse dataflow, wired top to bottom (the diagram in the README):

    source (recorded log | Kafka)
      └─ parse_records ──────────────── dead letters ──┐
           └─ track_users (per user) ── duplicates ────┤──> DLQ (JSONL file | Kafka topic)
                │                     └─ late events ──┴──> late output (counted)
                └─ recommend (engine shard) ──> Redis (coalesced, pipelined)

Replays and live runs share every step; only the source and the DLQ sink differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink

from pulse.operators.events import DeadLetter, Event, Raw
from pulse.operators.formats import Format
from pulse.operators.steps import Counters, Late, StepOptions, parse_records, recommend, track_users
from pulse.state.engine import Engine, UserUpdate
from pulse.state.store import RedisSink, RedisStore


@dataclass
class RunHandles:
    """What a run exposes to its caller (summaries, tests): counters, the Redis stores
    and the engines built by this process's workers."""

    counters: Counters = field(default_factory=Counters)
    stores: list[RedisStore] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)


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
    to_raw: Optional[Callable[[Any], Raw]] = None,
) -> Dataflow:
    """Build the dataflow: ``source`` → parse → per-user state → engine → Redis.

    ``to_raw`` adapts a source whose items are not :class:`Raw` records (a Kafka
    message, say); the records then go through exactly the same steps as a replay."""
    counters = handles.counters
    flow = Dataflow(name)
    raw = op.input("input", flow, source)
    if to_raw is not None:
        raw = op.map("to_raw", raw, to_raw)
    events, rest = parse_records("parse", raw, fmt)
    parsed = op.branch("ends", rest, lambda x: isinstance(x, DeadLetter))
    dead, ends = parsed.trues, parsed.falses
    users = track_users("users", events, options)
    split = op.branch("user_out", users, lambda x: isinstance(x, UserUpdate))
    updates: Stream[UserUpdate] = split.trues
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
        # Dead letters and partition ends tell the engine which records it will never
        # see as updates, so it can apply the rest in canonical order.
        engine_in = op.merge("engine_in", updates, dead_letters, ends)
    else:
        engine_in = updates
    writes = recommend("recommend", engine_in, options, on_engine=handles.engines.append)
    op.output("redis", writes, RedisSink(redis_url, flush_interval_s, on_store=handles.stores.append))
    return flow


def _bump_late(counters: Counters) -> None:
    counters.late += 1


def encode_dead_letter(d: DeadLetter) -> bytes:
    return d.to_json()


def encode_late(late: Late) -> bytes:
    return late.event.to_json()


__all__ = ["RunHandles", "build_flow", "encode_dead_letter", "encode_late", "Event"]
