"""Replay a recorded log through the Pulse dataflow into Redis, and summarise the run."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

from bytewax.testing import cluster_main, run_main

from pulse.flows.config import Settings
from pulse.flows.pipeline import RunHandles, build_flow, encode_dead_letter, encode_late
from pulse.flows.sources import JsonlSink, RecordedLogSource
from pulse.operators.formats import FORMATS, Format, movielens_genres
from pulse.operators.steps import StepOptions


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


def step_options(settings: Settings, live: bool = False, snapshots: bool = False) -> StepOptions:
    return StepOptions(
        user=settings.user_config(),
        engine=settings.engine_config(),
        live_idle_s=settings.live_idle_s if live else None,
        snapshots=snapshots,
    )


def summary(handles: RunHandles, events_in: int, seconds: float) -> dict:
    c = handles.counters
    users: set = set()
    for store in handles.stores:
        users |= store.stats.user_ids
    return {
        "events_in": events_in,
        "events_ok": c.events_ok,
        "events_dlq": c.events_dlq,
        "dlq_by_reason": dict(sorted(c.dlq.items())),
        "events_late": c.late,
        "users": len(users),
        "keys_written": sum(s.stats.keys_written for s in handles.stores),
        "seconds": round(seconds, 3),
        "events_per_s": round(events_in / seconds, 1) if seconds > 0 else None,
    }


def replay(
    path: Path,
    fmt_name: str,
    settings: Settings,
    redis_url: str,
    dlq_path: Optional[str] = None,
    late_path: Optional[str] = None,
    workers: int = 1,
    batch_size: int = 1000,
    on_progress=None,
) -> dict:
    """Replay ``path`` into Redis; returns the run summary.

    ``on_progress(bytes_read, total_bytes, records)`` is called about 10 times a second
    from a background thread while the run lasts.
    """
    path = Path(path)
    fmt = make_format(fmt_name, path)
    source = RecordedLogSource(path, fmt, batch_size=batch_size)
    handles = RunHandles()
    counters = handles.counters

    def count_dead(d) -> None:
        counters.dead(d.reason)

    dlq_sink = JsonlSink(dlq_path, encode_dead_letter, count_dead)
    late_sink = JsonlSink(late_path, encode_late, lambda _: _bump(counters)) if late_path else None
    flow = build_flow(
        "pulse_replay",
        source,
        fmt,
        step_options(settings),
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
    started = time.perf_counter()
    try:
        if workers <= 1:
            run_main(flow)
        else:
            cluster_main(flow, [], 0, worker_count_per_proc=workers)
    finally:
        done.set()
    seconds = time.perf_counter() - started
    if on_progress is not None:
        on_progress(source.progress.bytes, source.total_bytes, source.progress.records)
    return summary(handles, source.progress.records, seconds)


def _bump(counters) -> None:
    counters.late += 1
