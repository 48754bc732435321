"""Replay a recorded log through the Pulse dataflow into Redis, and summarise the run."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import orjson

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main, run_main

from pulse.flows.config import Settings
from pulse.flows.monitor import Monitor
from pulse.flows.pipeline import RunHandles, build_flow, encode_dead_letter, encode_late
from pulse.flows.sources import JsonlSink, RecordedLogSource
from pulse.operators.formats import FORMATS, Format, movielens_genres
from pulse.operators.steps import StepOptions
from pulse.state.distinct import DistinctHashes
from pulse.state.store import RedisLike


class UsageError(ValueError):
    """A problem with what the user asked for, said so they can fix it."""


def make_format(name: str, path: Path) -> Format:
    """The :class:`Format` called ``name``; MovieLens reads genres from the ``u.item``
    beside the ratings file."""
    if name not in FORMATS:
        raise UsageError(f"unknown format {name!r}: use one of {', '.join(FORMATS)}")
    if name == "movielens":
        base = path if path.is_dir() else path.parent
        u_item, u_genre = base / "u.item", base / "u.genre"
        genres = movielens_genres(u_item.read_bytes(), u_genre.read_bytes() if u_genre.exists() else None) if u_item.exists() else {}
        return Format.movielens(genres)
    if name == "taobao":
        return Format.taobao(sort_by_time=True)
    return Format.native()


#: the layout of the dataflow's snapshots (its steps and their state); a recovery store
#: written by another layout cannot be resumed
RECOVERY_LAYOUT = 10
LAYOUT_FILE = "pulse-recovery.json"


class Recovery(NamedTuple):
    """A run's recovery store, and whether an earlier run used it (this one resumes)."""

    config: RecoveryConfig
    resumed: bool


def prepare_recovery(db_dir: Path, partitions: int, create: bool = True) -> Recovery:
    """Bytewax's recovery store in ``db_dir``, created with ``partitions`` partitions
    the first time (that number must be at least the most workers ever run against
    it: stop-and-start rescaling within it works), and stamped with
    :data:`RECOVERY_LAYOUT` and the number of runs that used it. Only one process
    creates and checks it (``create``): in a cluster, process 0; the others use what
    they find (in Kubernetes every other pod's directory is empty: process 0's holds
    every partition), and count as resumed."""
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    if not create:
        return Recovery(RecoveryConfig(db_dir), True)
    existing = sorted(db_dir.glob("part-*.sqlite3"))
    marker = db_dir / LAYOUT_FILE
    if not existing:
        init_db_dir(db_dir, partitions)
        marker.write_bytes(orjson.dumps({"layout": RECOVERY_LAYOUT, "runs": 1}))
        return Recovery(RecoveryConfig(db_dir), False)
    try:
        stamp = orjson.loads(marker.read_bytes())
        layout = stamp.get("layout")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        stamp, layout = {}, None
    if layout != RECOVERY_LAYOUT:
        raise UsageError(
            f"recovery store {db_dir} holds snapshots of another dataflow layout ({layout or 'an older Pulse'}; "
            f"this one is {RECOVERY_LAYOUT}), which cannot be resumed: start a new --recovery directory "
            "(replaying the log rebuilds the same Redis contents)"
        )
    if len(existing) < partitions:
        raise UsageError(
            f"recovery store {db_dir} has {len(existing)} partitions but this run has {partitions} workers; "
            "a store must be initialised for the most workers ever used: start a new --recovery directory"
        )
    runs = stamp.get("runs", 0)
    marker.write_bytes(orjson.dumps({"layout": RECOVERY_LAYOUT, "runs": runs + 1}))
    return Recovery(RecoveryConfig(db_dir), runs > 0)


def run_flow(flow, workers: int, recovery: Optional[RecoveryConfig], snapshot_s: float,
             addresses: Optional[Sequence[str]] = None, process_id: int = 0) -> None:
    """Run ``flow`` in this process: one worker, several worker threads, or this
    process's share of a multi-process cluster (``addresses`` of every process)."""
    epoch = timedelta(seconds=snapshot_s)
    if os.environ.get("BYTEWAX_DATAFLOW_API_ENABLED") is not None:
        # Bytewax serves /metrics and /dataflow (port BYTEWAX_DATAFLOW_API_PORT, 3030)
        # only from the entry point its own `python -m bytewax.run` uses.
        from bytewax.run import cli_main

        cli_main(flow, workers_per_process=workers, process_id=process_id if addresses else None,
                 addresses=list(addresses) if addresses else None, epoch_interval=epoch, recovery_config=recovery)
    elif addresses:
        cluster_main(flow, list(addresses), process_id, epoch_interval=epoch, recovery_config=recovery,
                     worker_count_per_proc=workers)
    elif workers <= 1:
        run_main(flow, epoch_interval=epoch, recovery_config=recovery)
    else:
        cluster_main(flow, [], 0, epoch_interval=epoch, recovery_config=recovery, worker_count_per_proc=workers)


def step_options(settings: Settings, live: bool = False, snapshots: bool = False, ordered_sources=None,
                 across_processes: bool = False) -> StepOptions:
    return StepOptions(
        user=settings.user_config(),
        engine=settings.engine_config(),
        live_idle_s=settings.live_idle_s if live else None,
        snapshots=snapshots,
        ordered_sources=ordered_sources,
        recent_events=settings.recent_events,
        pseudonymize_key=settings.pseudonymize_key.get_secret_value().encode() if settings.pseudonymize_key else None,
        across_processes=across_processes,
    )


