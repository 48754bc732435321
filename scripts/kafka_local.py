#!/usr/bin/env python3
"""Run a real single-node Apache Kafka broker (KRaft) locally, without Docker.

Stdlib only (Python 3.11+). Needs Java 17+ and Maven (`mvn`) on PATH; the jars
come from Maven Central.

    python scripts/kafka_local.py fetch              # jars -> $PULSE_KAFKA_HOME/libs
    python scripts/kafka_local.py start --dir D      # prints {"bootstrap": ..., "pid": ...}
    python scripts/kafka_local.py start --dir D --sasl-user pulse --sasl-password-file F
                                                     # also a SASL/PLAIN listener: "sasl_bootstrap"
    python scripts/kafka_local.py status --dir D
    python scripts/kafka_local.py create-topic --bootstrap B --topic T --partitions 3
    python scripts/kafka_local.py stop --dir D

`start` on a directory that already holds a stopped broker restarts it on the
same ports with the same data.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"  # the log4j2 version Kafka 4.1 is built against
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
DEFAULT_HEAP = "-Xms128m -Xmx512m"
MARKER = ".pulse-fetch-complete"

EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3


class Fail(Exception):
    """A user-facing error: printed to stderr, exit code 1."""


# --------------------------------------------------------------------------- paths


def kafka_home() -> Path:
    env = os.environ.get("PULSE_KAFKA_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "pulse" / f"kafka-{KAFKA_VERSION}"


def default_run_dir() -> Path:
    env = os.environ.get("PULSE_KAFKA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pulse" / "kafka-run"


def libs_dir() -> Path:
    return kafka_home() / "libs"


def classpath() -> str:
    return str(libs_dir() / "*")  # expanded by the JVM itself


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def note(msg: str) -> None:
    print(f"kafka_local: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- fetch

POM_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>pulse.local</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <!-- TopicCommand etc. Its own deps (Connect runtime, Jetty, ...) are not needed. -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>{kafka}</version>
      <exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>
    </dependency>
    <!-- Kafka logs through slf4j 1.7; route it to log4j2 (log4j-core comes with kafka). -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

BROKER_LOG4J2 = """\
# Written by scripts/kafka_local.py. Broker logs go to ${sys:kafka.logs.dir}/server.log.
status = warn
name = pulse-kafka-broker
# No log4j shutdown hook: the file appender flushes every line, and the hook only
# produces "Unable to register Log4j shutdown hook" noise when the broker stops.
shutdownHook = disable
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""

TOOLS_LOG4J2 = """\
# Written by scripts/kafka_local.py, for command-line tools: warnings to stderr.
status = warn
name = pulse-kafka-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
"""


def fetched_jars() -> list[str] | None:
    """The jar list if a complete fetch of KAFKA_VERSION is in place, else None."""
    marker = libs_dir() / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if info.get("version") != KAFKA_VERSION:
        return None
    jars = info.get("jars") or []
    if not jars or not all((libs_dir() / j).is_file() for j in jars):
        return None
    return jars


def write_log_configs() -> None:
    home = kafka_home()
    for name, text in (("log4j2-broker.properties", BROKER_LOG4J2),
                       ("log4j2-tools.properties", TOOLS_LOG4J2)):
        path = home / name
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)


