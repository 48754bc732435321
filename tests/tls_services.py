"""Real services behind TLS and ACLs for the tests: certificates made with openssl (a
private CA, a server certificate for 127.0.0.1, a client certificate), a redis-server
that only accepts an ACL user over TLS, and a Redis Cluster of such nodes."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from conftest import free_port


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(workdir: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, both
    signed by the CA (RSA 2048, valid two days)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed: `apt-get install openssl`")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pulse-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=workdir)
    (workdir / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (workdir / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=pulse-test-{name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=workdir)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                 "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=workdir)
    return Certificates(workdir / "ca.crt", workdir / "server.crt", workdir / "server.key", workdir / "client.crt",
                        workdir / "client.key")


def tls_redis_args(certs: Certificates, port: int, password: str, client_certs: bool) -> list[str]:
    """redis-server options: TLS only on ``port`` (no plain port), the default user off,
    one ACL user ``pulse`` with ``password``, allowed every command on ``pulse:*`` keys."""
    return ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes" if client_certs else "no",
            "--save", "", "--appendonly", "no",
            "--user", "default", "off", "--user", "pulse", "on", f">{password}", "~pulse:*", "&*", "+@all"]


class TlsRedis:
    """A redis-server that only speaks TLS and only to the ACL user ``pulse``."""

    def __init__(self, workdir: Path, certs: Certificates, password: str, client_certs: bool = False) -> None:
        self.certs = certs
        self.password = password
        self.client_certs = client_certs
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0, credentials: bool = True) -> str:
        auth = f"pulse:{self.password}@" if credentials else ""
        return f"rediss://{auth}127.0.0.1:{self.port}/{db}"

    def client(self, **extra) -> redis.Redis:
        options = {"ssl_certfile": str(self.certs.client_cert), "ssl_keyfile": str(self.certs.client_key)} if self.client_certs else {}
        return redis.Redis(host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.certs.ca), username="pulse",
                           password=self.password, socket_connect_timeout=1, **options, **extra)

    def start(self) -> "TlsRedis":
        self.proc = subprocess.Popen(["redis-server", *tls_redis_args(self.certs, self.port, self.password, self.client_certs),
                                      "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.client().ping(), f"TLS redis-server on port {self.port}", self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class TlsRedisCluster:
    """Three primaries that speak TLS only (client and cluster bus), to the ACL user ``pulse``."""

    def __init__(self, workdir: Path, certs: Certificates, password: str) -> None:
        self.certs = certs
        self.password = password
        self.workdir = workdir
        self.ports = [free_port() for _ in range(3)]
        self.bus_ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen] = []

    def url(self, node: int = 0) -> str:
        return f"rediss://pulse:{self.password}@127.0.0.1:{self.ports[node]}/0"

    def node(self, i: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[i], ssl=True, ssl_ca_certs=str(self.certs.ca),
                           username="pulse", password=self.password, socket_connect_timeout=1, decode_responses=True)

    def start(self) -> "TlsRedisCluster":
        for port, bus in zip(self.ports, self.bus_ports):
            node_dir = self.workdir / str(port)
            node_dir.mkdir()
            self.procs.append(subprocess.Popen(
                ["redis-server", *tls_redis_args(self.certs, port, self.password, False), "--tls-cluster", "yes",
                 "--cluster-enabled", "yes", "--cluster-port", str(bus), "--cluster-config-file", "nodes.conf",
                 "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for i, proc in enumerate(self.procs):
            wait_until(lambda: self.node(i).ping(), f"TLS cluster node on port {self.ports[i]}", proc)
        subprocess.run(
            ["redis-cli", "--tls", "--cacert", str(self.certs.ca), "--user", "pulse", "--pass", self.password,
             "--no-auth-warning", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        for i, proc in enumerate(self.procs):
            wait_until(lambda: self.node(i).execute_command("CLUSTER INFO").get("cluster_state") == "ok",
                       f"TLS cluster node on port {self.ports[i]}", proc)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)
        self.procs = []


def wait_until(ready, what: str, proc: subprocess.Popen, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready():
                return
        except (redis.RedisError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)
