"""``pulse collect``: the HTTP collector between browsers and the events topic.

``POST /events`` takes one event, a JSON array of them or NDJSON, as ``application/json``,
``application/x-ndjson`` or ``text/plain`` (what ``navigator.sendBeacon`` sends), optionally
gzip-compressed (``Content-Encoding: gzip``). Every event is validated by the flow's own
parser (:mod:`pulse.operators.intake`), and the answer is ``202 {"accepted": n,
"rejected": [{"index", "reason", "field", "detail"}]}``. Accepted events go to Kafka keyed
by user id through one idempotent producer (``acks=all``): 202 means validated and queued.

Nothing accepted is dropped: a delivery that fails (a broker down longer than
``collect_message_timeout_ms``) is counted, logged and produced again; while the queue of
undelivered events is full, requests are answered 503 with ``Retry-After`` and nothing of
them is queued, so a client's retry sends no duplicates.

Also served: ``/pulse.js`` (the browser tracker), ``/healthz``, ``/metrics`` (Prometheus),
and with ``demo_shop`` a demo shop at ``/shop`` whose "recommended for you" strip reads
``/api/users/{user_id}/recs`` (the user's list from Redis, read-only).

Example (a broker and topic must exist; see ``scripts/kafka_local.py``)::

    app = create_app(Settings(), brokers="127.0.0.1:9092", topic="events")
    uvicorn.run(app, port=8080)
"""

from __future__ import annotations

import collections
import gc
import hashlib
import hmac
import logging
import signal
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Optional

import anyio.to_thread
import orjson
from confluent_kafka import KafkaError, Message, Producer
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from pulse.flows.config import Settings
from pulse.operators.intake import BodyError, Stamps, admit, hash_ip, inflate, split

log = logging.getLogger("pulse.collect")
_rdkafka_log = logging.getLogger("pulse.collect.kafka")

#: Content types a body may have (parameters such as charset aside); none is taken as JSON.
CONTENT_TYPES = ("application/json", "application/x-ndjson", "application/jsonl", "text/plain")

_STATIC = resources.files("pulse") / "static"


