"""The Redis store: coalesced, pipelined, idempotent writes of whole values.

The dataflow emits :data:`Write` values (whole JSON documents, whole sorted sets, whole
hashes). The store keeps only the newest write per key until the next flush, then sends
them in one pipeline, so a user who clicks 50 times within a flush interval costs one
``SET``. Every write replaces a whole value, so replaying the same output twice (Bytewax
output is at-least-once) leaves the same contents.

Writes wait at most ``flush_interval_s``: :meth:`RedisStore.add` (the dataflow's thread)
sends what is pending itself once the last flush is that old, and a background thread
does when no writes come. (Flushing from the dataflow's thread spares the writes a wait
for the GIL, which a busy dataflow holds for up to 5 ms at a time, after each socket call
of the flusher: that once added tens of milliseconds to a flush.) While Redis is
unreachable the background thread retries with exponential backoff and logs each
failure, and :meth:`RedisStore.add` blocks once ``max_pending`` keys are waiting
(backpressure rather than unbounded memory). Writes that failed are merged back under
any newer ones, so nothing is lost and nothing older overwrites something newer.

Example (needs a running Redis)::

    store = RedisStore("redis://127.0.0.1:6379/0")
    store.add([Put("pulse:user:{1}:recs", b'{"items": []}', ttl_s=3600)])
    store.close()  # final flush
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Optional, Sequence, Union

import redis
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

log = logging.getLogger("pulse.store")


class Put(NamedTuple):
    """SET a whole string value (JSON), with a TTL in seconds (0 = none)."""

    key: str
    value: bytes
    ttl_s: int = 0


class ZReplace(NamedTuple):
    """Replace a whole sorted set with ``members`` (pairs of member, score)."""

    key: str
    members: tuple[tuple[str, float], ...]


class HashSet(NamedTuple):
    """Replace the listed fields of a hash."""

    key: str
    fields: tuple[tuple[str, str], ...]


class StreamAdd(NamedTuple):
    """XADD with an explicit id derived from event time, so a replayed entry is
    refused by Redis instead of duplicated. The stream is capped at ``maxlen``."""

    key: str
    entry_id: str
    fields: tuple[tuple[str, str], ...]
    maxlen: int = 10_000


class Delete(NamedTuple):
    key: str


Write = Union[Put, ZReplace, HashSet, StreamAdd, Delete]

_STALE_STREAM_ID = "equal or smaller than the target stream top item"


@dataclass
class StoreStats:
    keys_written: int = 0
    flushes: int = 0
    failures: int = 0
    user_ids: set = field(default_factory=set)


class RedisStore:
    """Coalescing, pipelined writer of :data:`Write` values to one Redis database.

    :arg url: ``redis://host:port/db``.
    :arg flush_interval_s: how long writes may wait to be coalesced.
    :arg max_pending: keys waiting before :meth:`add` blocks.
    :arg retry_max_s: the longest pause between retries while Redis is down.
    :arg track_users: remember user ids of profile writes (for run summaries).
    :arg flush_on_add: :meth:`add` flushes when the last flush is ``flush_interval_s``
        old (else only the background thread does).
    """

    def __init__(
        self,
        url: str,
        flush_interval_s: float = 0.01,
        max_pending: int = 200_000,
        retry_max_s: float = 5.0,
        track_users: bool = True,
        flush_on_add: bool = True,
    ) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.retry_max_s = retry_max_s
        self.track_users = track_users
        self.flush_on_add = flush_on_add
        self.stats = StoreStats()
        self._pending: dict[str, Write] = {}
        self._streams: list[StreamAdd] = []
        self._lock = threading.Condition()
        self._flush_lock = threading.Lock()
        self._closed = False
        self._flushed_at = time.monotonic()  # when nothing was left waiting, last
        self._failing: Optional[BaseException] = None  # why the last try failed (the thread retries)
        self._thread = threading.Thread(target=self._run, name="pulse-redis-flush", daemon=True)
        self._thread.start()

    # -- public API -------------------------------------------------------------
    def add(self, writes: Iterable[Write]) -> None:
        """Queue writes; the newest write per key wins. Blocks while too many wait."""
        with self._lock:
            while len(self._pending) >= self.max_pending and not self._closed:
                self._lock.wait(0.1)
            for w in writes:
                if type(w) is StreamAdd:
                    self._streams.append(w)
                else:
                    self._pending[w.key] = w
        if (self.flush_on_add and self._failing is None and time.monotonic() - self._flushed_at >= self.flush_interval_s
                and self._flush_lock.acquire(blocking=False)):
            try:
                self._attempt()  # one try: on failure the background thread retries
            except Exception:  # pragma: no cover - as in the background thread: logged
                log.exception("flushing to Redis failed")
            finally:
                self._flush_lock.release()

    def flush(self) -> None:
        """Send everything pending now; retries until Redis takes it."""
        with self._flush_lock:
            delay = 0.1
            while True:
                sent = self._attempt()
                if sent is None:
                    log.warning("Redis at %s unavailable (%s); %d keys waiting, retrying in %.1fs", self.url, self._failing,
                                len(self._pending), delay)
                    time.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                if delay > 0.1:
                    log.warning("Redis at %s is back; flushed %d keys", self.url, sent)
                    delay = 0.1
                if not sent:
                    return

    def _attempt(self) -> Optional[int]:
        """One try at sending what is pending (under the flush lock): the number of
        writes sent, or None when Redis is unreachable (they wait again, under any
        newer writes of their keys)."""
        with self._lock:
            batch, streams = self._pending, self._streams
            self._pending, self._streams = {}, []
        if batch or streams:
            try:
                self._send(batch, streams)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
                self.stats.failures += 1
                with self._lock:
                    # Newer writes queued meanwhile win over the failed older ones.
                    batch.update(self._pending)
                    self._pending = batch
                    self._streams = streams + self._streams
                self._failing = err
                return None
            with self._lock:
                self._lock.notify_all()
        self._failing = None
        self._flushed_at = time.monotonic()
        return len(batch) + len(streams)

    def close(self) -> None:
        """Stop the background flusher and flush what is left."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout=60)
        self.flush()
        self.client.close()

    # -- internals --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                # Writes keep coming: add() flushes them. This thread steps in when they
                # stop (a little later, so as not to race add() for every flush).
                wait = self._flushed_at + (2 * self.flush_interval_s if self.flush_on_add else self.flush_interval_s) - time.monotonic()
                if wait > 0 and self._failing is None:
                    self._lock.wait(wait)
                    continue
            try:
                self.flush()
            except Exception:  # pragma: no cover - logged, the next tick retries
                log.exception("flushing to Redis failed")

    def _send(self, batch: dict[str, Write], streams: Sequence[StreamAdd]) -> None:
        # One pipeline, encoded here rather than by redis-py's Pipeline, which spent
        # 10-20 µs of Python per command (measured: a flush's CPU roughly halves).
        payload, count = encode_commands(batch.values(), streams)
        pool = self.client.connection_pool
        conn = pool.get_connection()
        error: Optional[redis.ResponseError] = None
        try:
            conn.send_packed_command([payload])
            for _ in range(count):
                try:
                    conn.read_response()
                except redis.ResponseError as err:  # the others still answer: read on
                    if error is None and _STALE_STREAM_ID not in str(err):
                        error = err
        except BaseException:
            conn.disconnect()  # replies may still be on their way: never reuse it
            raise
        finally:
            pool.release(conn)
        if error is not None:
            raise error
        self.stats.flushes += 1
        self.stats.keys_written += len(batch) + len(streams)
        if self.track_users:
            for key, w in batch.items():
                if type(w) is Put and key.endswith("}:profile"):
                    self.stats.user_ids.add(key[key.index("{") + 1 : -len("}:profile")])


