#!/usr/bin/env python3
"""Load on the HTTP collector: events per second ``pulse collect`` accepts in batches of
``--batch`` (50) at a steady offered rate, with the request latency, and nothing lost.

``pulse collect`` runs as a subprocess (the system under test) in front of a fresh topic.
This script is an open-loop load generator on ``--connections`` keep-alive HTTP/1.1
connections (asyncio): request i is due at ``t0 + i / request_rate``; its latency runs
from when it was due to its answer, so a collector that falls behind shows it in the
latency (no coordinated omission). Bodies are prepared before the run (distinct events,
valid, JSON arrays).

After the run it waits until the collector's queue is empty (``/healthz``) and counts
the topic's messages (sum of the partitions' high watermarks of the fresh topic), which
must equal the events the collector acknowledged in its 202 answers (``lost`` = the
difference; ``ok`` is false otherwise). CPU is measured per part (collector, broker,
this load generator) from /proc.

``--warmup S`` sends the same load for S seconds first (not measured): a freshly started
broker JIT-compiles for its first 20-40 s. ``--start-broker`` starts a Kafka broker with
scripts/kafka_local.py (stopped at the end); otherwise pass ``--brokers``. Prints one JSON
document. Example:

    .venv/bin/python benchmarks/collector_load.py --start-broker --rate 20000 --seconds 30 --warmup 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
KAFKA_LOCAL = ROOT / "scripts" / "kafka_local.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from freshness import broker_pids, cpu_seconds, free_port, machine_busy_s  # noqa: E402


def percentiles_ms(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    xs = sorted(xs)

    def p(q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 2)

    return {"n": len(xs), "p50": p(0.50), "p90": p(0.90), "p99": p(0.99), "max": round(xs[-1] * 1000, 2),
            "mean": round(statistics.fmean(xs) * 1000, 2)}


def bodies(n: int, batch: int, users: int, items: int, port: int) -> list[bytes]:
    """``n`` ready-to-send POST requests of ``batch`` distinct valid events each."""
    now = int(time.time() * 1000)
    types = ("view", "view", "view", "click", "scroll", "dwell", "add_to_cart")
    out = []
    k = 0
    for _ in range(n):
        events = []
        for _ in range(batch):
            kind = types[k % len(types)]
            ev = {"user_id": f"u{(k * 7919) % users}", "type": kind, "ts": now + k % 1000, "item_id": f"sku-{(k * 104729) % items}",
                  "category": f"c{k % 20}", "event_id": f"e{k}", "session_id": f"s{k % 997}", "page": "/shop"}
            if kind == "scroll":
                ev["scroll_pct"] = 50
            elif kind == "dwell":
                ev["dwell_ms"] = 12_000
            events.append(ev)
            k += 1
        body = orjson.dumps(events)
        head = (f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain;charset=UTF-8\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        out.append(head + body)
    return out


async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def load(port: int, requests: list[bytes], rate_rps: float, seconds: float, connections: int) -> dict:
    """Send requests at ``rate_rps`` for ``seconds`` over ``connections`` connections."""
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    totals = {"accepted": 0, "rejected": 0}
    total = int(rate_rps * seconds)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                i, due = item
                status, body = await send(reader, writer, requests[i % len(requests)])
                latencies.append(time.perf_counter() - due)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 202:
                    doc = orjson.loads(body)
                    totals["accepted"] += doc["accepted"]
                    totals["rejected"] += len(doc["rejected"])
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    t0 = time.perf_counter()
    for i in range(total):
        due = t0 + i / rate_rps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    wall = time.perf_counter() - t0
    return {"requests": total, "seconds": round(wall, 3), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "accepted": totals["accepted"], "rejected": totals["rejected"],
            "accepted_per_s": round(totals["accepted"] / wall, 1), "latency_ms": percentiles_ms(latencies)}


def topic_count(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in parts)
    finally:
        consumer.close()


def healthz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return json.loads(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", help="Kafka bootstrap HOST:PORT (or --start-broker)")
    ap.add_argument("--start-broker", action="store_true", help="start a local Kafka broker for the run (scripts/kafka_local.py)")
    ap.add_argument("--rate", type=float, default=20_000, help="offered events per second (default 20000)")
    ap.add_argument("--batch", type=int, default=50, help="events per request (default 50)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds (default 30)")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of the same load before measuring (default 10)")
    ap.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    ap.add_argument("--partitions", type=int, default=3, help="partitions of the fresh topic (default 3)")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--collector-arg", action="append", default=[], help="extra argument for pulse collect (repeatable)")
    args = ap.parse_args()
    if not args.brokers and not args.start_broker:
        ap.error("pass --brokers HOST:PORT or --start-broker")

    tmp = Path(tempfile.mkdtemp(prefix="pulse-load-"))
    kafka_dir = tmp / "kafka"
    collector = None
    try:
        if args.start_broker:
            subprocess.run([sys.executable, str(KAFKA_LOCAL), "fetch", "--quiet"], check=True, stdout=subprocess.DEVNULL)
            out = subprocess.run([sys.executable, str(KAFKA_LOCAL), "start", "--dir", str(kafka_dir), "--owner-pid", str(os.getpid())],
                                 check=True, capture_output=True, text=True)
            bootstrap = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])["bootstrap"]
        else:
            bootstrap = args.brokers
        topic = f"load-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])[topic].result(30)
        port = free_port()
        log = open(tmp / "collect.log", "wb")
        collector = subprocess.Popen([sys.executable, "-m", "pulse", "collect", "--brokers", bootstrap, "--topic", topic,
                                      "--port", str(port), "--rate-limit", "0", *args.collector_arg], stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                healthz(port)
                break
            except OSError:
                if collector.poll() is not None:
                    sys.exit(f"pulse collect exited: {(tmp / 'collect.log').read_text()[-2000:]}")
                time.sleep(0.1)
        rps = args.rate / args.batch
        requests = bodies(max(1, min(4000, int(rps * 10))), args.batch, args.users, args.items, port)
        loop = asyncio.new_event_loop()
        if args.warmup > 0:
            warm = loop.run_until_complete(load(port, requests, rps, args.warmup, args.connections))
        else:
            warm = {"accepted": 0}
        brokers_pids = broker_pids(bootstrap)
        before = {"collector": cpu_seconds(collector.pid), "broker": sum(cpu_seconds(p) for p in brokers_pids),
                  "load_generator": sum(os.times()[:2]), "machine": machine_busy_s()}
        measured = loop.run_until_complete(load(port, requests, rps, args.seconds, args.connections))
        after = {"collector": cpu_seconds(collector.pid), "broker": sum(cpu_seconds(p) for p in brokers_pids),
                 "load_generator": sum(os.times()[:2]), "machine": machine_busy_s()}
        cores = {k: round((after[k] - before[k]) / measured["seconds"], 2) for k in before}
        cores["other"] = round(cores["machine"] - cores["collector"] - cores["broker"] - cores["load_generator"], 2)
        deadline = time.monotonic() + 120
        while healthz(port)["queue_depth"] and time.monotonic() < deadline:
            time.sleep(0.2)
        acknowledged = warm["accepted"] + measured["accepted"]
        on_topic = topic_count(bootstrap, topic)
        p99 = measured["latency_ms"].get("p99", float("inf"))
        doc = {
            "offered_events_per_s": args.rate, "batch": args.batch, "connections": args.connections, "partitions": args.partitions,
            "seconds": args.seconds, "warmup_s": args.warmup,
            "accepted_events_per_s": measured["accepted_per_s"], "latency_ms": measured["latency_ms"],
            "statuses": measured["statuses"], "acknowledged": acknowledged, "on_topic": on_topic, "lost": acknowledged - on_topic,
            "cores": cores, "machine_cores": os.cpu_count(),
            "target": {"events_per_s": 20_000, "p99_ms": 50},
            # kept up with the offered load (the rate counts over the wall time, the last answers included)
            "ok": (args.rate >= 20_000 and measured["accepted_per_s"] >= 0.99 * args.rate
                   and measured["statuses"] == {"202": measured["requests"]} and p99 <= 50 and acknowledged == on_topic),
        }
        collector.terminate()
        collector.wait(60)
        doc["collector_summary"] = json.loads([ln for ln in (tmp / "collect.log").read_text().splitlines() if ln.startswith("{")][-1])
        collector = None
        print(json.dumps(doc))
    finally:
        if collector is not None:
            collector.kill()
        if args.start_broker:
            subprocess.run([sys.executable, str(KAFKA_LOCAL), "stop", "--dir", str(kafka_dir)], capture_output=True)


if __name__ == "__main__":
    main()