def summary(handles: RunHandles, events_in: int, seconds: float) -> dict:
    c = handles.counters
    if handles.live:
        users = c.made["user"]
    else:
        seen = DistinctHashes()
        for store in handles.stores:
            seen = seen.union(store.stats.profile_hashes)
        users = len(seen)
    return {
        "events_in": events_in,
        "events_ok": c.events_ok,
        "events_dlq": c.events_dlq,
        "dlq_by_reason": dict(sorted(c.dlq.items())),
        "events_late": c.late,
        "users": users,
        "users_held": c.held["user"],
        "lists_held": c.held["list"],
        "keys_written": sum(s.stats.keys_written for s in handles.stores),
        "seconds": round(seconds, 3),
        "events_per_s": round(events_in / seconds, 1) if seconds > 0 else None,
    }


def replay(
    path: Path,
    fmt_name: str,
    settings: Settings,
    redis_url: RedisLike,
    dlq_path: Optional[str] = None,
    late_path: Optional[str] = None,
    workers: int = 1,
    batch_size: int = 1000,
    on_progress=None,
    recovery_dir: Optional[Path] = None,
    snapshot_s: float = 10.0,
    addresses: Optional[Sequence[str]] = None,
    process_id: int = 0,
) -> dict:
    """Replay ``path`` into Redis; returns the run summary.

    ``on_progress(bytes_read, total_bytes, records)`` is called about 10 times a second
    from a background thread while the run lasts. With ``recovery_dir`` the run
    snapshots every ``snapshot_s`` seconds and a rerun resumes where it stopped. With
    ``addresses`` this process is member ``process_id`` of a multi-process cluster.
    """
    total_workers = workers * max(1, len(addresses or ()))
    store = prepare_recovery(Path(recovery_dir), total_workers, create=process_id == 0) if recovery_dir else None
    recovery = store.config if store is not None else None
    path = Path(path)
    fmt = make_format(fmt_name, path)
    source = RecordedLogSource(path, fmt, batch_size=batch_size)
    handles = RunHandles(cluster=len(addresses or ()) > 1, workers=workers, updates=settings.keys() if settings.updates else None,
                         updates_maxlen=settings.updates_maxlen, resumed=store is not None and store.resumed)
    counters = handles.counters

    def count_dead(d) -> None:
        counters.dead(d.reason)

    dlq_sink = JsonlSink(dlq_path, encode_dead_letter, count_dead)
    late_sink = JsonlSink(late_path, encode_late, lambda _: _bump(counters)) if late_path else None
    flow = build_flow(
        "pulse_replay",
        source,
        fmt,
        step_options(settings, snapshots=recovery is not None, ordered_sources=source.list_parts(), across_processes=handles.cluster),
        redis_url,
        dlq_sink,
        handles,
        late_sink=late_sink,
        flush_interval_s=settings.flush_interval_s,
    )
    done = threading.Event()
    if on_progress is not None:
        total = source.total_bytes

        def report() -> None:
            while not done.wait(0.1):
                on_progress(source.progress.bytes, total, source.progress.records)

        threading.Thread(target=report, daemon=True).start()
    # Per-user state is millions of small objects: with the default thresholds the
    # collector's passes over them grew with the users (at 100,000 users about a fifth of the
    # run went to them); collect young objects far less often, and leave out of the
    # full passes what is alive now.
    gc.set_threshold(settings.gc_threshold, 50, 1000)
    gc.collect()
    gc.freeze()
    monitor = Monitor.of_run(settings, redis_url, counters, lambda: source.progress.records, "replay", addresses, process_id,
                             write_stats=settings.replay_stats)
    monitor.start()
    started = time.perf_counter()
    try:
        run_flow(flow, workers, recovery, snapshot_s, addresses, process_id)
    finally:
        handles.close()
        monitor.close()
        done.set()
    seconds = time.perf_counter() - started
    if on_progress is not None:
        on_progress(source.progress.bytes, source.total_bytes, source.progress.records)
    return summary(handles, source.progress.records, seconds)


def _bump(counters) -> None:
    counters.late += 1


def cluster_addresses(processes: int, base_port: Optional[int] = None) -> list[str]:
    """Loopback addresses for a local cluster of ``processes`` processes."""
    if base_port is None:
        import socket

        ports = []
        socks = []
        for _ in range(processes):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
            ports.append(sock.getsockname()[1])
        for sock in socks:
            sock.close()
    else:
        ports = [base_port + i for i in range(processes)]
    return [f"127.0.0.1:{p}" for p in ports]


def run_local_cluster(args: Sequence[str], processes: int, env: Optional[dict] = None) -> dict:
    """Run ``pulse <args>`` as ``processes`` processes of one Bytewax cluster on
    loopback and add up their summaries (each process counts what it handled). ``env``
    adds to their environment (where secrets go: a command line is public)."""
    addresses = cluster_addresses(processes)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pulse", *args, "--addresses", ";".join(addresses), "--process-id", str(i)],
            stdout=subprocess.PIPE, env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
        for i in range(processes)
    ]  # fmt: skip
    outputs = [p.communicate()[0] for p in procs]
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"cluster process(es) {failed} failed; see their errors above")
    summaries = [orjson.loads(out.strip().splitlines()[-1]) for out in outputs]
    total: dict = {"processes": processes}
    for key in ("events_in", "events_ok", "events_dlq", "events_late", "users", "users_held", "lists_held", "keys_written"):
        total[key] = sum(s.get(key, 0) for s in summaries)
    reasons: dict = {}
    for s in summaries:
        for r, n in s.get("dlq_by_reason", {}).items():
            reasons[r] = reasons.get(r, 0) + n
    total["dlq_by_reason"] = dict(sorted(reasons.items()))
    total["seconds"] = max(s["seconds"] for s in summaries)
    total["events_per_s"] = round(total["events_in"] / total["seconds"], 1) if total["seconds"] else None
    return total