def fetch(quiet: bool = False) -> dict:
    home = kafka_home()
    home.mkdir(parents=True, exist_ok=True)
    jars = fetched_jars()
    if jars is None:
        with open(home / ".fetch.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent fetches (xdist, two shells)
            jars = fetched_jars()
            if jars is None:
                jars = _maven_fetch(home, quiet)
                cached = False
            else:
                cached = True
    else:
        cached = True
    write_log_configs()
    return {"version": KAFKA_VERSION, "home": str(home), "libs": str(libs_dir()),
            "jars": len(jars), "cached": cached}


def _maven_fetch(home: Path, quiet: bool) -> list[str]:
    mvn = shutil.which("mvn")
    if not mvn:
        raise Fail("Maven ('mvn') is not on PATH; install it (Debian: apt-get install maven)")
    if not quiet:
        note(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs_dir()} ...")
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=home))
    try:
        pom = staging / "pom.xml"
        pom.write_text(POM_TEMPLATE.format(scala=SCALA_VERSION, kafka=KAFKA_VERSION,
                                           log4j=LOG4J_VERSION))
        out = staging / "libs"
        cmd = [mvn, "-B", "-q", "-f", str(pom),
               f"{DEPENDENCY_PLUGIN}:copy-dependencies",
               f"-DoutputDirectory={out}", "-DincludeScope=runtime"]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=staging)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-40:])
            raise Fail(f"maven failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        jars = sorted(p.name for p in out.glob("*.jar"))
        need = [f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar", f"kafka-tools-{KAFKA_VERSION}.jar",
                f"log4j-slf4j-impl-{LOG4J_VERSION}.jar"]
        missing = [j for j in need if j not in jars]
        if missing:
            raise Fail(f"maven finished but these jars are missing: {missing}")
        (out / MARKER).write_text(json.dumps({"version": KAFKA_VERSION, "jars": jars}))
        target = libs_dir()
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
        return jars
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- processes


def pid_alive(pid: int | None) -> bool:
    """True if pid runs (a zombie, left unreaped by a non-reaping init, counts as dead)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def is_our_broker(pid: int, run_dir: Path) -> bool:
    """Guard against pid reuse: the process must be kafka.Kafka on this dir's config."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(pid)  # no /proc (macOS): trust the pid file
    props = str(run_dir / "server.properties").encode()
    return b"kafka.Kafka" in cmdline and props in cmdline


def read_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(run_dir: Path) -> int | None:
    pid = read_pid(run_dir)
    if pid and pid_alive(pid) and is_our_broker(pid, run_dir):
        return pid
    return None


def terminate(pid: int, timeout: float) -> str:
    """SIGTERM, wait up to timeout, then SIGKILL. Returns how it ended."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return "SIGTERM"
        _reap(pid)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    return "SIGKILL"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM does on Linux
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(exclude: set[int] = frozenset()) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port
    raise Fail("could not find a free loopback port")


def java_cmd() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise Fail("'java' not found: need Java 17+ "
                   "(Debian: apt-get install openjdk-17-jre-headless)")
    return java


def check_java(java: str) -> None:
    proc = subprocess.run([java, "-version"], capture_output=True, text=True)
    text = proc.stderr + proc.stdout
    try:
        ver = text.split('"')[1]
        major = int(ver.split(".")[0]) if not ver.startswith("1.") else int(ver.split(".")[1])
    except (IndexError, ValueError):
        return
    if major < 17:
        raise Fail(f"Kafka {KAFKA_VERSION} needs Java 17+, {java} is {ver}")


def jvm_opts(run_dir: Path, fast_startup: bool) -> list[str]:
    heap = os.environ.get("PULSE_KAFKA_HEAP_OPTS", DEFAULT_HEAP).split()
    extra = os.environ.get("PULSE_KAFKA_JVM_OPTS", "").split()
    # C1-only JIT: ready in ~3.5 s instead of ~6.5 s on 2 cores, lower peak throughput.
    jit = ["-XX:TieredStopAtLevel=1"] if fast_startup else []
    return [*heap, *jit,
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={kafka_home() / 'log4j2-broker.properties'}",
            f"-Dkafka.logs.dir={run_dir / 'logs'}", *extra]


def tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------- kafka wire


def _kafka_request(port: int, api_key: int, api_version: int, body: bytes,
                   timeout: float) -> bytes:
    corr = random.randrange(1, 2**31 - 1)
    client = b"pulse-kafka-local"
    msg = struct.pack(">hhih", api_key, api_version, corr, len(client)) + client + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", _recv_exact(s, 4))[0]
        resp = _recv_exact(s, size)
    if struct.unpack(">i", resp[:4])[0] != corr:
        raise OSError("correlation id mismatch")
    return resp[4:]


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def broker_ready(port: int, timeout: float = 2.0) -> bool:
    """A Metadata v4 request (no topics) answers and lists a broker on `port`."""
    try:
        resp = _kafka_request(port, 3, 4, struct.pack(">ib", 0, 0), timeout)
        off = 4  # throttle_time_ms
        (n,) = struct.unpack_from(">i", resp, off)
        off += 4
        for _ in range(n):
            off += 4  # node_id
            (hlen,) = struct.unpack_from(">h", resp, off)
            off += 2 + hlen
            (bport,) = struct.unpack_from(">i", resp, off)
            off += 4
            (rlen,) = struct.unpack_from(">h", resp, off)
            off += 2 + max(rlen, 0)
            if bport == port:
                return True
    except (OSError, struct.error):
        pass
    return False


# --------------------------------------------------------------------------- start


def sasl_properties(sport: int, user: str, password: str) -> str:
    """A SASL_PLAINTEXT listener on ``sport`` that accepts ``user`` with ``password``
    (mechanism PLAIN): what a client with ``security.protocol=SASL_PLAINTEXT``,
    ``sasl.mechanism=PLAIN`` and those credentials connects to."""
    for name, value in (("user", user), ("password", password)):
        if not value or any(c in value for c in '"\\;\n\r'):
            raise Fail(f"the SASL {name} may not be empty or hold quotes, backslashes, ';' or line breaks")
    return f"""\
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{user}="{password}";
"""


def server_properties(run_dir: Path, port: int, cport: int, sasl: tuple[int, str, str] | None = None) -> str:
    listeners = f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}"
    advertised = f"PLAINTEXT://127.0.0.1:{port}"
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if sasl:
        listeners += f",SASL_PLAINTEXT://127.0.0.1:{sasl[0]}"
        advertised += f",SASL_PLAINTEXT://127.0.0.1:{sasl[0]}"
        protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
    return f"""\
# Written by scripts/kafka_local.py: single-node KRaft, combined broker+controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{cport}
listeners={listeners}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map={protocols}
{sasl_properties(*sasl) if sasl else ""}log.dirs={run_dir / 'data'}
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
"""


def random_cluster_id() -> str:
    """Kafka's Uuid format (22 chars of url-safe base64); like Kafka's Uuid.randomUuid(),
    never starting with '-', which command-line parsers would take for an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def load_state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def info(run_dir: Path, state: dict, pid: int | None) -> dict:
    out = {"bootstrap": f"127.0.0.1:{state['port']}", "pid": pid, "dir": str(run_dir),
           "log": str(run_dir / "logs" / "server.log")}
    if state.get("sasl_port"):
        out.update(sasl_bootstrap=f"127.0.0.1:{state['sasl_port']}", sasl_user=state["sasl_user"])
    return out


def cmd_start(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(run_dir)

    pid = running_pid(run_dir)
    if pid:
        if args.port and args.port != state.get("port"):
            raise Fail(f"a broker already runs in {run_dir} "
                       f"on port {state.get('port')} (pid {pid})")
        note(f"already running in {run_dir} (pid {pid})")
        emit(info(run_dir, state, pid))
        return 0

    if fetched_jars() is None:
        fetch()
    write_log_configs()
    java = java_cmd()
    check_java(java)

    formatted = (run_dir / "data" / "meta.properties").is_file()
    port = args.port or (state.get("port") if formatted else None)
    cport = args.controller_port or (state.get("controller_port") if formatted else None)
    if formatted and cport and state.get("controller_port") and cport != state["controller_port"]:
        raise Fail("the controller port of an existing data dir cannot change "
                   f"(was {state['controller_port']}); use a new --dir")
    port = port or free_port()
    cport = cport or free_port({port})
    if port == cport:
        raise Fail("--port and --controller-port must differ")
    sasl = None
    if args.sasl_user:
        if not args.sasl_password_file:
            raise Fail("--sasl-user needs --sasl-password-file (a file holding the password)")
        try:
            password = Path(args.sasl_password_file).read_text().rstrip("\r\n")
        except OSError as e:
            raise Fail(f"cannot read --sasl-password-file {args.sasl_password_file}: {e.strerror}") from None
        sport = state.get("sasl_port") or free_port({port, cport})
        sasl = (sport, args.sasl_user, password)
        state.update(sasl_port=sport, sasl_user=args.sasl_user)
    else:
        state.pop("sasl_port", None)
        state.pop("sasl_user", None)
    for p in (port, cport) + ((sasl[0],) if sasl else ()):
        if not port_free(p):
            raise Fail(f"port {p} on 127.0.0.1 is already in use")

    state.update(port=port, controller_port=cport, version=KAFKA_VERSION,
                 cluster_id=state.get("cluster_id") or random_cluster_id())
    props = run_dir / "server.properties"
    props.touch(mode=0o600)  # it holds the SASL password
    props.chmod(0o600)
    props.write_text(server_properties(run_dir, port, cport, sasl))
    (run_dir / "state.json").write_text(json.dumps(state, indent=1))
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    out_path = logs / "kafka.out"  # JVM stdout/stderr (crashes, GC warnings)

    if not formatted:
        tools_log = kafka_home() / "log4j2-tools.properties"
        fmt = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={tools_log}",
               "-cp", classpath(), "kafka.tools.StorageTool", "format", "--standalone",
               f"--cluster-id={state['cluster_id']}", f"--config={props}"]
        proc = subprocess.run(fmt, capture_output=True, text=True)
        if proc.returncode != 0:
            raise Fail(f"storage format failed (exit {proc.returncode}):\n"
                       f"{proc.stdout}{proc.stderr}")

    cmd = [java, *jvm_opts(run_dir, args.fast_startup), "-cp", classpath(),
           "kafka.Kafka", str(props)]
    t0 = time.monotonic()
    with open(out_path, "ab") as out:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 cwd=run_dir, start_new_session=not args.foreground)
    (run_dir / "kafka.pid").write_text(str(child.pid))
    result = info(run_dir, state, child.pid)

    deadline = t0 + args.timeout
    while not broker_ready(port):
        if child.poll() is not None:
            _cleanup_pid(run_dir, child.pid)
            raise Fail(f"broker exited with code {child.returncode} during startup; "
                       f"see {result['log']} and {out_path}\n"
                       f"{tail(out_path, 15)}\n{tail(Path(result['log']), 15)}")
        if time.monotonic() > deadline:
            terminate(child.pid, 10)
            _cleanup_pid(run_dir, child.pid)
            raise Fail(f"broker not ready on 127.0.0.1:{port} after {args.timeout:.0f}s; "
                       f"see {result['log']} and {out_path}\n{tail(Path(result['log']), 15)}")
        time.sleep(0.2)
    note(f"broker ready in {time.monotonic() - t0:.1f}s")
    emit(result)

    if args.owner_pid:
        _spawn_watchdog(run_dir, args.owner_pid, child.pid)
    if args.foreground:
        return _wait_foreground(child, run_dir)
    return 0


