#!/usr/bin/env python3
"""Idle eviction on the live path: does a live run's memory stay bounded over many
distinct users?

Starts its own Kafka broker (scripts/kafka_local.py) and redis-server, then runs
``pulse run`` twice on topics of its own while this script produces ``--users`` one-event
users at ``--rate`` events/s (event time = now): once with ``PULSE_LIVE_IDLE_S`` =
``--idle-s``, once with the default (30 minutes: nobody is evicted within the run).
Every second it samples ``pulse run``'s RSS (``/proc/<pid>/status``) and its
``pulse_users_held{step="user"}`` gauge (``--metrics-port``). Prints one JSON line: per
run the users produced, the peak users held and those held at exit, the RSS half-way
through producing, at its end and at its peak: with eviction the users held level off
near ``rate × idle_s`` (plus the lag) and the RSS with them; without, both grow with the
users produced.

    .venv/bin/python benchmarks/live_idle.py --users 200000 --rate 4000 --idle-s 5
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
import urllib.request
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from services import free_port, kafka_local

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def users_held(port: int) -> int:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return -1
    for line in text.splitlines():
        if line.startswith('pulse_users_held{step="user"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return -1


def produce(bootstrap: str, topic: str, users: int, rate: float, tag: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    start = time.monotonic()
    for n in range(users):
        due = start + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        user = f"{tag}-{n:07d}"
        doc = {"user_id": user, "type": "view", "item_id": f"i{n % 1000}", "ts": int(time.time() * 1000)}
        while True:
            try:
                producer.produce(topic, key=user.encode(), value=orjson.dumps(doc))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)


def one_run(bootstrap: str, redis_url: str, users: int, rate: float, idle_s: float | None, partitions: int) -> dict:
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # (held: a client collected mid-call fails it)
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    port = free_port()
    env = {**os.environ, **({"PULSE_LIVE_IDLE_S": str(idle_s)} if idle_s is not None else {})}
    cmd = [sys.executable, "-m", "pulse", "run", "--brokers", bootstrap, "--topic", topic, "--redis", redis_url,
           "--metrics-port", str(port), "--idle-exit", "15"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env, start_new_session=True)
    samples: list[tuple[float, int, float]] = []
    halt = threading.Event()

    def sample() -> None:
        while not halt.wait(1.0) and proc.poll() is None:
            try:
                samples.append((time.monotonic(), users_held(port), rss_mb(proc.pid)))
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    time.sleep(3)  # pulse run's start-up
    sampler.start()
    started = time.monotonic()
    produce(bootstrap, topic, users, rate, topic)
    produced = time.monotonic()
    out, _ = proc.communicate(timeout=600)
    halt.set()
    summary = json.loads(out.strip().splitlines()[-1])
    held = [h for _, h, _ in samples if h >= 0]
    rss = [r for _, _, r in samples]
    # the RSS half-way through producing and at its end: level with eviction (a plateau)
    mid = [r for t, _, r in samples if t <= started + (produced - started) / 2]
    end = [r for t, _, r in samples if t <= produced]
    return {"idle_s": idle_s if idle_s is not None else 1800.0, "users": summary["users"], "events_ok": summary["events_ok"],
            "users_held_peak": max(held, default=None), "users_held_at_exit": summary["users_held"],
            "rss_mid_mb": round(mid[-1], 1) if mid else None, "rss_end_mb": round(end[-1], 1) if end else None,
            "rss_peak_mb": round(max(rss, default=0), 1),
            "rate": rate, "lag_at_exit": summary["lag_at_exit"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=4000)
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--partitions", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pulse-idle-"))
    rport = free_port()
    rds = subprocess.Popen([shutil.which("redis-server"), "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    kafka_dir = tmp / "kafka"
    kafka_local("fetch", "--quiet")
    bootstrap = kafka_local("start", "--dir", str(kafka_dir), "--owner-pid", str(os.getpid()), "--fast-startup")["bootstrap"]
    result = {}
    try:
        for name, idle in (("evicting", args.idle_s), ("default", None)):
            result[name] = one_run(bootstrap, f"redis://127.0.0.1:{rport}/{0 if idle else 1}", args.users, args.rate, idle,
                                   args.partitions)
    finally:
        kafka_local("stop", "--dir", str(kafka_dir))
        rds.send_signal(signal.SIGTERM)
        rds.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