class CollectorMetrics:
    """The collector's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pulse_collect_requests", "POST /events requests, by HTTP status", ["status"], registry=r)
        self.request_seconds = Histogram(
            "pulse_collect_request_seconds", "time to answer POST /events", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )  # fmt: skip
        self.accepted = Counter("pulse_collect_events_accepted", "events validated and queued for Kafka", registry=r)
        self.rejected = Counter("pulse_collect_events_rejected", "events refused, by reason (the flow's dead-letter reasons)", ["reason"], registry=r)
        self.consent_withdrawals = Counter("pulse_collect_consent_withdrawals", "consent: false events forwarded, stripped", registry=r)
        self.produce_seconds = Histogram(
            "pulse_collect_produce_latency_seconds", "from produce to the broker's acknowledgement", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0),
        )  # fmt: skip
        self.queue_depth = Gauge("pulse_collect_queue_depth", "events accepted and not yet delivered", registry=r)


class EventProducer:
    """The collector's Kafka producer: idempotent, ``acks=all``, keyed by user.

    :meth:`offer` queues a request's events all or none. A background thread serves the
    delivery callbacks: a confirmed event is counted (and its latency observed); a failed
    one is counted, logged and kept for :meth:`_resend`, which produces it again, so an
    accepted event is delivered or still held, never dropped. ``depth`` counts both the
    producer's queue and the events held for another try.
    """

    def __init__(self, brokers, topic: str, settings: Settings, metrics: CollectorMetrics) -> None:
        from pulse.flows.live import _kafka  # (the security options of pulse run's clients: SASL, SSL)

        self.topic = topic
        self.metrics = metrics
        self.capacity = settings.collect_queue_max
        self._retry: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self.delivered = 0
        self.failures = 0
        self.fatal: Optional[str] = None
        self.producer = Producer({
            **_kafka(brokers).config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": settings.collect_linger_ms,
            "message.timeout.ms": settings.collect_message_timeout_ms,
            # room for the events being resent beside a full queue of new ones
            "queue.buffering.max.messages": 2 * settings.collect_queue_max,
            "compression.type": "lz4",
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            "logger": _rdkafka_log,
        })  # fmt: skip
        metrics.queue_depth.set_function(self.depth)
        metrics.registry.register(_DeliveryCounts(self))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pulse-collect-deliveries", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def depth(self) -> int:
        return len(self.producer) + len(self._retry)

    def offer(self, events: list) -> bool:
        """Queue every ``(key, value)`` of ``events``, or none of them (False) when they do
        not fit under the capacity."""
        if self.depth() + len(events) > self.capacity:
            return False
        produce = self.producer.produce
        topic = self.topic
        for i, (key, value) in enumerate(events):
            try:
                produce(topic, value, key)
            except BufferError:  # cannot happen below the capacity; if it does, keep them for another try
                self._retry.extend(events[i:])
                break
        return True

    def _on_delivery(self, err: Optional[KafkaError], msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self.metrics.produce_seconds.observe(msg.latency() or 0.0)
            return
        self.failures += 1
        self._retry.append((msg.key(), msg.value()))
        log.warning("an event was not delivered to %s (%s); it is kept and produced again", self.topic, err)

    def _on_error(self, err: KafkaError) -> None:
        # A broker going away is expected (librdkafka reconnects). A fatal error (the
        # idempotent producer's state lost) ends the producer: the collector then refuses
        # requests and /healthz fails, so that it is restarted.
        if err.fatal():
            self.fatal = str(err)
        _rdkafka_log.log(logging.ERROR if err.fatal() else logging.WARNING, "kafka: %s", err)

    def _serve(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            self.producer.poll(0.05)
            if self._retry and self._resend():
                pause = 0.1
            elif self._retry:
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def _resend(self) -> bool:
        """Produce the held events again; False when the producer's queue had no room."""
        while self._retry:
            key, value = self._retry[0]
            try:
                self.producer.produce(self.topic, value, key)
            except BufferError:
                return False
            self._retry.popleft()
        return True

    def close(self, timeout_s: float = 30.0) -> int:
        """Deliver what is queued (for up to ``timeout_s``); returns how many events are
        still undelivered (they are lost with the process, and logged as such)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._resend()
            self.producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            if not self.depth():
                break
        left = self.depth()
        if left:
            log.error("%d accepted events were not delivered to %s within %.0f s of shutdown", left, self.topic, timeout_s)
        return left


class _DeliveryCounts:
    """``pulse_collect_delivered_total`` and ``pulse_collect_delivery_failures_total``,
    read from the producer's counts when scraped (a Prometheus counter's lock, taken for
    each of tens of thousands of deliveries a second, cost 5% of the collector's CPU)."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def collect(self):
        yield CounterMetricFamily("pulse_collect_delivered", "events Kafka confirmed (acks=all)", value=self.producer.delivered)
        yield CounterMetricFamily("pulse_collect_delivery_failures", "deliveries that failed (each is produced again)",
                                  value=self.producer.failures)