def _cleanup_pid(run_dir: Path, pid: int) -> None:
    if read_pid(run_dir) == pid:
        with contextlib.suppress(OSError):
            (run_dir / "kafka.pid").unlink()


def _wait_foreground(child: subprocess.Popen, run_dir: Path) -> int:
    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)  # the JVM got the terminal's SIGINT too
    rc = child.wait()
    _cleanup_pid(run_dir, child.pid)
    return 0 if rc in (0, 143, -signal.SIGTERM) else rc


def _spawn_watchdog(run_dir: Path, owner: int, broker: int) -> None:
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "watchdog", "--dir", str(run_dir),
                      "--owner-pid", str(owner), "--broker-pid", str(broker)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def cmd_watchdog(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).resolve()
    while pid_alive(args.broker_pid):
        if not pid_alive(args.owner_pid):
            if running_pid(run_dir) == args.broker_pid:
                terminate(args.broker_pid, 30)
                _cleanup_pid(run_dir, args.broker_pid)
            return 0
        time.sleep(1.0)
    return 0


# --------------------------------------------------------------------------- stop / status


def cmd_stop(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).expanduser().resolve()
    pid = running_pid(run_dir)
    if not pid:
        stale = read_pid(run_dir)
        if stale:
            _cleanup_pid(run_dir, stale)
        emit({"stopped": False, "running": False, "dir": str(run_dir)})
        return 0
    t0 = time.monotonic()
    how = terminate(pid, args.timeout)
    _cleanup_pid(run_dir, pid)
    emit({"stopped": True, "pid": pid, "signal": how,
          "seconds": round(time.monotonic() - t0, 2), "dir": str(run_dir)})
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).expanduser().resolve()
    state = load_state(run_dir)
    pid = running_pid(run_dir)
    if not state:
        emit({"running": False, "dir": str(run_dir)})
        return EXIT_NOT_RUNNING
    out = info(run_dir, state, pid)
    out["running"] = bool(pid)
    out["ready"] = bool(pid) and broker_ready(state["port"])
    emit(out)
    return 0 if pid else EXIT_NOT_RUNNING


