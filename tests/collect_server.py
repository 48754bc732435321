"""A real collector for the tests: :func:`pulse.flows.collect.create_app` served by
uvicorn on a free loopback port in a thread of the test process (so a test can read the
collector's state), and a plain HTTP client."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import Any, Optional

import orjson
import uvicorn

from conftest import free_port
from pulse.flows.collect import create_app
from pulse.flows.config import Settings


class CollectorServer:
    def __init__(self, brokers: str, topic: str, demo_shop: bool = False, port: Optional[int] = None, **settings: Any) -> None:
        self.settings = Settings(**{"collect_rate_per_s": 0, **settings})
        self.app = create_app(self.settings, brokers, topic, demo_shop=demo_shop)
        self.collector = self.app.state.collector
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "CollectorServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the collector did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def wait_delivered(self, n: int, timeout: float = 30) -> int:
        """Wait until Kafka confirmed ``n`` events; returns how many it confirmed."""
        deadline = time.monotonic() + timeout
        while self.collector.producer.delivered < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.collector.producer.delivered


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


def request(url: str, body: Optional[bytes] = None, headers: Optional[dict] = None, method: Optional[str] = None) -> Reply:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Reply(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read())


def post(server: CollectorServer, body: Any, headers: Optional[dict] = None) -> Reply:
    """POST /events; ``body`` bytes as they are, anything else as JSON."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return request(f"{server.url}/events", data, {"Content-Type": "application/json", **(headers or {})})


def read_topic(bootstrap: str, topic: str, n: int, timeout: float = 30, settle: float = 1.0) -> list:
    """The messages of ``topic`` from its beginning: waits for ``n``, then ``settle``
    seconds more for any beyond them (a duplicate would show up there)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            got.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
        got.extend(m for m in consumer.consume(1000, settle) if m.error() is None)
    finally:
        consumer.close()
    return got
