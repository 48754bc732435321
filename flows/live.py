"""Live runs: the Pulse dataflow on a Kafka topic, plus the tools around it.

* :func:`run_live` consumes a topic (:class:`LiveKafkaSource`: one consumer per
  partition) and runs exactly the dataflow of a replay
  (:func:`pulse.flows.pipeline.build_flow`); dead letters go to a Kafka DLQ topic
  (original payload as the value, the reason in headers) or are counted. It runs
  until stopped (SIGINT/SIGTERM end the input gracefully: windows close, the
  model step flushes, Redis gets the last writes), or, for tests and benchmarks, after
  ``max_events`` records or ``idle_exit_s`` seconds without a new record.
* :func:`produce` pushes a recorded log into a topic, keyed by user, optionally paced.
* :func:`record` writes a topic back out as a replayable log.

Before anything starts, the broker must answer and the topic must exist; otherwise a
:class:`LiveError` says what is wrong, where, and how to fix it (the CLI exits with 2).

Offsets: the source assigns partitions itself and resumes from recovery snapshots
(``recovery_dir``), never from committed offsets. The source still commits its position
to the consumer group ``group_id`` every 0.25 s, for monitoring only: the usual
tools (``kafka-consumer-groups.sh --describe --group pulse``) then show the lag.
"""

from __future__ import annotations

import gc
import gzip
import logging
import signal
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Sequence, Union

import orjson
from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from pulse.flows.config import Settings
from pulse.flows.monitor import Monitor
from pulse.flows.pipeline import RunHandles, build_flow
from pulse.flows.replay import run_flow
from pulse.flows.replay import UsageError, prepare_recovery, step_options, summary
from pulse.flows.sources import JsonlSink, log_files, open_log
from pulse.operators.events import DeadLetter, Raw
from pulse.operators.formats import FORMATS, Format
from pulse.operators.steps import Counters
from pulse.state.store import RedisLike

log = logging.getLogger("pulse.live")
_rdkafka_log = logging.getLogger("pulse.kafka")
_probe_log = logging.getLogger("pulse.kafka.probe")
_probe_log.setLevel(logging.CRITICAL)  # connection refusals while probing are reported by us, once
_probe_log.propagate = False

#: the longest pause between fetches of an idle Kafka partition (see _LivePartition)
IDLE_FETCH_MS = 4


class LiveError(UsageError):
    """A problem with the broker or topic, said so the user can fix it (exit code 2)."""


@dataclass(frozen=True)
class KafkaCluster:
    """Where the brokers are (``bootstrap``: ``HOST:PORT[,HOST:PORT...]``) and the
    librdkafka settings every client needs to talk to them (``options``: security
    protocol, SASL, SSL), passed through unchanged. Its repr leaves the options out:
    they hold passwords.

    >>> KafkaCluster("k1:9093", {"security.protocol": "SASL_SSL", "sasl.password": "s3cret"})
    KafkaCluster(k1:9093, SASL_SSL)
    >>> sorted(KafkaCluster("k1:9093", {"sasl.mechanism": "PLAIN"}).config(acks="all"))
    ['acks', 'bootstrap.servers', 'sasl.mechanism']
    """

    bootstrap: str
    options: Mapping[str, str] = field(default_factory=dict)

    def config(self, **extra: Any) -> dict:
        """A client's configuration: the brokers, the security options, then ``extra``."""
        return {"bootstrap.servers": self.bootstrap, **self.options, **extra}

    def __repr__(self) -> str:
        return f"KafkaCluster({self.bootstrap}, {self.options.get('security.protocol', 'PLAINTEXT')})"


#: Brokers as a caller may name them: ``"host:port,..."``, a list of ``host:port``, or a
#: :class:`KafkaCluster` with its security options.
Brokers = Union[str, Sequence[str], KafkaCluster]


def _kafka(brokers: Brokers) -> KafkaCluster:
    if isinstance(brokers, KafkaCluster):
        return brokers
    return KafkaCluster(brokers if isinstance(brokers, str) else ",".join(brokers))


def _error_cb(err: KafkaError) -> None:
    # Transport errors while a broker restarts are expected; librdkafka reconnects.
    level = logging.ERROR if err.fatal() else logging.WARNING
    _rdkafka_log.log(level, "kafka: %s", err)