def cmd_fetch(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    out = fetch(quiet=args.quiet)
    out["seconds"] = round(time.monotonic() - t0, 2)
    emit(out)
    return 0


def cmd_create_topic(args: argparse.Namespace) -> int:
    if fetched_jars() is None:
        fetch()
    cmd = [java_cmd(), "-Xmx256m",
           f"-Dlog4j2.configurationFile={kafka_home() / 'log4j2-tools.properties'}",
           "-cp", classpath(), "org.apache.kafka.tools.TopicCommand",
           "--bootstrap-server", args.bootstrap, "--create", "--if-not-exists",
           "--topic", args.topic, "--partitions", str(args.partitions),
           "--replication-factor", "1"]
    for kv in args.config or []:
        cmd += ["--config", kv]
    return subprocess.run(cmd).returncode


# --------------------------------------------------------------------------- cli


def main(argv: list[str] | None = None) -> int:
    env_help = ("Env: PULSE_KAFKA_HOME (jar cache, default ~/.cache/pulse/kafka-VERSION), "
                "PULSE_KAFKA_DIR (default --dir), PULSE_KAFKA_HEAP_OPTS "
                f"(default '{DEFAULT_HEAP}'), PULSE_KAFKA_JVM_OPTS, JAVA_HOME.")
    parser = argparse.ArgumentParser(
        prog="kafka_local.py", description=f"Local single-node Apache Kafka {KAFKA_VERSION} "
        "(KRaft) from Maven Central jars, no Docker.", epilog=env_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_dir = str(default_run_dir())

    p = sub.add_parser("fetch", help="download the broker jars with mvn (idempotent)",
                       description="Resolve org.apache.kafka:kafka_2.13 and its runtime deps "
                       "with Maven into $PULSE_KAFKA_HOME/libs. Instant when already done.",
                       epilog=env_help)
    p.add_argument("--quiet", action="store_true", help="no progress note on stderr")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("start", help="format (first time) and start a broker",
                       description="Start a KRaft broker+controller on 127.0.0.1 and wait "
                       "until it answers a metadata request; prints one JSON line "
                       '{"bootstrap", "pid", "dir", "log"}. Restarting an existing --dir '
                       "reuses its ports and data.", epilog=env_help)
    p.add_argument("--port", type=int, help="client (PLAINTEXT) port; default: free port, "
                   "or the dir's previous one")
    p.add_argument("--controller-port", type=int, help="KRaft controller port; default as --port")
    p.add_argument("--dir", default=run_dir, help=f"data/config/log dir (default {run_dir})")
    p.add_argument("--foreground", action="store_true",
                   help="stay attached; Ctrl-C / SIGTERM stops the broker")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.add_argument("--fast-startup", action="store_true",
                   help="C1-only JIT (-XX:TieredStopAtLevel=1): starts ~2x faster, lower peak "
                   "throughput; good for tests, not for benchmarks")
    p.add_argument("--owner-pid", type=int,
                   help="stop the broker when this process dies (test runners)")
    p.add_argument("--sasl-user", help="also listen with SASL_PLAINTEXT (mechanism PLAIN) on another port, "
                   "accepting this user; the JSON line then has sasl_bootstrap")
    p.add_argument("--sasl-password-file", help="a file holding the SASL user's password (not on the "
                   "command line, which other users can read)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("stop", help="stop the broker of --dir",
                       description="SIGTERM the broker of --dir (controlled shutdown), SIGKILL "
                       "after --timeout.")
    p.add_argument("--dir", default=run_dir, help=f"(default {run_dir})")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("status", help="JSON status of the broker of --dir",
                       description="Print JSON status; exit 0 if running, 3 if not.")
    p.add_argument("--dir", default=run_dir, help=f"(default {run_dir})")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("create-topic", help="create a topic (TopicCommand, if-not-exists)",
                       description="Create a topic with replication factor 1 via "
                       "org.apache.kafka.tools.TopicCommand.")
    p.add_argument("--bootstrap", required=True, help="e.g. 127.0.0.1:9092")
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--config", action="append", metavar="K=V", help="topic config, repeatable")
    p.set_defaults(func=cmd_create_topic)

    p = sub.add_parser("watchdog", help="(internal) stop a broker when its owner process dies",
                       description="Internal: started by 'start --owner-pid'.")
    p.add_argument("--dir", required=True)
    p.add_argument("--owner-pid", type=int, required=True)
    p.add_argument("--broker-pid", type=int, required=True)
    p.set_defaults(func=cmd_watchdog)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Fail as e:
        print(f"kafka_local: error: {e}", file=sys.stderr, flush=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
