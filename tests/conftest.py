"""Real services for the tests: a Debian redis-server on a free loopback port (and the
Kafka broker of scripts/kafka_local.py, in fixtures_kafka). No fakes, no mocks."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["fixtures_kafka"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server process on loopback that tests may stop and start again."""

    def __init__(self, workdir: Path, persistent: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed: run .ci/run, or `apt-get install redis-server`")
        self.port = free_port()
        self.workdir = workdir
        self.persistent = persistent  # append-only file: data survives a restart
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
             "--dir", str(self.workdir), "--databases", "64"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


_next_db = itertools.cycle(range(1, 64))


@pytest.fixture
def redis_url(redis_server) -> str:
    """A URL of an empty database of the session's redis-server."""
    url = redis_server.url(next(_next_db))
    redis.Redis.from_url(url).flushdb()
    return url


def dump_redis(url: str) -> dict:
    """Every key with its type and value (TTLs left out), for comparing runs; but the
    runs' stats hashes (``pulse:stats:{<process>}``), which hold wall-clock times and
    rates."""
    client = redis.Redis.from_url(url)
    out = {}
    for key in sorted(client.scan_iter(count=1000)):
        if key.startswith(b"pulse:stats:"):
            continue
        kind = client.type(key).decode()
        if kind == "string":
            value = client.get(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            value = sorted(client.hgetall(key).items())
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = kind
        out[key.decode()] = (kind, value)
    return out


class RedisClusterNodes:
    """A real Redis Cluster of ``size`` primaries (no replicas) on loopback, each node in
    its own directory (a node keeps its cluster state in ``nodes.conf`` there)."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.binary = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")
        if self.binary is None or self.cli is None:
            raise RuntimeError("redis-server and redis-cli are needed: `apt-get install redis-server`")
        self.workdir = workdir
        self.ports = [free_port() for _ in range(size)]
        # A node's cluster bus listens on port + 10000 unless told otherwise: free ports
        # above 55535 would put it past 65535.
        self.bus_ports = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen] = []

    def url(self, node: int = 0) -> str:
        return f"redis://127.0.0.1:{self.ports[node]}/0"

    def start(self) -> None:
        for port, bus_port in zip(self.ports, self.bus_ports):
            node_dir = self.workdir / str(port)
            node_dir.mkdir()
            self.procs.append(subprocess.Popen(
                [self.binary, "--port", str(port), "--cluster-port", str(bus_port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no", "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for port in self.ports:
            self._wait(lambda c: c.ping(), port)
        subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        for port in self.ports:
            self._wait(lambda c: c.execute_command("CLUSTER INFO").get("cluster_state") == "ok", port)

    def _wait(self, ready, port: int) -> None:
        client = redis.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                if ready(client):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster node on port {port} is not ready")
            time.sleep(0.05)

    def flushall(self) -> None:
        for port in self.ports:
            redis.Redis(port=port).flushall()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)
        self.procs = []


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A 3-node Redis Cluster for the session."""
    cluster = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster) -> str:
    """The URL of one node of the session's (emptied) Redis Cluster."""
    redis_cluster.flushall()
    return redis_cluster.url(0)


class Serve:
    """``pulse serve`` in a process of its own on a free port, until :meth:`stop`."""

    def __init__(self, redis_url: str, *args: str, env: dict | None = None) -> None:
        import os

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "pulse", "serve", "--redis", redis_url, "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out, err = self.proc.communicate(timeout=10)
                    raise RuntimeError(f"pulse serve did not start: {err.decode()[-2000:]}")
                time.sleep(0.1)

    def stop(self) -> str:
        """Stop it; returns what it wrote to stderr."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return err.decode()
