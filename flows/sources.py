"""Sources and file sinks: recorded event logs in, dead letters out.

:class:`RecordedLogSource` replays JSONL logs (optionally gzip), one file or a directory
of files, one file per partition, at full speed, in batches. Formats that are not in
time order (MovieLens) are sorted by (event time, line) inside each file first. The
resume state of a partition is the number of records it has emitted, so a replay with
recovery continues where it stopped.

:class:`JsonlSink` appends one JSON line per item (dead letters, late events) to a file.
"""

from __future__ import annotations

import gzip
import io
import threading
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator, List, Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from pulse.operators.events import PartitionEnd, Raw
from pulse.operators.formats import Format

LOG_SUFFIXES = (".jsonl", ".json", ".ndjson", ".log", ".gz", ".data", ".csv", ".txt")


class LogNotFound(FileNotFoundError):
    pass


def log_files(path: Path) -> list[Path]:
    """The files of a recorded log: the file itself, or a directory's log files sorted
    by name. Raises :class:`LogNotFound` with a sentence saying what to fix."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(LOG_SUFFIXES) and not p.name.startswith("."))
        if not files:
            raise LogNotFound(f"{path} is a directory without log files (expected names ending in {', '.join(LOG_SUFFIXES)})")
        return files
    raise LogNotFound(f"{path} does not exist: give a JSONL file, a .gz file, or a directory of them")


def open_log(path: Path) -> io.BufferedReader:
    raw = open(path, "rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return io.BufferedReader(gzip.GzipFile(fileobj=raw))  # type: ignore[arg-type]
    raw.seek(0)
    return raw  # type: ignore[return-value]


class _Progress:
    """Bytes read and records emitted, for the progress bar and the summary."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0
        self.lock = threading.Lock()

    def add(self, records: int, nbytes: int) -> None:
        with self.lock:
            self.records += records
            self.bytes += nbytes


class _LogPartition(StatefulSourcePartition[Raw, int]):
    def __init__(self, path: Path, fmt: Format, batch_size: int, resume: Optional[int], progress: _Progress) -> None:
        self.name = path.name
        self.position = resume or 0  # items emitted so far (records, then the end marker)
        self.batch_size = batch_size
        self.progress = progress
        self.records: Iterator = self._read(path, fmt)
        for _ in range(self.position):  # skip what an earlier run already emitted
            next(self.records, None)

    def _read(self, path: Path, fmt: Format) -> Iterator:
        count = 0
        name = self.name
        with open_log(path) as f:
            if fmt.sort_by_time:
                lines = (Raw(name, n, line.rstrip(b"\r\n")) for n, line in enumerate(f, start=1))
                for raw in sorted((r for r in lines if r.payload.strip()), key=fmt.sort_key):
                    yield raw._replace(seq=count)
                    count += 1
            else:
                for n, line in enumerate(f, start=1):
                    payload = line.rstrip(b"\r\n")
                    if payload.strip():
                        yield Raw(name, n, payload, count)
                        count += 1
        yield PartitionEnd(name, count)

    def next_batch(self) -> List:
        batch = list(islice(self.records, self.batch_size))
        if not batch:
            raise StopIteration
        self.position += len(batch)
        raws = [x.payload for x in batch if type(x) is Raw]
        self.progress.add(len(raws), sum(map(len, raws)) + len(raws))
        return batch

    def snapshot(self) -> int:
        return self.position


class RecordedLogSource(FixedPartitionedSource[Raw, int]):
    """Replays a recorded log (file or directory; one file = one partition)."""

    def __init__(self, path: Path, fmt: Format, batch_size: int = 1000) -> None:
        self.files = {p.name: p for p in log_files(path)}
        self.fmt = fmt
        self.batch_size = batch_size
        self.progress = _Progress()

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())

    def list_parts(self) -> List[str]:
        return list(self.files)

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _LogPartition:
        return _LogPartition(self.files[for_part], self.fmt, self.batch_size, resume_state, self.progress)


_FILES: dict[str, list] = {}  # path -> [file, lock, partitions using it]
_FILES_LOCK = threading.Lock()


class _JsonlPartition(StatelessSinkPartition):
    def __init__(self, path: str, encode: Callable[[object], bytes], count: Optional[Callable[[object], None]]) -> None:
        self.path = path
        self.encode = encode
        self.count = count
        with _FILES_LOCK:
            if path not in _FILES:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                _FILES[path] = [open(path, "ab"), threading.Lock(), 0]
            entry = _FILES[path]
            entry[2] += 1
            self.file, self.lock = entry[0], entry[1]

    def write_batch(self, items: list) -> None:
        data = b"".join(self.encode(x) + b"\n" for x in items)
        if self.count is not None:
            for x in items:
                self.count(x)
        with self.lock:
            self.file.write(data)
            self.file.flush()

    def close(self) -> None:
        with _FILES_LOCK:
            entry = _FILES[self.path]
            entry[2] -= 1
            if entry[2] == 0:
                del _FILES[self.path]
                entry[0].close()


class JsonlSink(DynamicSink):
    """Appends ``encode(item)`` as one line per item to ``path`` (or only counts items
    when ``path`` is None). Workers of one process share the file."""

    def __init__(self, path: Optional[str], encode: Callable[[object], bytes], count: Optional[Callable[[object], None]] = None) -> None:
        self.path = path
        self.encode = encode
        self.count = count

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition:
        if self.path is None:
            return _CountPartition(self.count)
        return _JsonlPartition(self.path, self.encode, self.count)


class _CountPartition(StatelessSinkPartition):
    def __init__(self, count: Optional[Callable[[object], None]]) -> None:
        self.count = count

    def write_batch(self, items: list) -> None:
        if self.count is not None:
            for x in items:
                self.count(x)
