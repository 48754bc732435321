#!/usr/bin/env python3
"""What faults cost a live Pulse run: kill -9 and a restart, a broker restart, Redis down.

Starts its own Kafka broker (scripts/kafka_local.py) and redis-server (append-only file,
so its data survives its own restart), then ``pulse run --recovery DIR`` (a subprocess,
its own process group) on a fresh topic while this script produces generated events
(event time = now) at ``--rate`` events/s, without pause, for the whole run. After
``--warmup`` seconds, one fault after the other, each once the lag is back to normal:

* ``kill9``: SIGKILL of pulse run's process group, then the same command at once (same
  recovery store, ``--snapshot-s``): it resumes from the last snapshot and reads again
  what came after it.
* ``broker_restart``: scripts/kafka_local.py stop, then start (same port, same data).
* ``redis_down``: redis-server stopped for ``--redis-down-s`` seconds, then started again.

Staleness = wall clock minus the newest ``last_seen`` in the profiles of ten probe users,
who send one event every 100 ms between them (event time = produce time), sampled every
50 ms. Lag = the topic's high watermarks
minus the offsets pulse run commits to its consumer group (with --recovery these follow
the snapshots, so the lag is coarse: about rate x snapshot_s in steady state), every
0.25 s. For each fault: ``fault_s`` (how long the fault lasted), ``recover_s`` (from the
fault's end, i.e. the restart launched / the broker or Redis ready again, until the
staleness is back under ``fresh_limit_ms``: 100 ms, or the steady p95 before the faults
where that is more), ``peak_staleness_s`` and ``peak_lag`` (records) from the fault's
start until recovered. At the end the producer stops, the run drains, and
``events_exact`` and ``users_exact`` compare pulse:meta's events_processed and users with
an uninterrupted ``pulse run`` over the same topic into another database. Prints one JSON line. Example:

    .venv/bin/python benchmarks/live_faults.py --rate 2000 --redis-down-s 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from services import free_port, kafka_local

ROOT = Path(__file__).resolve().parents[1]


class RedisProc:
    def __init__(self, workdir: Path) -> None:
        self.port, self.dir, self.proc = free_port(), workdir, None

    def start(self) -> None:
        self.proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "yes", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Lag(threading.Thread):
    def __init__(self, bootstrap: str, topic: str, partitions: int, group: str) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    def run(self) -> None:
        while not self.halt.wait(0.25):
            try:
                high = sum(self.consumer.get_watermark_offsets(tp, timeout=1, cached=False)[1] for tp in self.tps)
                committed = sum(max(0, tp.offset) for tp in self.consumer.committed(self.tps, timeout=1))
            except Exception:  # noqa: BLE001 - the broker is down: no sample
                continue
            self.samples.append((time.monotonic(), high - committed))

    def latest(self) -> int | None:
        return self.samples[-1][1] if self.samples else None


PROBES = [f"probe-{k}" for k in range(10)]


class Staleness(threading.Thread):
    """Every 50 ms: wall clock minus the newest ``last_seen`` of the probe users'
    profiles (a probe event every 100 ms, event time = produce time), in seconds."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.samples: list[tuple[float, float, float]] = []  # (monotonic, staleness, newest event time)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            try:
                docs = self.client.mget([f"pulse:user:{{{p}}}:profile" for p in PROBES])
            except redis.RedisError:
                continue  # Redis is down: no sample
            seen = [int(orjson.loads(d).get("last_seen") or 0) for d in docs if d]
            ms = max(seen, default=None)
            if ms:
                self.samples.append((time.monotonic(), time.time() - int(ms) / 1000, int(ms) / 1000))