# -- checks ---------------------------------------------------------------------------
def check_topics(brokers: Brokers, topics: Sequence[str], timeout_s: float = 10.0) -> dict[str, int]:
    """Wait up to ``timeout_s`` (retrying with backoff) for the broker to answer, then
    check every topic exists. Returns partitions per topic; raises :class:`LiveError`."""
    kafka = _kafka(brokers)
    bootstrap = kafka.bootstrap
    refused: list[KafkaError] = []  # authentication failures, which list_topics reports only as a transport failure

    def on_error(err: KafkaError) -> None:
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            refused.append(err)

    admin = AdminClient(kafka.config(logger=_probe_log, error_cb=on_error, **{"socket.connection.setup.timeout.ms": 3000}))
    deadline = time.monotonic() + timeout_s
    delay, attempts = 0.25, 0
    while True:
        attempts += 1
        try:
            md = admin.list_topics(timeout=max(0.5, min(3.0, deadline - time.monotonic())))
            break
        except KafkaException as err:
            problem = err.args[0].str() if err.args and isinstance(err.args[0], KafkaError) else str(err)
        admin.poll(0)  # serves on_error
        if refused:
            problem = refused[-1].str()
        if time.monotonic() + delay >= deadline:
            if refused:
                raise LiveError(
                    f"the Kafka broker at {bootstrap} refused our credentials ({problem}): check PULSE_KAFKA_SASL_USERNAME, "
                    "PULSE_KAFKA_SASL_PASSWORD[_FILE], PULSE_KAFKA_SASL_MECHANISM and PULSE_KAFKA_SECURITY_PROTOCOL"
                )
            raise LiveError(
                f"cannot reach the Kafka broker at {bootstrap} ({problem}; {attempts} attempts in {timeout_s:g}s). "
                "Start the broker (for a local one: `python3 scripts/kafka_local.py start`) or pass --brokers HOST:PORT."
            )
        log.warning("Kafka broker at %s not reachable yet (%s); retrying in %.2fs", bootstrap, problem, delay)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    out = {}
    for topic in topics:
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            raise LiveError(
                f"topic '{topic}' does not exist on {bootstrap}; create it with "
                f"`python3 scripts/kafka_local.py create-topic --bootstrap {bootstrap} --topic {topic} --partitions 3` "
                f"(or kafka-topics.sh --create --topic {topic}), or pass the right topic name"
            )
        out[topic] = len(meta.partitions)
    return out


# -- stopping ---------------------------------------------------------------------------
class StopControl:
    """When a live source ends: after ``max_events`` records, after ``idle_exit_s``
    seconds without a record, or when asked (a signal). Shared by every partition of
    the process; once it decides to stop, the decision holds for all of them."""

    def __init__(self, max_events: Optional[int] = None, idle_exit_s: Optional[float] = None) -> None:
        self.max_events = max_events
        self.idle_exit_s = idle_exit_s
        self.consumed = 0
        self.last_record = time.monotonic()
        self.reason: Optional[str] = None
        self.lag_at_exit: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        """How many of ``n`` new records may still be emitted."""
        with self._lock:
            if self.reason is not None:
                return 0
            if n and self.max_events is not None:
                n = min(n, self.max_events - self.consumed)
            if n > 0:
                self.consumed += n
                self.last_record = time.monotonic()
            if self.max_events is not None and self.consumed >= self.max_events:
                self.reason = "max_events"
            return max(n, 0)

    def done(self) -> bool:
        if self.reason is None and self.idle_exit_s is not None and time.monotonic() - self.last_record >= self.idle_exit_s:
            with self._lock:
                if self.reason is None:
                    self.reason = "idle_exit"
        return self.reason is not None

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason


# -- source -----------------------------------------------------------------------------
class _LivePartition(StatefulSourcePartition[Raw, tuple]):
    """One Kafka partition, read by a consumer of its own that is assigned just that
    partition (no group membership, no rebalancing: Bytewax decides which worker reads
    it), starting at the resume offset or at the beginning of the partition.

    It emits the dataflow's :class:`Raw` records directly (source ``topic/partition``,
    the offset, the value) with ``seq``: 0, 1, 2, ... over the records this source
    emitted from the partition (offsets can have gaps: transactions, compaction). The
    model step applies each partition's updates in ``seq`` order, so its input does not
    depend on how Bytewax batched and grouped them (see pulse.operators.order).

    It ends on :class:`StopControl`'s word, never at the end of the partition. Its
    resume state is ``(next offset, records emitted)``; the next offset is also
    committed to the consumer group every 0.25 s, for monitoring only, and the lag
    left behind is noted in ``control.lag_at_exit`` when it ends."""

    def __init__(
        self,
        config: dict,
        step_id: str,
        name: str,
        topic: str,
        partition: int,
        control: StopControl,
        batch_size: int,
        offset: int = OFFSET_BEGINNING,
        count: int = 0,
        commit_every_s: float = 0.25,
    ) -> None:
        self.name = name
        self.topic = topic
        self.partition = partition
        self.source = f"{topic}/{partition}"  # Raw.source of its records
        self.control = control
        self.batch_size = batch_size
        self.offset = offset  # the next offset to read; OFFSET_BEGINNING until a record was read
        self.count = count  # records emitted from this partition (the next seq)
        self.commit_every_s = commit_every_s
        self._lag = BYTEWAX_CONSUMER_LAG_GAUGE.labels(step_id=step_id, topic=topic, partition=partition)
        self._committed = -1
        self._commit_at = time.monotonic() + commit_every_s
        self._ended = False
        self._empty = 0  # fetches in a row that found nothing
        self._awake: Optional[datetime] = None
        self.consumer = Consumer({**config, "stats_cb": self._stats})
        self.consumer.assign([TopicPartition(topic, partition, offset)])

    def next_batch(self) -> List[Raw]:
        if self._ended or self.control.done():
            self._end()
            raise StopIteration
        msgs = self._fetch()
        self._back_off(not msgs)
        if msgs:
            keep = self.control.take(len(msgs))
            if keep < len(msgs):
                msgs = msgs[:keep]
            if msgs:
                # Resume (and commit) right after the last record emitted, not the last fetched.
                self.offset = msgs[-1].offset() + 1
        seq = self.count
        source = self.source
        batch = [Raw(source, m.offset(), m.value() or b"", n) for n, m in enumerate(msgs, seq)]
        self.count = seq + len(batch)
        now = time.monotonic()
        if now >= self._commit_at:
            self._commit()
            self._commit_at = now + self.commit_every_s
        return batch

    def next_awake(self) -> Optional[datetime]:
        return self._awake

    def _back_off(self, empty: bool) -> None:
        """An idle partition is fetched less often: 1 ms after an empty fetch (Bytewax's
        own pause), then 2, then every :data:`IDLE_FETCH_MS` ms until records come.
        Each wake-up runs the worker's whole dataflow: at 200 events/s two processes took
        0.46 cores with Bytewax's pause alone, 0.37 with this."""
        if not empty:
            self._empty, self._awake = 0, None
            return
        self._empty += 1
        if self._empty > 1:
            pause = min(IDLE_FETCH_MS, 1 << (self._empty - 1))
            self._awake = datetime.now(timezone.utc) + timedelta(milliseconds=pause)

    def _fetch(self) -> list:
        """The records queued for this partition, up to ``batch_size``, without waiting.

        Bytewax's own Kafka source waits 1 ms (``consume(n, 0.001)``), which blocks the
        worker for the whole millisecond whenever fewer than ``n`` records are queued
        (always, at a steady rate), once per partition per round. Bytewax pauses 1 ms
        after an empty batch anyway, and meanwhile the worker runs the rest of the
        dataflow. An error on the partition stops the flow: resuming past it would
        silently skip records."""
        try:
            msgs = self.consumer.consume(self.batch_size, 0)
        except KafkaException as err:
            raise RuntimeError(f"consuming Kafka topic {self.topic!r} partition {self.partition} failed: {err}") from err
        for msg in msgs:
            err = msg.error()
            if err is not None:
                raise RuntimeError(
                    f"error consuming from Kafka topic {self.topic!r} partition {self.partition} "
                    f"after offset {self.offset}: {err}"
                )
        return msgs

    def _stats(self, json_stats: str) -> None:
        """librdkafka's statistics (``statistics.interval.ms``): the partition's lag for
        the ``bytewax_kafka_consumer_lag`` gauge on ``/metrics``, as Bytewax's source
        reports it. Runs inside ``consume``: it must never raise."""
        if self.offset < 0:
            return  # nothing read yet: no position to measure from
        try:
            part = orjson.loads(json_stats)["topics"][self.topic]["partitions"][str(self.partition)]
            self._lag.set(max(0, part["ls_offset"] - self.offset))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass

    def _commit(self) -> None:
        offset = self.offset
        if offset >= 0 and offset != self._committed:
            try:
                self.consumer.commit(offsets=[TopicPartition(self.topic, self.partition, offset)], asynchronous=True)
                self._committed = offset
            except KafkaException as err:  # monitoring only: never stop the flow for it
                log.debug("commit of %s@%d failed: %s", self.name, offset, err)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._commit()
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, self.partition), timeout=2, cached=False)
            self.control.lag_at_exit[self.name] = max(0, high - (self.offset if self.offset >= 0 else low))
        except KafkaException:
            pass

    def snapshot(self) -> tuple:
        return (self.offset, self.count)

    def close(self) -> None:
        self._end()
        self.consumer.close()