class ClientBuckets:
    """A token bucket per client: ``rate`` requests per second, bursts of ``burst``.

    >>> b = ClientBuckets(rate=1.0, burst=2)
    >>> [b.take("1.2.3.4", now=0.0) for _ in range(3)], b.take("1.2.3.4", now=1.0)
    ([0.0, 0.0, 1.0], 0.0)
    """

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        """How many clients are tracked."""
        return len(self._buckets)

    def take(self, client: str, now: float) -> float:
        """0 when ``client`` may send a request now, else the seconds until it may."""
        tokens, at = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if client not in self._buckets and len(self._buckets) >= self.max_clients:
            self._forget_full(now)
        self._buckets[client] = (tokens - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled holds no information: forget it.
        refill = self.burst / self.rate
        self._buckets = {c: (t, at) for c, (t, at) in self._buckets.items() if now - at < refill}


@dataclass
class Collector:
    """What one collector holds: its settings, metrics, producer and request counts."""

    settings: Settings
    topic: str
    metrics: CollectorMetrics
    producer: EventProducer
    started: float
    requests: int = 0
    accepted: int = 0
    rejected: collections.Counter = field(default_factory=collections.Counter)
    undelivered: int = 0

    def summary(self) -> dict:
        return {
            "topic": self.topic,
            "requests": self.requests,
            "events_accepted": self.accepted,
            "events_rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected),
            "delivered": self.producer.delivered,
            "delivery_failures": self.producer.failures,
            "undelivered": self.undelivered,
            "seconds": round(time.monotonic() - self.started, 3),
        }


def _json(doc: Any, status: int = 200, headers: Optional[dict] = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json", headers=headers)


def _bearer(authorization: Optional[str]) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(settings: Settings, brokers, topic: str, demo_shop: bool = False) -> FastAPI:
    """The collector as an ASGI app; its :class:`Collector` is ``app.state.collector``.
    ``demo_shop`` also serves the shop, whose recommendations come from
    ``settings.redis_url``."""
    if settings.collect_stamp_ip == "hash" and settings.collect_ip_hash_key is None:
        raise ValueError("collect_stamp_ip=hash needs a secret key: set PULSE_COLLECT_IP_HASH_KEY (or choose --stamp-ip ip or none)")
    if demo_shop and not settings.redis_url:
        raise ValueError("the demo shop reads recommendations from Redis: pass --redis redis://HOST:PORT/DB")
    metrics = CollectorMetrics()
    collector = Collector(settings, topic, metrics, EventProducer(brokers, topic, settings, metrics), time.monotonic())
    buckets = ClientBuckets(settings.collect_rate_per_s, settings.collect_rate_burst) if settings.collect_rate_per_s > 0 else None
    ip_key = settings.collect_ip_hash_key.get_secret_value().encode() if settings.collect_ip_hash_key else b""
    # (compared as digests, in constant time: neither the token nor its length shows in timing)
    admin = settings.collect_admin_token
    admin_digest = hashlib.sha256(admin.get_secret_value().encode()).digest() if admin else None
    limit = settings.collect_max_body_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # As live runs do: fewer young collections, and the start-up objects (web stack,
        # pydantic, numpy) frozen out of the full collections that would stall requests.
        gc.set_threshold(settings.gc_threshold, 50, 1000)
        gc.collect()
        gc.freeze()
        collector.producer.start()
        yield
        # deliver what is queued before the process ends (off the event loop: it blocks)
        collector.undelivered = await anyio.to_thread.run_sync(collector.producer.close)

    app = FastAPI(title="Pulse collector", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.collector = collector
    if settings.collect_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.collect_cors_origins), allow_methods=["POST"],
                           allow_headers=["Content-Type", "Content-Encoding"], allow_credentials=True, max_age=3600)

    def answer(status: int, doc: Any, started: float, headers: Optional[dict] = None) -> Response:
        collector.requests += 1
        metrics.requests.labels(str(status)).inc()
        metrics.request_seconds.observe(time.perf_counter() - started)
        return _json(doc, status, headers)

    @app.post("/events")
    async def events(request: Request) -> Response:
        started = time.perf_counter()
        ip = _client_ip(request)
        if buckets is not None:
            wait = buckets.take(ip, time.monotonic())
            if wait:
                return answer(429, {"error": "rate_limited", "detail": f"over {settings.collect_rate_per_s:g} requests/s from {ip}; "
                                    f"retry in {wait:.2f} s"}, started, {"Retry-After": str(max(1, round(wait)))})
        headers = request.headers
        kind = headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
        if kind not in CONTENT_TYPES:
            return answer(415, {"error": "unsupported_media_type", "detail": f"Content-Type {kind!r} is not taken; "
                                f"send one of {', '.join(CONTENT_TYPES)}"}, started)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return answer(413, {"error": "body_too_large", "detail": f"the body is {declared} bytes; the limit is {limit}: send smaller batches"},
                          started)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return answer(413, {"error": "body_too_large", "detail": f"the body is over {limit} bytes, the limit: send smaller batches"},
                              started)
        try:
            candidates = split(inflate(bytes(body), headers.get("content-encoding"), limit), settings.collect_max_events)
        except BodyError as e:
            return answer(e.status, e.to_json(), started)
        stamps = Stamps(
            received_at=int(time.time() * 1000),
            user_agent=headers.get("user-agent", "") if settings.collect_stamp_user_agent else None,
            ip=ip if settings.collect_stamp_ip == "ip" else None,
            ip_hash=hash_ip(ip_key, ip) if settings.collect_stamp_ip == "hash" else None,
        )
        token = _bearer(headers.get("authorization"))
        operator = (admin_digest is not None and token is not None
                    and hmac.compare_digest(hashlib.sha256(token.encode()).digest(), admin_digest))
        out = admit(candidates, stamps, operator=operator, token_given=token is not None)
        if collector.producer.fatal:
            return answer(503, {"error": "producer_failed", "detail": f"the Kafka producer failed ({collector.producer.fatal}); "
                                "the collector must be restarted"}, started)
        if out.accepted and not collector.producer.offer(out.accepted):
            return answer(503, {"error": "queue_full", "detail": f"{collector.producer.depth()} events are waiting for Kafka; "
                                f"retry in {settings.collect_retry_after_s} s"}, started,
                          {"Retry-After": str(settings.collect_retry_after_s)})
        collector.accepted += len(out.accepted)
        if out.accepted:
            metrics.accepted.inc(len(out.accepted))
        if out.consent_withdrawals:
            metrics.consent_withdrawals.inc(out.consent_withdrawals)
        for r in out.rejected:
            collector.rejected[r.reason] += 1
            metrics.rejected.labels(r.reason).inc()
        return answer(202, {"accepted": len(out.accepted), "rejected": [r.to_json() for r in out.rejected]}, started)

    @app.get("/healthz")
    def healthz() -> Response:
        p = collector.producer
        doc = {"status": "failed" if p.fatal else "ok", "topic": topic, "queue_depth": p.depth(), "delivery_failures": p.failures}
        return _json({**doc, "detail": p.fatal} if p.fatal else doc, 503 if p.fatal else 200)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/pulse.js")
    def tracker() -> Response:
        return Response((_STATIC / "pulse.js").read_bytes(), media_type="text/javascript", headers={"Cache-Control": "max-age=300"})

    if demo_shop:
        _add_demo_shop(app, settings)
    return app


def _add_demo_shop(app: FastAPI, settings: Settings) -> None:
    from pulse.state.store import address, connect, masked, ping

    keys = settings.keys()
    url = settings.redis_target()
    problem = ping(url)
    if problem:
        raise ValueError(f"{problem}. The demo shop reads recommendations from it: start Redis or point --redis at a running one.")
    client = connect(url, socket_connect_timeout=2.0, socket_timeout=2.0)

    @app.get("/")
    def root() -> Response:
        return RedirectResponse("/shop")

    @app.get("/shop")
    def shop() -> Response:
        return Response((_STATIC / "shop.html").read_bytes(), media_type="text/html; charset=utf-8")

    @app.get("/api/users/{user_id}/recs")
    def recs(user_id: str) -> Response:
        import redis

        try:
            doc = client.get(keys.recs(user_id))
        except redis.RedisError as err:
            return _json({"error": "redis_unavailable", "detail": f"cannot read Redis at {address(url)}: {masked(str(err), url)}"}, 503)
        if doc is None:
            return _json({"error": "no_list", "detail": f"no recommendations for user {user_id!r} yet"}, 404)
        return Response(doc, media_type="application/json", headers={"Cache-Control": "no-store"})


def serve(settings: Settings, brokers, topic: str, demo_shop: bool = False, connect_timeout_s: float = 10.0) -> dict:
    """Check the broker and topic, then serve until SIGINT/SIGTERM; returns the run's
    summary (requests, events accepted and rejected, deliveries)."""
    import uvicorn

    from pulse.flows.live import check_topics

    app = create_app(settings, brokers, topic, demo_shop)
    check_topics(brokers, [topic], connect_timeout_s)
    config = uvicorn.Config(
        app, host=settings.collect_host, port=settings.collect_port, log_level="warning", access_log=False,
        proxy_headers=settings.collect_forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.collect_forwarded_allow_ips, lifespan="on",
    )  # fmt: skip
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    # handler that was there before it: let that one return, so the summary is printed.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run()
    if not server.started:
        raise OSError(f"the collector could not listen on {settings.collect_host}:{settings.collect_port} (in use, or not allowed)")
    return app.state.collector.summary()
