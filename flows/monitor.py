"""The data-quality monitor: is what flows in still fit to learn from?

Once per ``monitor_interval_s`` a background thread of the run samples its counters
(records in, events accepted, dead letters by reason, late events) and the segments'
drift (``pulse:segments``), compares the last ``monitor_window_s`` with the thresholds
of :class:`Thresholds` (:func:`check`), and writes the result to the run's stats hash
``pulse:stats:{<process>}``: the counters, events/s, consumer lag and freshness in live
runs, the alerts now raised and a capped history of samples, which the dashboard
charts. A threshold crossed shows there, in the log (a warning when it is crossed, a
line when it clears) and as the metric ``pulse_monitor_alert{check}``.

The monitor only reads the flow's counters: it costs the flow nothing per event.

Example (the thresholds on their own):

>>> old = Sample(t=0, events_in=1000, events_ok=990, late=0, dlq={"invalid_json": 10})
>>> new = Sample(t=10_000, events_in=2000, events_ok=1800, late=0, dlq={"invalid_json": 200})
>>> [(a["check"], a["value"]) for a in check(Thresholds(), old, new)]
[('dead_letters:invalid_json', 0.19)]
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import orjson
import redis

from pulse.flows import metrics
from pulse.operators.steps import Counters
from pulse.state.keys import KeySchema
from pulse.state.store import RedisLike, address, connect, masked

log = logging.getLogger("pulse.monitor")

#: samples kept in the stats hash's history (at 1 s, the last 5 minutes)
HISTORY = 300
#: a stats hash outlives its run by this long
STATS_TTL_S = 7 * 86400


@dataclass(frozen=True)
class Thresholds:
    """When the monitor raises an alert, over the last window of samples."""

    #: share of the records dead-lettered for any one reason (generated logs hold 2-7%
    #: crawler traffic, refused as bot_user_agent: a normal day)
    dlq_share_max: float = 0.10
    #: share of accepted events that came after their windows closed
    late_share_max: float = 0.01
    #: live runs: fewer records per second than this (0: no check)
    min_events_per_s: float = 0.0
    #: how far a segment's centroid may move between two summaries (standard deviations;
    #: a young model's centroids moved up to 7.4 in a generated 60k-event replay)
    drift_max: float = 10.0
    #: share checks need at least this many records in the window
    min_events: int = 100


@dataclass
class Sample:
    """The counters at wall-clock time ``t`` (epoch ms)."""

    t: int
    events_in: int
    events_ok: int
    late: int
    dlq: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)


def check(th: Thresholds, old: Sample, new: Sample, live: bool = False) -> list[dict]:
    """The alerts raised by the change from ``old`` to ``new``: ``{"check", "value",
    "threshold", "message"}`` each."""
    alerts = []
    records = new.events_in - old.events_in
    seconds = max(1e-3, (new.t - old.t) / 1000)
    if records >= th.min_events:
        for reason in sorted(new.dlq):
            share = (new.dlq[reason] - old.dlq.get(reason, 0)) / records
            if share > th.dlq_share_max:
                alerts.append({"check": f"dead_letters:{reason}", "value": round(share, 4), "threshold": th.dlq_share_max,
                               "message": f"{share:.1%} of records were dead-lettered as {reason} over the last "
                                          f"{seconds:.0f} s (threshold {th.dlq_share_max:.1%})"})
        accepted = new.events_ok - old.events_ok
        if accepted >= th.min_events:
            share = (new.late - old.late) / accepted
            if share > th.late_share_max:
                alerts.append({"check": "late_events", "value": round(share, 4), "threshold": th.late_share_max,
                               "message": f"{share:.1%} of events came after their windows closed over the last "
                                          f"{seconds:.0f} s (threshold {th.late_share_max:.1%})"})
    rate = records / seconds
    if live and th.min_events_per_s > 0 and rate < th.min_events_per_s:
        alerts.append({"check": "events_per_s", "value": round(rate, 1), "threshold": th.min_events_per_s,
                       "message": f"{rate:.1f} records/s over the last {seconds:.0f} s (threshold {th.min_events_per_s})"})
    for seg, drift in sorted(new.drift.items()):
        if drift > th.drift_max:
            alerts.append({"check": f"segment_drift:{seg}", "value": drift, "threshold": th.drift_max,
                           "message": f"segment {seg}'s centroid moved {drift:.2f} standard deviations (threshold {th.drift_max})"})
    return alerts


class Monitor:
    """Samples a run's counters, checks them and writes ``pulse:stats:{<process>}``
    (see the module docstring) from a thread of its own, until :meth:`close`.

    :arg events_in: how many records the source has read so far.
    :arg lag: live runs: the consumer lag (records behind the topic's end), or None.
    :arg freshness: live runs: recent freshness values in seconds (filled by
        :func:`pulse.flows.metrics.flush_hook`).
    :arg write_stats: write the stats hash (else only the log and the metrics hear of
        alerts).
    """

    def __init__(self, redis_url: RedisLike, keys: KeySchema, counters: Counters, events_in: Callable[[], int],
                 thresholds: Thresholds = Thresholds(), interval_s: float = 1.0, window_s: float = 10.0,
                 mode: str = "replay", process: int = 0, processes: int = 1, run_id: Optional[str] = None,
                 lag: Optional[Callable[[], Optional[int]]] = None, freshness: Optional[deque] = None,
                 write_stats: bool = True) -> None:
        self.url = redis_url
        self.write_stats = write_stats
        self.keys = keys
        self.counters = counters
        self.events_in = events_in
        self.thresholds = thresholds
        self.interval_s = interval_s
        self.window_s = window_s
        self.mode = mode
        self.process = process
        self.processes = processes
        self.run_id = run_id or uuid.uuid4().hex
        self.lag = lag
        self.freshness = freshness
        self.alerts: dict[str, dict] = {}
        self.started_at = int(time.time() * 1000)
        # the run's start, all zero: a run shorter than the window is judged as a whole
        self.history: deque[Sample] = deque([Sample(self.started_at, 0, 0, 0)], maxlen=HISTORY)
        self._client = connect(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self._stop = threading.Event()
        self._reported = dict(in_=0, ok=0, late=0, dlq={})
        self._thread = threading.Thread(target=self._run, name="pulse-monitor", daemon=True)

    @classmethod
    def of_run(cls, settings, redis_url: RedisLike, counters: Counters, events_in: Callable[[], int], mode: str,
               addresses=None, process: int = 0, **kw) -> "Monitor":
        """The monitor of a run with ``settings`` (a :class:`~pulse.flows.config.Settings`);
        the processes of one cluster share a run id (their stats add up)."""
        run_id = uuid.uuid5(uuid.NAMESPACE_URL, ";".join(addresses)).hex if addresses else None
        return cls(redis_url, settings.keys(), counters, events_in, settings.thresholds(), settings.monitor_interval_s,
                   settings.monitor_window_s, mode=mode, process=process, processes=len(addresses or ()) or 1,
                   run_id=run_id, **kw)

    def start(self) -> "Monitor":
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop sampling and write the final stats (``running`` 0)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        try:
            self.tick(running=False)
        except (redis.RedisError, OSError) as err:
            log.warning("monitor could not write final stats to Redis at %s: %s", address(self.url), masked(str(err), self.url))
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception as err:  # noqa: BLE001 - monitoring must never stop the flow
                log.warning("monitor could not write stats to Redis at %s: %s", address(self.url), masked(str(err), self.url))

    def sample(self) -> Sample:
        c = self.counters
        with c.lock:
            dlq = dict(c.dlq)
        drift, sizes = {}, {}
        raw = self._client.get(self.keys.segments)
        if raw:
            for seg, doc in orjson.loads(raw).get("segments", {}).items():
                drift[seg], sizes[seg] = doc.get("drift", 0.0), doc.get("windows", 0)
        return Sample(int(time.time() * 1000), self.events_in(), c.events_ok, c.late, dlq, drift, sizes)

    def tick(self, running: bool = True) -> dict:
        """Take a sample, check it, update the metrics and write the stats hash; returns
        what was written."""
        new = self.sample()
        self.history.append(new)
        old = next((s for s in self.history if new.t - s.t <= self.window_s * 1000), new)
        if old is new and len(self.history) > 1:
            old = self.history[-2]
        alerts = check(self.thresholds, old, new, live=self.mode == "live")
        self._report(new, old, alerts)
        seconds = max(1e-3, (new.t - old.t) / 1000)
        fields = {
            "run": self.run_id, "process": self.process, "processes": self.processes, "mode": self.mode,
            "running": int(running), "started_at": self.started_at, "updated_at": new.t,
            "events_in": new.events_in, "events_ok": new.events_ok, "events_dlq": sum(new.dlq.values()),
            "events_late": new.late, "dlq_by_reason": orjson.dumps(dict(sorted(new.dlq.items()))),
            "events_per_s": round((new.events_in - old.events_in) / seconds, 1) if old is not new else 0.0,
            "alerts": orjson.dumps(alerts),
            "history": orjson.dumps([asdict(s) for s in self.history]),
        }
        if self.lag is not None:
            lag = self.lag()
            fields["consumer_lag"] = "" if lag is None else lag
        if self.freshness:
            values = sorted(self.freshness)
            fields["freshness_p50_ms"] = round(values[len(values) // 2] * 1000, 1)
            fields["freshness_p95_ms"] = round(values[min(len(values) - 1, int(len(values) * 0.95))] * 1000, 1)
        if not self.write_stats:
            return fields
        key = self.keys.stats(self.process)
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, STATS_TTL_S)
        pipe.execute()
        return fields

    def _report(self, new: Sample, old: Sample, alerts: list[dict]) -> None:
        r = self._reported
        metrics.EVENTS_IN.inc(new.events_in - r["in_"])
        metrics.EVENTS_OK.inc(new.events_ok - r["ok"])
        metrics.EVENTS_LATE.inc(new.late - r["late"])
        for reason, n in new.dlq.items():
            metrics.EVENTS_DEAD.labels(reason=reason).inc(n - r["dlq"].get(reason, 0))
        self._reported = dict(in_=new.events_in, ok=new.events_ok, late=new.late, dlq=dict(new.dlq))
        with self.counters.lock:
            held = dict(self.counters.held)
        for step, n in held.items():
            metrics.USERS_HELD.labels(step=step).set(n)
        if old is not new:
            metrics.EVENTS_PER_S.set((new.events_in - old.events_in) / max(1e-3, (new.t - old.t) / 1000))
        raised = {a["check"]: a for a in alerts}
        for name, alert in raised.items():
            if name not in self.alerts:
                log.warning("data quality: %s", alert["message"])
            metrics.ALERT.labels(check=name).set(1)
        for name in set(self.alerts) - set(raised):
            log.warning("data quality: %s is back within its threshold", name)
            metrics.ALERT.labels(check=name).set(0)
        self.alerts = raised
