#!/usr/bin/env python3
"""Freshness of a live Pulse run: how long from an event being produced to Kafka until
Redis reflects it, and whether the consumer keeps up.

While ``pulse run`` (a subprocess, the system under test) consumes a fresh topic, this
script produces generated events at a steady rate (token bucket), each stamped with
``ts`` = ``sent_ms`` = the wall clock when sent (``sent_ms`` is ignored by the contract).

* Latency: a share of the traffic comes from *probe* users, each sending one event every
  ``--probe-interval`` seconds (longer than the debounce interval, so every probe event
  must reach Redis at once). A separate process subscribed to Redis keyspace
  notifications (``notify-keyspace-events K$``) timestamps each SET of a probe's
  ``recs`` and ``profile`` keys, reads the value, and matches it to the probe event it
  reflects (``generated_at`` / ``last_seen`` == the event's ts). Latency = seen - sent.
  Probe events never seen count as ``missing``.
* Lag: once a second, the topic's high watermarks minus the offsets ``pulse run``
  commits to its consumer group (every 0.25 s per partition);
  ``lag_slope_per_s`` is the least-squares slope over the second half of the run.

``--warmup S`` produces the same traffic for S seconds before the measured window (its
probes, lag and CPU are not counted): a broker started by ``--start-services`` spends its
first 20-40 s JIT-compiling on the same cores (measured: 0.2-0.5 of a core), which a
long-running production broker does not.

``--processes N`` runs ``pulse run`` as N processes of one Bytewax cluster on loopback
(each with the same ``--addresses`` of free ports and its own ``--process-id``); the topic
gets at least N partitions, the CPU figure adds up all N, and ``pulse_summary`` is the
sums of their event counts plus each one's summary (``per_process``).

It starts nothing but the pulse run unless ``--start-services`` (then a Kafka broker via
scripts/kafka_local.py and a redis-server, both stopped at the end). Prints one JSON
document. Example:

    .venv/bin/python benchmarks/freshness.py --start-services --rate 5000 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
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

from services import KAFKA_LOCAL, free_port

ROOT = Path(__file__).resolve().parents[1]


def percentiles(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    xs = sorted(xs)

    def p(q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1)

    return {"n": len(xs), "p50": p(0.50), "p95": p(0.95), "p99": p(0.99), "max": round(xs[-1], 1),
            "mean": round(statistics.fmean(xs), 1)}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def broker_pids(bootstrap: str) -> list[int]:
    """kafka.Kafka processes whose server.properties listen on the bootstrap's port."""
    port = bootstrap.rsplit(":", 1)[-1].split(",")[0]
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
            if b"kafka.Kafka" in args:
                props = Path(args[args.index(b"kafka.Kafka") + 1].decode()).read_text()
                if f":{port}" in props:
                    pids.append(int(d.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def all_cpu() -> dict[int, tuple[float, str]]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                name = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
            except OSError:
                continue
            out[int(d.name)] = (cpu_seconds(int(d.name)), name)
    return out


class CpuMeter:
    """CPU seconds of each part between start() and stop(): cores = seconds / wall."""

    def __init__(self, pulse_pids: list[int], watcher_pid: int, bootstrap: str, client: redis.Redis) -> None:
        self.pids = {"pulse": list(pulse_pids), "benchmark_watcher": [watcher_pid], "kafka_broker": broker_pids(bootstrap)}
        self.client = client

    def _read(self) -> dict:
        info = self.client.info("cpu")
        me = os.times()
        out = {k: sum(cpu_seconds(p) for p in pids) for k, pids in self.pids.items()}
        out.update(machine=machine_busy_s(), benchmark_producer=me.user + me.system,
                   redis=info["used_cpu_user"] + info["used_cpu_sys"], wall=time.monotonic())
        return out

    def start(self) -> None:
        self.a = self._read()
        self.procs = all_cpu()

    def stop(self) -> dict:
        b = self._read()
        wall = b["wall"] - self.a["wall"]
        cores = {k: round((b[k] - self.a[k]) / wall, 2) for k in b if k != "wall"}
        cores["other"] = round(cores["machine"] - sum(v for k, v in cores.items() if k != "machine"), 2)
        cores["machine_cores"] = os.cpu_count()
        known = {p for pids in self.pids.values() for p in pids} | {os.getpid()}
        others = []
        for pid, (after, name) in all_cpu().items():
            before = self.procs.get(pid, (0.0, ""))[0]
            if pid not in known and "redis-server" not in name and after == after:
                others.append((round((after - before) / wall, 2), name))
        cores["top_other_processes"] = [o for o in sorted(others, reverse=True)[:3] if o[0] >= 0.02]
        return cores


# -- services (optional) -----------------------------------------------------------------
class Services:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pulse-fresh-"))
        self.redis_proc: subprocess.Popen | None = None
        self.kafka_dir: Path | None = None

    def start(self) -> tuple[str, str]:
        port = free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server not found (apt-get install redis-server)")
        self.redis_proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                            "--dir", str(self.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        subprocess.run([sys.executable, str(KAFKA_LOCAL), "fetch", "--quiet"], check=True)
        self.kafka_dir = self.tmp / "kafka"
        out = subprocess.run([sys.executable, str(KAFKA_LOCAL), "start", "--dir", str(self.kafka_dir), "--owner-pid", str(os.getpid())],
                             check=True, capture_output=True, text=True)
        bootstrap = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])["bootstrap"]
        return bootstrap, f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        if self.kafka_dir is not None:
            subprocess.run([sys.executable, str(KAFKA_LOCAL), "stop", "--dir", str(self.kafka_dir)], capture_output=True)
        if self.redis_proc is not None:
            self.redis_proc.terminate()
            self.redis_proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- the Redis watcher (own process: no GIL shared with the producer) ----------------------
def watch(url: str, prefix: str, ready: mp.Event, stop: mp.Event, results: mp.Queue) -> None:
    client = redis.Redis.from_url(url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"__keyspace@{db}__:{prefix}:user:{{probe-*}}:recs", f"__keyspace@{db}__:{prefix}:user:{{probe-*}}:profile")
    ready.set()
    seen: list[tuple[str, str, int, float]] = []  # (user, kind, event ts, seen at ms)
    reader = redis.Redis.from_url(url)
    while not stop.is_set():
        msg = pubsub.get_message(timeout=0.2)
        if msg is None:
            continue
        at_ms = time.time() * 1000
        if msg["data"] not in (b"set",):
            continue
        key = msg["channel"].decode().split(":", 1)[1]
        value = reader.get(key)
        if value is None:
            continue
        doc = orjson.loads(value)
        user = key.split("{", 1)[1].split("}", 1)[0]
        if key.endswith(":recs"):
            # generated_at is the ISO form of the event time that triggered the list
            from datetime import datetime

            ts = int(datetime.fromisoformat(doc["generated_at"].replace("Z", "+00:00")).timestamp() * 1000)
            seen.append((user, "recs", ts, at_ms))
        else:
            seen.append((user, "profile", int(doc.get("last_seen") or 0), at_ms))
    results.put(seen)


# -- lag sampler ------------------------------------------------------------------------------
def sample_lag(bootstrap: str, topic: str, partitions: int, group: str, stop: threading.Event, out: list, t0: float) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    try:
        while not stop.wait(1.0):
            try:
                high = sum(consumer.get_watermark_offsets(tp, timeout=2, cached=False)[1] for tp in tps)
                committed = sum(max(0, tp.offset) for tp in consumer.committed(tps, timeout=2))
            except Exception:  # noqa: BLE001 - a missed sample is fine
                continue
            out.append((round(time.monotonic() - t0, 1), high, committed, high - committed))
    finally:
        consumer.close()


def slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return float("nan")
    xs, ys = zip(*points)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", help="Kafka bootstrap HOST:PORT (or --start-services)")
    ap.add_argument("--redis", help="Redis URL, e.g. redis://127.0.0.1:6379/0 (the db is flushed!)")
    ap.add_argument("--start-services", action="store_true", help="start a local Kafka broker and redis-server for the run")
    ap.add_argument("--rate", type=float, default=5000.0, help="events per second (default 5000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to produce (default 60)")
    ap.add_argument("--partitions", type=int, default=3, help="topic partitions (default 3; raised to --processes if fewer)")
    ap.add_argument("--processes", type=int, default=1,
                    help="run pulse as this many processes of one Bytewax cluster on loopback (default 1: one plain process)")
    ap.add_argument("--users", type=int, default=5000, help="background users (default 5000)")
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--probes", type=int, default=200, help="probe users (default 200)")
    ap.add_argument("--probe-interval", type=float, default=2.0, help="seconds between one probe's events (> recs_interval_s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", help="run pulse under cProfile and write its stats here (slows it down)")
    ap.add_argument("--grace", type=float, default=15.0, help="seconds to wait for outstanding probes after producing")
    ap.add_argument("--warmup", type=float, default=0.0,
                    help="produce at the rate for this many seconds before measuring (default 0: measure from the start)")
    ap.add_argument("--samples", help="also write every probe's (sent at epoch ms, recs latency ms) here, as JSON")
    args = ap.parse_args()
    if args.processes < 1:
        ap.error("--processes must be at least 1")

    services = Services() if args.start_services else None
    if services is None and not (args.brokers and args.redis):
        ap.error("give --brokers and --redis, or --start-services")
    try:
        bootstrap, url = services.start() if services else (args.brokers, args.redis)
        print(json.dumps(run(args, bootstrap, url)), flush=True)
    finally:
        if services:
            services.stop()


def run(args: argparse.Namespace, bootstrap: str, url: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from pulse.flows.generate import generate
    from pulse.flows.live import Pacer

    prefix = "pulse"
    r = redis.Redis.from_url(url)
    r.flushdb()
    old_notify = r.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
    r.config_set("notify-keyspace-events", "K$")

    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    group = f"pulse-fresh-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = max(args.partitions, args.processes)  # every process reads at least one partition
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    time.sleep(1.0)

    # Background traffic: the generator's users, sessions, bots (event times replaced by now).
    total = int(args.rate * (args.seconds + args.warmup))
    lines, _ = generate(users=args.users, items=args.items, events=total, seed=args.seed, days=1)
    background = [orjson.loads(line) for line in lines]
    item_ids = sorted({d["item_id"] for d in background[:20000] if "item_id" in d})
    rng = random.Random(args.seed)

    ctx = mp.get_context("spawn")
    ready, stop_watch, results = ctx.Event(), ctx.Event(), ctx.Queue()
    watcher = ctx.Process(target=watch, args=(url, prefix, ready, stop_watch, results), daemon=True)
    watcher.start()
    ready.wait(30)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    n_proc = args.processes
    if n_proc > 1:
        from pulse.flows.replay import cluster_addresses

        cluster = ["--addresses", ";".join(cluster_addresses(n_proc))]
    else:
        cluster = []  # one plain process, as before --processes existed
    # Output to files, not pipes: a full pipe would block one process, and with it the cluster.
    logs = Path(tempfile.mkdtemp(prefix="pulse-fresh-logs-"))
    outs = [open(logs / f"out-{i}", "w+") for i in range(n_proc)]  # noqa: SIM115 - open for the whole run, closed below
    errs = [open(logs / f"err-{i}", "w+") for i in range(n_proc)]  # noqa: SIM115
    pulses: list[subprocess.Popen] = []
    for i in range(n_proc):
        prof_path = Path(args.profile).resolve() if args.profile else None
        if prof_path is not None and n_proc > 1:
            prof_path = prof_path.with_name(f"{prof_path.name}.{i}")
        profile = ["-m", "cProfile", "-o", str(prof_path)] if prof_path else []
        ident = [*cluster, "--process-id", str(i)] if cluster else []
        pulses.append(subprocess.Popen([sys.executable, *profile, "-m", "pulse", "run", "--brokers", bootstrap, "--topic", topic,
                                        "--redis", url, "--group", group, "--idle-exit", str(max(5.0, args.grace)), *ident],
                                       stdout=outs[i], stderr=errs[i], text=True, env=env, cwd=ROOT))

    def tail(f, n: int = 2000) -> str:
        f.flush()
        f.seek(0)
        return f.read()[-n:]

    stop_lag = threading.Event()

    def fail(why: str) -> None:
        """Stop every pulse process and exit with ``why`` and the stderr of those that ended."""
        for p in pulses:
            if p.poll() is None:
                p.terminate()
        for p in pulses:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        ended = [i for i, p in enumerate(pulses) if p.returncode not in (0, -15)] or list(range(n_proc))
        detail = "\n".join(f"--- pulse process {i} (exit {pulses[i].returncode}) stderr tail:\n{tail(errs[i])}" for i in ended)
        stop_lag.set()
        stop_watch.set()
        watcher.join(5)
        r.config_set("notify-keyspace-events", old_notify)
        raise SystemExit(f"{why}\n{detail}")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "enable.idempotence": True,
                         "queue.buffering.max.messages": 1_000_000})
    failed = [0]

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failed[0] += 1

    def send(doc: dict) -> None:
        producer.produce(topic, key=doc["user_id"].encode(), value=orjson.dumps(doc), on_delivery=on_delivery)

    # Wait until the flow answers: a ready probe sent to each partition must reach Redis
    # (so every partition's reader, in whichever process, is running).
    t_ready = time.monotonic()
    now = int(time.time() * 1000)
    for part in range(partitions):
        doc = {"user_id": f"ready-{part}", "type": "view", "ts": now, "item_id": item_ids[0], "sent_ms": now}
        producer.produce(topic, key=doc["user_id"].encode(), value=orjson.dumps(doc), partition=part, on_delivery=on_delivery)
    producer.flush(30)
    waiting = [f"{prefix}:user:{{ready-{part}}}:recs" for part in range(partitions)]
    while waiting:
        waiting = [k for k in waiting if r.get(k) is None]
        early = [i for i, p in enumerate(pulses) if p.poll() is not None]
        if early:
            fail(f"pulse run process(es) {early} exited before the flow answered")
        if time.monotonic() - t_ready > 120:
            fail(f"pulse run did not answer within 120 s ({len(waiting)} of {partitions} partitions' ready probes unseen)")
        time.sleep(0.05)
    startup_s = time.monotonic() - t_ready

    lag: list = []
    probes = [f"probe-{k:04d}" for k in range(args.probes)]
    step = args.probe_interval / max(1, len(probes))
    sent_probe: dict[tuple[str, int], float] = {}
    pacer = Pacer(args.rate)
    at = {"bg": iter(background), "next_probe": time.monotonic(), "probe_k": 0}

    def produce_until(deadline: float, measured: bool) -> int:
        """Produce at the rate until ``deadline``; probe events count only when ``measured``."""
        n = 0
        while True:
            pacer.wait()
            mono = time.monotonic()
            if mono >= deadline:
                return n
            wall = time.time() * 1000
            now = int(wall)
            if probes and mono >= at["next_probe"]:
                user = probes[at["probe_k"] % len(probes)]
                at["probe_k"] += 1
                at["next_probe"] += step
                doc = {"user_id": user, "type": "view", "ts": now, "item_id": rng.choice(item_ids), "event_id": uuid.uuid4().hex,
                       "sent_ms": now}
                if measured:
                    sent_probe[(user, now)] = wall
            else:
                doc = next(at["bg"], None)
                if doc is None:
                    at["bg"] = iter(background)
                    doc = next(at["bg"])
                doc["ts"] = doc["sent_ms"] = now
                doc.pop("event_id", None)  # reused when the background wraps around: no false duplicates
            try:
                send(doc)
            except BufferError:
                producer.poll(0.05)
                send(doc)
            n += 1
            if n % 500 == 0:
                producer.poll(0)

    if args.warmup > 0:
        # The same traffic, not measured: a broker just started spends its first tens of
        # seconds compiling (JIT) on the same two cores, which is not Pulse's latency.
        produce_until(time.monotonic() + args.warmup, measured=False)
    t0 = time.monotonic()
    lag_thread = threading.Thread(target=sample_lag, args=(bootstrap, topic, partitions, group, stop_lag, lag, t0), daemon=True)
    lag_thread.start()
    meter = CpuMeter([p.pid for p in pulses], watcher.pid, bootstrap, r)
    meter.start()
    produced = produce_until(t0 + args.seconds, measured=True)
    produce_s = time.monotonic() - t0
    producer.flush(60)
    cpu = meter.stop()

    # pulse run exits after --idle-exit seconds without input: outstanding probes land meanwhile.
    # A process that ends early (not by its idle exit) takes the rest down: fail clearly.
    deadline = time.monotonic() + args.grace + 600
    while any(p.poll() is None for p in pulses):
        bad = [i for i, p in enumerate(pulses) if p.returncode not in (None, 0)]
        if bad:
            fail(f"pulse run process(es) {bad} failed")
        if time.monotonic() > deadline:
            fail("pulse run did not exit in time")
        time.sleep(0.1)
    bad = [i for i, p in enumerate(pulses) if p.returncode != 0]
    if bad:
        fail(f"pulse run process(es) {bad} failed")
    stdouts = [tail(f, 10**9) for f in outs]
    stderrs = [tail(f) for f in errs]
    for f in outs + errs:
        f.close()
    shutil.rmtree(logs, ignore_errors=True)
    stop_lag.set()
    lag_thread.join(5)
    stop_watch.set()
    seen = results.get(timeout=30)
    watcher.join(10)
    r.config_set("notify-keyspace-events", old_notify)

    # An event is reflected once Redis holds a value at least as new as it: its own
    # write, or (when the flow lags and the store coalesced two writes of a key into
    # one) a newer one. "superseded" counts the latter; "missing" the never reflected.
    writes: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for user, kind, ts, at in seen:
        writes.setdefault((user, kind), []).append((ts, at))
    lat: dict[str, list[float]] = {"recs": [], "profile": []}
    samples: list[tuple[float, float]] = []
    missing = {"recs": 0, "profile": 0}
    superseded = {"recs": 0, "profile": 0}
    for (user, ts), sent in sent_probe.items():
        for kind in ("recs", "profile"):
            hits = [(at, wts) for wts, at in writes.get((user, kind), []) if wts >= ts]
            if not hits:
                missing[kind] += 1
                continue
            at, wts = min(hits)
            superseded[kind] += wts != ts
            lat[kind].append(at - sent)
            if kind == "recs":
                samples.append((round(sent, 1), round(at - sent, 1)))
    if args.samples:
        Path(args.samples).write_bytes(orjson.dumps(sorted(samples)))
    summaries = []
    for stdout, stderr in zip(stdouts, stderrs):
        try:
            summaries.append(orjson.loads(stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            summaries.append({"error": stderr[-2000:]})
    if n_proc == 1:
        pulse_summary = summaries[0]
    else:
        # The counts summed where a single process's summary has them; each process's own below.
        pulse_summary = {"processes": n_proc}
        for one in summaries:
            for k, v in one.items():
                if (k.startswith("events_") and k != "events_per_s" or k in ("users", "keys_written", "lag_at_exit")) \
                        and isinstance(v, (int, float)) and not isinstance(v, bool):
                    pulse_summary[k] = pulse_summary.get(k, 0) + v
            for reason, n in one.get("dlq_by_reason", {}).items():
                pulse_summary.setdefault("dlq_by_reason", {})[reason] = pulse_summary.get("dlq_by_reason", {}).get(reason, 0) + n
        pulse_summary["per_process"] = summaries
    half = [(t, lg) for t, _h, _c, lg in lag if t >= args.seconds / 2 and t <= args.seconds]
    lag_series = [lg for t, _h, _c, lg in lag if t <= args.seconds]
    return {
        "config": {"rate": args.rate, "seconds": args.seconds, "warmup_s": args.warmup, "partitions": partitions, "users": args.users,
                   "items": args.items, "probes": args.probes, "probe_interval_s": args.probe_interval, "processes": n_proc,
                   **({"partitions_raised_from": args.partitions} if partitions != args.partitions else {})},
        "produced": {"events": produced, "seconds": round(produce_s, 2), "events_per_s": round(produced / produce_s, 1),
                     "failed": failed[0]},
        "startup_s": round(startup_s, 2),
        "latency_ms": {"recs": percentiles(lat["recs"]), "profile": percentiles(lat["profile"])},
        "probe_events": len(sent_probe),
        "missing": missing,
        "superseded": superseded,
        "target_p99_ms": 250,
        "met": bool(lat["recs"]) and percentiles(lat["recs"])["p99"] <= 250 and not missing["recs"] and not missing["profile"],
        "lag": {
            "samples_every_s": 1,
            "series": lag_series,
            "max": max(lag_series) if lag_series else None,
            "end_of_production": lag_series[-1] if lag_series else None,
            "slope_second_half_per_s": round(slope(half), 1) if half else None,
            "grows": bool(half) and slope(half) > args.rate * 0.02,
        },
        "cpu_cores_while_producing": cpu,
        "pulse_summary": pulse_summary,
    }


if __name__ == "__main__":
    main()