class LiveKafkaSource(FixedPartitionedSource[Raw, tuple]):
    """Every partition of ``topic`` as a :class:`_LivePartition`, with one consumer
    each. ``partitions`` is counted up front by :func:`check_topics`, with a timeout:
    listing them here would wait forever for an unreachable broker.

    The consumer group ``group_id`` only receives the committed positions (monitoring);
    nothing is ever read back from it."""

    def __init__(
        self,
        brokers: Brokers,
        topic: str,
        partitions: int,
        control: StopControl,
        group_id: str = "pulse",
        batch_size: int = 100,
    ) -> None:
        self.topic = topic
        # Part names as Bytewax's KafkaSource spells them, so recovery stores written
        # before keep resuming.
        self.parts = {f"{p}-{topic}": p for p in range(partitions)}
        self.control = control
        self.batch_size = batch_size
        self.config = _kafka(brokers).config(**{
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.partition.eof": False,  # a live run ends on StopControl's word, not at the end of the topic
            "statistics.interval.ms": 1000,  # feeds the lag gauge (the partition's stats callback)
            "error_cb": _error_cb,
            "logger": _rdkafka_log,
        })

    def list_parts(self) -> List[str]:
        return list(self.parts)

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[tuple]) -> _LivePartition:
        offset, count = resume_state if resume_state is not None else (OFFSET_BEGINNING, 0)
        return _LivePartition(
            self.config, step_id, for_part, self.topic, self.parts[for_part], self.control, self.batch_size, offset, count
        )


# -- dead letters to Kafka ----------------------------------------------------------------
def dead_letter_headers(d: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        ("pulse-reason", d.reason.encode()),
        ("pulse-field", (d.field or "").encode()),
        ("pulse-detail", d.detail.encode("utf-8", "replace")),
        ("pulse-source", d.source.encode()),
        ("pulse-position", str(d.position).encode()),
        *([("pulse-payload-withheld", b"true")] if d.payload_withheld else []),
    ]


class _DeliveryStats:
    def __init__(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.last_error: Optional[str] = None
        self.lock = threading.Lock()

    def on_delivery(self, err: Optional[KafkaError], _msg: Any) -> None:
        with self.lock:
            if err is None:
                self.delivered += 1
            else:
                self.failed += 1
                self.last_error = str(err)
        if err is not None:
            log.error("a message was not delivered to Kafka: %s", err)


def _produce(producer: Producer, topic: str, value: bytes, key: Optional[bytes] = None, headers=None) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers)
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.05)


class _KafkaDlqPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, producer: Producer, topic: str, stats: _DeliveryStats, count: Callable[[DeadLetter], None], sync: bool) -> None:
        self.producer = producer
        self.topic = topic
        self.stats = stats
        self.count = count
        self.sync = sync

    def write_batch(self, items: List[DeadLetter]) -> None:
        for d in items:
            key = d.user_id.encode() if d.user_id else None
            _produce(self.producer, self.topic, d.payload, key, dead_letter_headers(d))
            self.count(d)
        self.stats.sent += len(items)
        if self.sync:  # with recovery: delivered before the epoch can be snapshotted
            self.producer.flush()
        else:
            self.producer.poll(0)

    def close(self) -> None:
        left = self.producer.flush(60)
        if left:
            with self.stats.lock:
                self.stats.failed += left
                self.stats.last_error = f"{left} dead letters still queued after 60 s"
            log.error("%d dead letters were not delivered to %s", left, self.topic)