class Traffic(threading.Thread):
    """Generated events at a steady rate, event time = now, keyed by user."""

    def __init__(self, bootstrap: str, topic: str, rate: float, seed: int) -> None:
        super().__init__(daemon=True)
        sys.path.insert(0, str(ROOT))
        from pulse.flows.generate import generate

        lines, _ = generate(users=2000, items=1000, events=200_000, seed=seed, days=1)
        self.docs = [orjson.loads(line) for line in lines]
        self.rate, self.topic = rate, topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "enable.idempotence": True,
                                  "message.timeout.ms": 600_000, "queue.buffering.max.messages": 1_000_000})
        self.halt = threading.Event()
        self.sent = self.failed = 0

    def on_delivery(self, err, _msg) -> None:
        if err is not None:
            self.failed += 1

    def run(self) -> None:
        from pulse.flows.live import Pacer

        pacer, i, probe_at, k = Pacer(self.rate), 0, time.monotonic(), 0
        items = sorted({d["item_id"] for d in self.docs[:5000] if "item_id" in d})
        while not self.halt.is_set():
            pacer.wait()
            if time.monotonic() >= probe_at:
                probe_at += 0.1
                doc = {"user_id": PROBES[k % len(PROBES)], "type": "view", "item_id": items[k % len(items)],
                       "ts": int(time.time() * 1000)}
                k += 1
            else:
                doc = dict(self.docs[i % len(self.docs)])
                doc["ts"] = int(time.time() * 1000)
                if "event_id" in doc:
                    doc["event_id"] = f"{doc['event_id']}-{i}"
                i += 1
            self.producer.produce(self.topic, key=str(doc["user_id"]).encode(), value=orjson.dumps(doc), on_delivery=self.on_delivery)
            self.producer.poll(0)
            self.sent += 1
        self.producer.flush(120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=20)
    ap.add_argument("--snapshot-s", type=float, default=10.0)
    ap.add_argument("--redis-down-s", type=float, default=30.0)
    ap.add_argument("--faults", default="kill9,broker_restart,redis_down")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pulse-faults-"))
    kafka_dir = tmp / "kafka"
    rds = RedisProc(tmp)
    rds.start()
    url = f"redis://127.0.0.1:{rds.port}/0"
    kafka_local("fetch", "--quiet")
    bootstrap = kafka_local("start", "--dir", str(kafka_dir), "--owner-pid", str(os.getpid()), "--fast-startup")["bootstrap"]
    topic, group = f"faults-{uuid.uuid4().hex[:8]}", f"pulse-faults-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
    time.sleep(1)
    store = tmp / "recovery"
    cmd = [sys.executable, "-m", "pulse", "run", "--brokers", bootstrap, "--topic", topic, "--redis", url, "--group", group,
           "--recovery", str(store), "--snapshot-s", str(args.snapshot_s), "--connect-timeout", "120"]
    errlog = open(tmp / "pulse.err", "w+")  # noqa: SIM115 - for the whole run

    def launch() -> subprocess.Popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, text=True, start_new_session=True, cwd=ROOT)

    proc = launch()
    traffic = Traffic(bootstrap, topic, args.rate, args.seed)
    lag = Lag(bootstrap, topic, args.partitions, group)
    stale = Staleness(url)
    result: dict = {"rate": args.rate, "partitions": args.partitions, "snapshot_s": args.snapshot_s, "faults": {}}
    try:
        traffic.start()
        lag.start()
        stale.start()
        started = time.monotonic()
        while (lag.latest() is None or lag.latest() > args.rate) and time.monotonic() - started < 180:
            time.sleep(0.25)  # pulse run's start-up: the backlog it found is read
        time.sleep(args.warmup)
        steady = sorted(v for t, v in lag.samples if t > time.monotonic() - args.warmup / 2)
        normal = steady[int(0.95 * (len(steady) - 1))] if steady else 0
        result["normal_lag"] = normal  # p95 of the steady lag before the faults
        fresh = sorted(v for t, v, _ in stale.samples if t > time.monotonic() - args.warmup / 2)
        limit = max(0.1, fresh[int(0.95 * (len(fresh) - 1))])
        result["normal_staleness_p50_ms"] = round(1000 * fresh[len(fresh) // 2])
        result["fresh_limit_ms"] = round(1000 * limit)

        def recovered_after(fault_start: float, fault_end: float, end_wall: float, timeout: float = 300) -> dict:
            """Recovered: the first staleness sample under the limit (100 ms, or the
            steady p95 before the faults where that is more) that reflects an event
            produced after the fault's end."""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                back = next((t for t, v, ev in stale.samples if ev >= end_wall and v <= limit), None)
                if back is not None:
                    lags = [v for t, v in lag.samples if fault_start <= t <= back + 1]
                    stales = [v for t, v, _ in stale.samples if fault_start <= t <= back]
                    return {"fault_s": round(fault_end - fault_start, 2), "recover_s": round(back - fault_end, 2),
                            "peak_staleness_s": round(max(stales, default=0), 2), "peak_lag": max(lags, default=0)}
                if proc.poll() is not None:
                    raise SystemExit(f"pulse run exited: {proc.returncode}")
                time.sleep(0.1)
            return {"fault_s": round(fault_end - fault_start, 2), "recover_s": None}

        for fault in args.faults.split(","):
            t0 = time.monotonic()
            if fault == "kill9":
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                assert proc.returncode == -signal.SIGKILL
                proc = launch()
            elif fault == "broker_restart":
                kafka_local("stop", "--dir", str(kafka_dir))
                again = kafka_local("start", "--dir", str(kafka_dir), "--owner-pid", str(os.getpid()), "--fast-startup")
                assert again["bootstrap"] == bootstrap, again
            elif fault == "redis_down":
                rds.stop()
                time.sleep(args.redis_down_s)
                assert proc.poll() is None
                rds.start()
            else:
                raise SystemExit(f"unknown fault {fault}")
            t1 = time.monotonic()
            result["faults"][fault] = recovered_after(t0, t1, time.time())
            time.sleep(5)
        traffic.halt.set()
        traffic.join(180)
        deadline = time.monotonic() + 120
        while lag.latest() != 0 and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(2)  # the last flush
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        meta = {k.decode(): v.decode() for k, v in redis.Redis.from_url(url).hgetall("pulse:meta").items()}
        result["produced"] = traffic.sent
        result["produce_failed"] = traffic.failed
        result["lag_at_end"] = lag.latest()
        result["events_processed"] = int(meta.get("events_processed", 0))
        result["users"] = int(meta.get("users", 0))
        # An uninterrupted run over the same records, into another database: what the
        # faulted run should have counted.
        ref_url = f"redis://127.0.0.1:{rds.port}/1"
        again = subprocess.run([sys.executable, "-m", "pulse", "run", "--brokers", bootstrap, "--topic", topic, "--redis", ref_url,
                                "--group", group + "-ref", "--max-events", str(traffic.sent)],
                               check=True, capture_output=True, text=True, cwd=ROOT)
        ref = json.loads(again.stdout.strip().splitlines()[-1])
        ref_meta = redis.Redis.from_url(ref_url).hgetall("pulse:meta")
        result["uninterrupted_events_in"] = ref["events_in"]
        result["uninterrupted_events_processed"] = int(ref_meta[b"events_processed"])
        result["uninterrupted_users"] = int(ref_meta[b"users"])
        result["events_exact"] = (result["events_processed"] == result["uninterrupted_events_processed"]
                                  and ref["events_in"] == traffic.sent)
        result["users_exact"] = result["users"] == result["uninterrupted_users"]
    finally:
        lag.halt.set()
        stale.halt.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kafka_local("stop", "--dir", str(kafka_dir))
        rds.stop()
        errlog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
