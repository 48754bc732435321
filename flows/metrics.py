"""Prometheus metrics of a run and of ``pulse serve`` (prometheus-client's default
registry, which Bytewax's own gauges, such as ``bytewax_kafka_consumer_lag``, share).

``pulse run`` and ``pulse replay`` serve them with ``--metrics-port`` (bound to
127.0.0.1 unless ``--metrics-host`` says otherwise), ``pulse serve`` at ``/metrics``.
The event counters are brought up to date from the run's own counters once per monitor
interval (:mod:`pulse.flows.monitor`), never on the per-event path; Redis flushes are
counted as they happen, by the stores' ``on_flush`` hook (:func:`flush_hook`).

Example:

>>> from prometheus_client import REGISTRY
>>> from pulse.state.store import Put
>>> hook = flush_hook(live=False)
>>> before = REGISTRY.get_sample_value("pulse_redis_writes_total")
>>> hook([Put("pulse:user:{u1}:recs", b"{}")], 0.002)
>>> REGISTRY.get_sample_value("pulse_redis_writes_total") - before
1.0
"""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime
from typing import Callable, Optional, Sequence

import orjson
from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter("pulse_events_in", "Records read from the source")
EVENTS_OK = Counter("pulse_events_ok", "Events accepted and learned from")
EVENTS_DEAD = Counter("pulse_events_dead", "Records dead-lettered, by reason", ["reason"])
EVENTS_LATE = Counter("pulse_events_late", "Events that came after their windows closed")
EVENTS_PER_S = Gauge("pulse_events_per_second", "Records read per second over the monitor's window")
REDIS_WRITES = Counter("pulse_redis_writes", "Writes sent to Redis (after coalescing)")
REDIS_FLUSH = Histogram("pulse_redis_flush_seconds", "Time to send one pipelined flush and read its replies",
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
FRESHNESS = Histogram("pulse_freshness_seconds",
                      "Live runs: from the event time of a user's latest event until the user's list is in Redis",
                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ALERT = Gauge("pulse_monitor_alert", "1 while a data-quality threshold is crossed", ["check"])
USERS_HELD = Gauge("pulse_users_held", "Per-user states this process holds now, by step (user: windows and profile; "
                   "list: the list's state); a live run frees idle users'", ["step"])


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``host:port`` from a background thread."""
    start_http_server(port, addr=host)


def flush_hook(live: bool, recent: Optional[deque] = None) -> Callable[[Sequence, float], None]:
    """A store's ``on_flush``: counts the writes and times the flush; in live runs also
    observes each written list's freshness (and keeps it in ``recent``, for the
    monitor's quantiles)."""

    def on_flush(writes: Sequence, seconds: float) -> None:
        REDIS_WRITES.inc(len(writes))
        REDIS_FLUSH.observe(seconds)
        if not live:
            return
        now = time.time()
        for w in writes:
            if w.key.endswith("}:recs") and hasattr(w, "value"):
                at = orjson.loads(w.value).get("generated_at")
                if at:
                    age = max(0.0, now - datetime.fromisoformat(at).timestamp())
                    FRESHNESS.observe(age)
                    if recent is not None:
                        recent.append(age)

    return on_flush