class KafkaDlqSink(DynamicSink[DeadLetter]):
    """Dead letters to a Kafka topic: the original payload as the value, the reason,
    field, detail, source and position as ``pulse-*`` headers, the user id (when known)
    as the key. Deliveries are confirmed (``acks=all``, idempotent producer); failures
    are counted in :attr:`stats` and logged."""

    def __init__(self, brokers: Brokers, topic: str, count: Callable[[DeadLetter], None], sync: bool = False) -> None:
        self.kafka = _kafka(brokers)
        self.topic = topic
        self.count = count
        self.sync = sync
        self.stats = _DeliveryStats()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaDlqPartition:
        producer = Producer(_producer_config(self.kafka, self.stats.on_delivery))
        return _KafkaDlqPartition(producer, self.topic, self.stats, self.count, self.sync)


def _producer_config(kafka: KafkaCluster, on_delivery: Callable, **extra: Any) -> dict:
    return kafka.config(**{
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "on_delivery": on_delivery,
        "error_cb": _error_cb,
        "logger": _rdkafka_log,
        **extra,
    })


# -- the live run ---------------------------------------------------------------------------
def consumer_lag() -> Optional[int]:
    """Records behind the topic's end, summed over this process's partitions (the
    ``bytewax_kafka_consumer_lag`` gauges); None before any was measured."""
    samples = [s.value for metric in BYTEWAX_CONSUMER_LAG_GAUGE.collect() for s in metric.samples]
    return int(sum(samples)) if samples else None


def live_format(name: str) -> Format:
    if name not in FORMATS:
        raise UsageError(f"unknown format {name!r}: use one of {', '.join(FORMATS)}")
    return {"native": Format.native, "movielens": Format.movielens, "taobao": Format.taobao}[name]()


def run_live(
    brokers: Brokers,
    topic: str,
    settings: Settings,
    redis_url: RedisLike,
    dlq_topic: Optional[str] = None,
    recovery_dir: Optional[str] = None,
    max_events: Optional[int] = None,
    idle_exit_s: Optional[float] = None,
    fmt_name: str = "native",
    batch_size: int = 100,
    group_id: str = "pulse",
    connect_timeout_s: float = 10.0,
    epoch_interval_s: float = 10.0,
    workers: int = 1,
    addresses: Optional[Sequence[str]] = None,
    process_id: int = 0,
    handle_signals: bool = True,
    control: Optional[StopControl] = None,
) -> dict:
    """Run the dataflow on ``topic`` into Redis until stopped; returns the run summary.

    ``control`` lets a caller (a test, a benchmark thread) stop the run with
    ``control.stop("reason")``; SIGINT and SIGTERM do the same when this runs in the
    main thread and ``handle_signals`` is set.

    ``batch_size`` caps the records taken from each partition per round: the steps
    emit a batch's writes when the whole batch is done, so after a pause (a GC, a busy
    machine) a backlog read 1,000 per partition delayed the first of them by the whole
    batch's work (100-400 ms); 100 per partition costs no measurable throughput.
    """
    from pulse.state.store import ping, stored_schema_problem

    # A live run's state grows for hours: full garbage collections of it stalled the
    # flow for up to 170 ms (measured); collect young objects far less often.
    gc.set_threshold(settings.gc_threshold, 50, 1000)
    kafka = _kafka(brokers)
    fmt = live_format(fmt_name)
    parts = check_topics(kafka, [topic] + ([dlq_topic] if dlq_topic else []), connect_timeout_s)
    problem = ping(redis_url)
    if problem:
        raise LiveError(f"{problem}. Start Redis or point --redis at a running one.")
    problem = stored_schema_problem(redis_url, settings.keys())
    if problem:
        raise LiveError(problem)

    if control is None:
        control = StopControl(max_events, idle_exit_s)
    else:
        control.max_events = control.max_events if max_events is None else max_events
        control.idle_exit_s = control.idle_exit_s if idle_exit_s is None else idle_exit_s
    total_workers = workers * max(1, len(addresses or ()))
    # (process 0 creates and checks the store; see prepare_recovery)
    store = prepare_recovery(Path(recovery_dir), total_workers, create=process_id == 0) if recovery_dir else None
    recovery = store.config if store is not None else None
    handles = RunHandles(cluster=len(addresses or ()) > 1, workers=workers, updates=settings.keys() if settings.updates else None,
                         updates_maxlen=settings.updates_maxlen, live=True, resumed=store is not None and store.resumed)
    counters: Counters = handles.counters

    def count_dead(d: DeadLetter) -> None:
        counters.dead(d.reason)

    dlq_sink: DynamicSink
    if dlq_topic:
        dlq_sink = KafkaDlqSink(kafka, dlq_topic, count_dead, sync=recovery_dir is not None)
    else:
        dlq_sink = JsonlSink(None, lambda d: b"", count_dead)
    source = LiveKafkaSource(kafka, topic, parts[topic], control, group_id, batch_size)
    sources = [f"{topic}/{p}" for p in range(parts[topic])]  # Raw.source of each partition (_LivePartition)
    flow = build_flow(
        "pulse_live",
        source,
        fmt,
        step_options(settings, live=True, snapshots=recovery_dir is not None, ordered_sources=sources, across_processes=handles.cluster),
        redis_url,
        dlq_sink,
        handles,
        flush_interval_s=settings.flush_interval_s,
    )
    # What is alive now (modules, models, the flow) lives as long as the run: keep it
    # out of the collector's full passes, which otherwise walk it every time.
    gc.collect()
    gc.freeze()

    restore = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        def on_signal(signum, _frame):
            if control.reason == "signal":
                raise KeyboardInterrupt  # a second signal: stop now
            log.warning("signal %d: finishing the input and flushing (send it again to abort)", signum)
            control.stop("signal")

        for sig in (signal.SIGINT, signal.SIGTERM):
            restore[sig] = signal.signal(sig, on_signal)
    monitor = Monitor.of_run(settings, redis_url, counters, lambda: control.consumed, "live", addresses, process_id,
                             lag=consumer_lag, freshness=handles.freshness)
    monitor.start()
    started = time.perf_counter()
    try:
        run_flow(flow, workers, recovery, epoch_interval_s, addresses, process_id)
    finally:
        handles.close()
        monitor.close()
        for sig, handler in restore.items():
            signal.signal(sig, handler)
    seconds = time.perf_counter() - started
    out = summary(handles, control.consumed, seconds)
    out.update(
        topic=topic,
        partitions=parts[topic],
        stopped_by=control.reason,
        lag_at_exit=sum(control.lag_at_exit.values()),
    )
    if dlq_topic:
        stats = dlq_sink.stats  # type: ignore[attr-defined]
        out.update(dlq_topic=dlq_topic, dlq_delivered=stats.delivered, dlq_failed=stats.failed)
    return out