def _command(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


def encode_commands(writes: Iterable[Write], streams: Sequence[StreamAdd] = ()) -> tuple[bytes, int]:
    r"""The Redis commands of ``writes`` and ``streams`` in the wire protocol (RESP),
    and how many there are (the replies to read).

    >>> encode_commands([Put("k", b"v", 60), ZReplace("z", (("a", 1.5),)), HashSet("h", (("f", "1"),))])
    (b'*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$2\r\n60\r\n*2\r\n$3\r\nDEL\r\n$1\r\nz\r\n*4\r\n$4\r\nZADD\r\n$1\r\nz\r\n$3\r\n1.5\r\n$1\r\na\r\n*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$1\r\nf\r\n$1\r\n1\r\n', 4)
    """
    out: list[bytes] = []
    add = out.append
    for w in writes:
        kind = type(w)
        key = w.key.encode()
        if kind is Put:
            add(_command((b"SET", key, w.value, b"EX", b"%d" % w.ttl_s) if w.ttl_s else (b"SET", key, w.value)))
        elif kind is ZReplace:
            add(_command((b"DEL", key)))
            if w.members:
                args = [b"ZADD", key]
                for member, score in w.members:
                    args.append(repr(float(score)).encode())
                    args.append(member.encode())
                add(_command(args))
        elif kind is HashSet:
            args = [b"HSET", key]
            for name, value in w.fields:
                args.append(name.encode())
                args.append(value.encode())
            add(_command(args))
        elif kind is Delete:
            add(_command((b"DEL", key)))
    for st in streams:
        args = [b"XADD", st.key.encode(), b"MAXLEN", b"~", b"%d" % st.maxlen, st.entry_id.encode()]
        for name, value in st.fields:
            args.append(name.encode())
            args.append(value.encode())
        add(_command(args))
    return b"".join(out), len(out)


class _StorePartition(StatefulSinkPartition[Write, None]):
    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def write_batch(self, values: list[Write]) -> None:
        self.store.add(values)

    def snapshot(self) -> None:
        # Bytewax snapshots at the end of each epoch and, on a resume, replays only what
        # came after: everything of this epoch must be in Redis before the snapshot
        # counts, or a crash would lose the writes still waiting to be coalesced.
        self.store.flush()
        return None

    def close(self) -> None:
        self.store.close()


class RedisSink(FixedPartitionedSink[Write, None]):
    """A Bytewax sink writing :data:`Write` values through one :class:`RedisStore`.

    Its single partition lives on one worker; the store flushes synchronously at each
    epoch's snapshot, so with recovery nothing acknowledged is lost (output is
    at-least-once, and every write is idempotent). ``on_store`` is told of the store
    built (run summaries read its stats)."""

    def __init__(self, url: str, flush_interval_s: float = 0.01, on_store=None) -> None:
        self.url = url
        self.flush_interval_s = flush_interval_s
        self.on_store = on_store

    def list_parts(self) -> list[str]:
        return ["redis"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _StorePartition:
        store = RedisStore(self.url, flush_interval_s=self.flush_interval_s)
        if self.on_store is not None:
            self.on_store(store)
        return _StorePartition(store)


def ping(url: str, timeout_s: float = 3.0) -> Optional[str]:
    """None when Redis at ``url`` answers, else a sentence saying what went wrong."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        client.ping()
        client.close()
        return None
    except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError) as err:
        return f"cannot reach Redis at {url}: {err}"
