"""What the benchmarks share to run their own services on loopback: a free port, a
throw-away redis-server, and the project's Kafka broker through ``scripts/kafka_local.py``
(fetch, start, stop), whose last JSON line is its answer.

Benchmarks run as scripts from this directory, so they import it as ``services``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import redis

KAFKA_LOCAL = Path(__file__).resolve().parents[1] / "scripts" / "kafka_local.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A redis-server on a free port, without persistence, working in ``directory``;
    yields its URL once it answers, and stops it at the end."""
    port = free_port()
    server = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(directory)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        server.terminate()
        server.wait(10)


def kafka_local(*args: str) -> dict:
    """Run ``scripts/kafka_local.py ARGS``; returns its last JSON line ({} if none)."""
    out = subprocess.run([sys.executable, str(KAFKA_LOCAL), *args], check=True, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