# -- produce ------------------------------------------------------------------------------------
class Pacer:
    """A token bucket: :meth:`wait` returns when the next event may go, ``rate`` per
    second on average with bursts of at most ``burst`` (about 5 ms worth). No limit
    when ``rate`` is None."""

    def __init__(self, rate: Optional[float], burst: Optional[float] = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, (rate or 0) * 0.005)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def wait(self) -> None:
        if self.rate is None:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            time.sleep((1.0 - self.tokens) / self.rate)


def user_key(line: bytes, fmt: str = "native") -> Optional[bytes]:
    """The Kafka key of a log line: its user id, or None when it does not parse (the
    flow then dead-letters the line with its reason)."""
    if fmt == "native":
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if isinstance(obj, dict):
            uid = obj.get("user_id")
            if isinstance(uid, str) and uid:
                return uid.encode()
            if isinstance(uid, int) and not isinstance(uid, bool):
                return str(uid).encode()
        return None
    sep = b"\t" if fmt == "movielens" else b","
    head = line.split(sep, 1)[0].strip()
    return head or None


def log_lines(path: Path) -> Any:
    """The non-blank lines of a recorded log (file, .gz or directory), as a replay reads them."""
    for f in log_files(Path(path)):
        with open_log(f) as fh:
            for line in fh:
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield line


