"""pytest plugin: a real single-node Apache Kafka broker (KRaft) for the test session.

Register with ``pytest_plugins = ["fixtures_kafka"]`` (tests/ on sys.path) or ``-p fixtures_kafka``.
The broker comes from ``scripts/kafka_local.py`` (jars from Maven Central, Java 17+, no Docker).

    def test_x(kafka_broker):
        kafka_broker.create_topic("events", partitions=3)
        Producer({"bootstrap.servers": kafka_broker.bootstrap})
        kafka_broker.stop(); kafka_broker.start()   # same port, same data

The broker has auto.create.topics.enable=false: create topics explicitly.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kafka_local.py"


class KafkaLocalError(RuntimeError):
    pass


def run_script(*args: str, timeout: float = 600) -> dict:
    """Run scripts/kafka_local.py; return its last JSON stdout line; raise with its stderr."""
    cmd = [sys.executable, str(SCRIPT), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise KafkaLocalError(
            f"{' '.join(cmd[1:])} failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


class KafkaBroker:
    """Handle on a broker run by scripts/kafka_local.py in ``dir``: a PLAINTEXT listener
    at ``bootstrap`` and a SASL_PLAINTEXT one (mechanism PLAIN) at ``sasl_bootstrap``,
    accepting ``sasl_user`` with ``sasl_password``."""

    def __init__(self, dir: Path):
        self.dir = Path(dir)
        self.bootstrap: str = ""
        self.sasl_bootstrap: str = ""
        self.sasl_user = "pulse"
        self.sasl_password = "Sasl-" + secrets.token_hex(12)
        self.pid: int | None = None
        self.log: str = ""

    def sasl_config(self, password: str | None = None) -> dict:
        """librdkafka settings of a client of the SASL listener (``password`` to try another)."""
        return {"bootstrap.servers": self.sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": self.sasl_user, "sasl.password": password or self.sasl_password}

    @property
    def port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])

    def start(self, timeout: float = 120) -> "KafkaBroker":
        """Start (or restart after stop(): same port, same data dir) and wait until ready."""
        password_file = self.dir / "sasl-password"
        password_file.write_text(self.sasl_password)
        args = ["start", "--dir", str(self.dir), "--fast-startup",
                "--owner-pid", str(os.getpid()), "--timeout", str(timeout),
                "--sasl-user", self.sasl_user, "--sasl-password-file", str(password_file)]
        info = run_script(*args, timeout=timeout + 60)
        if self.bootstrap and info["bootstrap"] != self.bootstrap:
            raise KafkaLocalError(
                f"restart moved the broker: {self.bootstrap} -> {info['bootstrap']}")
        self.bootstrap, self.pid, self.log = info["bootstrap"], info["pid"], info["log"]
        self.sasl_bootstrap = info["sasl_bootstrap"]
        return self

    def stop(self, timeout: float = 30) -> None:
        run_script("stop", "--dir", str(self.dir), "--timeout", str(timeout), timeout=timeout + 30)
        self.pid = None

    def is_running(self) -> bool:
        cmd = [sys.executable, str(SCRIPT), "status", "--dir", str(self.dir)]
        return subprocess.run(cmd, capture_output=True).returncode == 0

    def admin(self, **conf):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, **conf})

    def create_topic(self, name: str, partitions: int = 1, config: dict | None = None,
                     timeout: float = 30) -> str:
        """Create ``name`` (replication 1) and wait until every partition has a leader."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        fut = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=timeout, request_timeout=timeout,
        )[name]
        fut.result(timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                md = admin.list_topics(topic=name, timeout=5).topics.get(name)
                if (md is not None and md.error is None and len(md.partitions) == partitions
                        and all(p.leader >= 0 and p.error is None for p in md.partitions.values())):
                    return name
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise KafkaLocalError(f"topic {name!r} not ready after {timeout}s")
            time.sleep(0.1)

    def delete_topic(self, name: str, timeout: float = 30) -> None:
        self.admin().delete_topics([name], operation_timeout=timeout)[name].result(timeout=timeout)

    def __repr__(self) -> str:
        return f"KafkaBroker(bootstrap={self.bootstrap!r}, dir={str(self.dir)!r})"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A running broker for the whole session; stopped at the end (and by a watchdog if the
    test process dies). Fails, never skips, when the broker cannot be fetched or started."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    error = None
    for step in (lambda: run_script("fetch", "--quiet"), broker.start):
        try:
            step()
        except (KafkaLocalError, subprocess.TimeoutExpired) as e:
            error = str(e)
            break
    if error:
        pytest.fail(f"Kafka broker unavailable: {error}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()