def produce(
    path: Path,
    fmt: str,
    brokers: Brokers,
    topic: str,
    rate: Optional[float] = None,
    connect_timeout_s: float = 10.0,
) -> dict:
    """Push a recorded log into ``topic``, keyed by user id, at ``rate`` events/s (as
    fast as possible when None). Every delivery is confirmed; ``failed`` counts those
    that were not."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if rate is not None and rate <= 0:
        raise UsageError("--rate must be positive")
    files = log_files(Path(path))  # raises LogNotFound before we touch the broker
    kafka = _kafka(brokers)
    check_topics(kafka, [topic], connect_timeout_s)
    stats = _DeliveryStats()
    producer = Producer(_producer_config(kafka, stats.on_delivery, **{"queue.buffering.max.messages": 500_000}))
    pacer = Pacer(rate)
    n = keyless = 0
    started = time.perf_counter()
    for f in files:
        for line in log_lines(f):
            key = user_key(line, fmt)
            keyless += key is None
            pacer.wait()
            _produce(producer, topic, line, key)
            n += 1
            if n % 1000 == 0:
                producer.poll(0)
    left = producer.flush(120)
    seconds = time.perf_counter() - started
    failed = stats.failed + left
    return {
        "events": n,
        "keyless": keyless,
        "topic": topic,
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "failed": failed,
        **({"last_error": stats.last_error or f"{left} messages undelivered"} if failed else {}),
    }


# -- record -----------------------------------------------------------------------------------
def record(
    brokers: Brokers,
    topic: str,
    out: Path,
    max_events: Optional[int] = None,
    idle_exit_s: Optional[float] = None,
    connect_timeout_s: float = 10.0,
) -> dict:
    """Write ``topic``, from the beginning, as a replayable log at ``out``: one JSON line
    per message value, in offset order within each partition (``.gz`` compresses; an
    existing directory gets one file per partition, ``<topic>-<partition>.jsonl``).

    Stops after ``max_events`` messages, after ``idle_exit_s`` seconds without one, or,
    when neither is given, at the end of every partition as it was when recording began.
    Values a JSON-lines log cannot hold unchanged (empty, or containing a line break)
    are counted in ``skipped`` and left out.
    """
    kafka = _kafka(brokers)
    bootstrap = kafka.bootstrap
    nparts = check_topics(kafka, [topic], connect_timeout_s)[topic]
    out = Path(out)
    per_partition = out.is_dir()
    consumer = Consumer(
        kafka.config(**{
            "group.id": f"pulse-record-{uuid.uuid4().hex[:12]}",  # never committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "error_cb": _error_cb,
            "logger": _rdkafka_log,
        })
    )
    tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(nparts)]
    consumer.assign(tps)
    until_end = max_events is None and idle_exit_s is None
    ends = {}
    if until_end:
        for p in range(nparts):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            ends[p] = high
    done = {p for p, high in ends.items() if high == 0} if until_end else set()
    writers: dict[int, Any] = {}

    def writer(p: int) -> Any:
        key = p if per_partition else -1
        w = writers.get(key)
        if w is None:
            target = out / f"{topic}-{p}.jsonl" if per_partition else out
            target.parent.mkdir(parents=True, exist_ok=True)
            w = writers[key] = gzip.open(target, "wb") if target.name.endswith(".gz") else open(target, "wb")
        return w

    if not per_partition:
        writer(0)  # create the file even when the topic is empty
    consumed = written = skipped = 0
    last = time.monotonic()
    started = time.perf_counter()
    try:
        while True:
            if max_events is not None and consumed >= max_events:
                break
            if until_end and len(done) == nparts:
                break
            if idle_exit_s is not None and time.monotonic() - last >= idle_exit_s:
                break
            want = 1000 if max_events is None else max(1, min(1000, max_events - consumed))
            for msg in consumer.consume(want, 0.2):
                err = msg.error()
                p = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if until_end:
                            done.add(p)
                        continue
                    raise LiveError(f"reading {topic} partition {p} from {bootstrap} failed: {err}")
                if until_end and (p in done or msg.offset() >= ends[p]):
                    done.add(p)
                    continue
                consumed += 1
                last = time.monotonic()
                value = msg.value() or b""
                if b"\n" in value or b"\r" in value or not value.strip():
                    skipped += 1
                else:
                    writer(p).write(value + b"\n")
                    written += 1
                if until_end and msg.offset() + 1 >= ends[p]:
                    done.add(p)
                if max_events is not None and consumed >= max_events:
                    break
    finally:
        for w in writers.values():
            w.close()
        consumer.close()
    seconds = time.perf_counter() - started
    return {
        "out": str(out),
        "topic": topic,
        "partitions": nparts,
        "events": written,
        "skipped": skipped,
        "seconds": round(seconds, 3),
    }
