"""The Redis store: coalesced, pipelined, idempotent writes of whole values.

The dataflow emits :data:`Write` values (whole JSON documents, whole sorted sets, whole
hashes). The store keeps only the newest write per key until the next flush, then sends
them in one pipeline, so a user who clicks 50 times within a flush interval costs one
``SET``. Every write replaces a whole value, so replaying the same output twice (Bytewax
output is at-least-once) leaves the same contents.

Readers never see a value missing or half-written: a ``SET`` and an ``HSET`` are atomic
on their own, and a sorted set is replaced by ``MULTI DEL ZADD EXEC`` (one key, so one
slot: a transaction that a Redis Cluster accepts too).

``url`` may name a plain Redis or any node of a Redis Cluster: the store asks the server
(``INFO cluster``) and, for a cluster, sends each node the writes of the slots it serves
(one pipeline per node, all sent before any reply is read). While slots move or a node
fails over, the flush re-reads the slot map and retries. Messages and logs name the
server as ``host:port/db``, never with the URL's credentials (:func:`address`).

Where a URL alone does not say how to connect, a :class:`RedisTarget` does: an ACL user
and password kept out of the URL, and TLS (``rediss://``) with a private CA and a client
certificate. Every function here that takes a URL takes a target as well.

Writes wait at most ``flush_interval_s``, sent by a background thread. Live runs
(``flush_on_add``) have :meth:`RedisStore.add` (the dataflow's thread) send what is
pending itself once the last flush is that old, the background thread only when no
writes come: that spares the writes a wait for the GIL, which a busy dataflow holds for
up to 5 ms at a time, after each socket call of the flusher (it once added tens of
milliseconds to a flush). Replays leave every flush to the background thread, so the
dataflow's thread computes while the flusher waits on Redis (7,280-7,450 against
6,820-6,960 events/s on a 300,000-event replay, two runs each). While Redis is
unreachable the background thread retries with exponential backoff and logs each
failure, and :meth:`RedisStore.add` blocks once ``max_pending`` keys are waiting
(backpressure rather than unbounded memory). Writes that failed are merged back under
any newer ones, so nothing is lost and nothing older overwrites something newer.

Commands are encoded to the wire protocol here (:func:`encode_commands`) rather than by
redis-py's pipeline, because that is clearly cheaper for the dataflow's thread, which
pays for it: for a flush of 1,000 ``SET ... EX`` of 600-byte JSON, 50 sorted sets of 100
members replaced in transactions and 10 ``HSET`` of 10 fields (1,210 commands), the
client spent 3.6-4.1 µs of CPU per command here against 8.9-10.8 µs through redis-py
8.1's pipeline with hiredis: 2.5-2.6x in six runs on a 2-core machine, 1.2-2.1x in wall
time, which adds the server's work (``benchmarks/redis_encoding.py``).

:class:`WorkerStores` gives each worker thread a store of its own: the steps that run
on a worker write the keys they own over its connections.

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
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Optional, Sequence, Union
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import RedisCluster
from redis.exceptions import AskError, ClusterDownError, NoPermissionError, RedisClusterException, TryAgainError

from pulse.state.distinct import DistinctHashes
from pulse.state.keys import SCHEMA_VERSION, KeySchema

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


class Publish(NamedTuple):
    """Announce a change: XADD to the capped stream ``key`` (``entry_id`` as for
    :class:`StreamAdd`: explicit and growing for a deterministic replay, or ``*`` for
    the server's own) and PUBLISH ``message`` on ``channel``."""

    key: str
    entry_id: str
    fields: tuple[tuple[str, str], ...]
    channel: str
    message: bytes
    maxlen: int = 10_000


class ZAddCapped(NamedTuple):
    """Add ``members`` (pairs of member, score) to a sorted set kept to its ``cap``
    highest-scored members, with a TTL in seconds. Adding a member again changes
    nothing, so replaying the same writes leaves the same set; pending adds to one key
    merge instead of replacing each other. ``fresh``: the set is deleted first (the adds
    came after a :class:`Delete` of the key that they replaced while pending)."""

    key: str
    members: tuple[tuple[str, float], ...]
    cap: int
    ttl_s: int = 0
    fresh: bool = False


class Delete(NamedTuple):
    """DEL ``key`` (a forgotten user's key); deleting again changes nothing."""

    key: str


class StreamPurge(NamedTuple):
    """Delete every entry of the stream ``key`` whose field ``name`` is ``value`` (a
    forgotten user's entries), in one server-side script. It keeps its place among the
    stream's appends (:class:`StreamAdd`, :class:`Publish`) of the same store, so an
    entry appended before it is deleted too; purging again changes nothing."""

    key: str
    name: str
    value: str


# XRANGE in pages (exclusive starts: Redis >= 6.2), XDEL of the entries whose field matches.
_PURGE_SCRIPT = b"""local n, start = 0, '-'
while true do
  local page = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 500)
  if #page == 0 then return n end
  for _, entry in ipairs(page) do
    local f = entry[2]
    for i = 1, #f, 2 do
      if f[i] == ARGV[1] and f[i + 1] == ARGV[2] then
        redis.call('XDEL', KEYS[1], entry[1]); n = n + 1; break
      end
    end
  end
  start = '(' .. page[#page][1]
end"""


Write = Union[Put, ZReplace, HashSet, StreamAdd, Publish, ZAddCapped, Delete, StreamPurge]


def _merged(older: Optional[Write], newer: Write) -> Write:
    """What stays pending when ``newer`` comes for a key ``older`` waits on: the newer
    write, or both sets' members for :class:`ZAddCapped` (which deletes the set first
    when it replaces a :class:`Delete`)."""
    if type(newer) is ZAddCapped:
        if type(older) is ZAddCapped:
            return newer._replace(members=older.members + newer.members, fresh=older.fresh)
        if type(older) is Delete:
            return newer._replace(fresh=True)
    return newer
Client = Union[redis.Redis, RedisCluster]

_STALE_STREAM_ID = "equal or smaller than the target stream top item"
_CLIENT_OPTIONS = {"socket_timeout": 10, "socket_connect_timeout": 5, "health_check_interval": 30}
# Redis is down or unreachable (for a cluster: no node answers, or a slot has no node
# yet): the writes wait and the flush retries.
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError, RedisClusterException)
# A cluster is moving slots (MOVED is an AskError) or failing over: retry with a fresh slot map.
_RESHARDING = (AskError, TryAgainError, ClusterDownError)


@dataclass
class StoreStats:
    keys_written: int = 0
    flushes: int = 0
    failures: int = 0
    #: hashes of the profile keys written (one per user: what the run summary counts)
    profile_hashes: DistinctHashes = field(default_factory=DistinctHashes)


@dataclass(frozen=True)
class RedisTarget:
    """How to reach a Redis (or a node of a Redis Cluster): its URL and what the URL
    leaves out. ``username``/``password`` (an ACL user) win over the URL's; the TLS
    files apply to ``rediss://`` URLs: ``ca_file`` the private CA that signed the
    server's certificate, ``cert_file``/``key_file`` a client certificate for servers
    that ask for one (``tls-auth-clients yes``). Its repr names the server, never the
    password.

    >>> t = RedisTarget("rediss://cache:6380/0", username="pulse", password="s3cret")
    >>> t
    RedisTarget(cache:6380/0, user pulse, tls)
    >>> sorted(t.client_options())
    ['password', 'username']
    """

    url: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None

    def __post_init__(self) -> None:
        tls_files = {"PULSE_REDIS_TLS_CA_FILE": self.ca_file, "PULSE_REDIS_TLS_CERT_FILE": self.cert_file,
                     "PULSE_REDIS_TLS_KEY_FILE": self.key_file}
        given = [name for name, path in tls_files.items() if path]
        scheme = urlsplit(self.url).scheme
        if given and scheme != "rediss":
            raise ValueError(f"{', '.join(given)} set, but the Redis URL ({address(self.url)}) is {scheme}://, "
                             "which does not use TLS: write it as rediss://HOST:PORT/DB")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate needs both PULSE_REDIS_TLS_CERT_FILE and PULSE_REDIS_TLS_KEY_FILE")
        for name, path in tls_files.items():
            if path and not Path(path).is_file():
                raise ValueError(f"{name} names {path}, which is not a readable file")

    def client_options(self) -> dict:
        """What redis-py's ``from_url`` takes beside the URL."""
        options: dict = {}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if self.ca_file:
            options["ssl_ca_certs"] = self.ca_file
        if self.cert_file:
            options["ssl_certfile"] = self.cert_file
            options["ssl_keyfile"] = self.key_file
        return options

    def secrets(self) -> list[str]:
        """The passwords this target holds (the URL's and its own), for masking."""
        return [p for p in (urlsplit(self.url).password, self.password) if p]

    def __repr__(self) -> str:
        user = self.username or urlsplit(self.url).username
        tls = urlsplit(self.url).scheme == "rediss"
        return f"RedisTarget({address(self.url)}{f', user {user}' if user else ''}{', tls' if tls else ''})"


#: A Redis to write to: a URL, or a URL with what it leaves out.
RedisLike = Union[str, RedisTarget]


def target(redis_at: RedisLike) -> RedisTarget:
    """``redis_at`` as a :class:`RedisTarget` (a URL is one with nothing added)."""
    return redis_at if isinstance(redis_at, RedisTarget) else RedisTarget(redis_at)


def address(url: RedisLike) -> str:
    """Where ``url`` points, as ``host:port/db``, without its credentials: what every
    message shows.

    >>> address("redis://pulse:s3cret@cache.internal:6380/2")
    'cache.internal:6380/2'
    >>> address("rediss://:pw@[::1]")
    '[::1]:6379/0'
    """
    if isinstance(url, RedisTarget):
        url = url.url
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    db = parts.path.strip("/") or "0"
    return f"{host}:{parts.port or 6379}/{db}"


def masked(text: str, url: RedisLike) -> str:
    """``text`` with the passwords of ``url`` blotted out, for error texts that quote
    them (a one-letter password blots out more than it needs: better than a leak).

    >>> masked("AUTH s3cret failed", "redis://pulse:s3cret@h:6379/0")
    'AUTH *** failed'
    """
    for password in target(url).secrets():
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text


def connect(url: RedisLike, **options: float) -> Client:
    """A client of ``url`` (a URL or a :class:`RedisTarget`): a
    :class:`~redis.cluster.RedisCluster` when the server is a node of a Redis Cluster,
    else a plain :class:`redis.Redis`. Connects to find out; ``options`` (socket
    timeouts) go to every connection, the target's credentials and TLS files too."""
    redis_at = target(url)
    options = {**_CLIENT_OPTIONS, **redis_at.client_options(), **options}
    client = redis.Redis.from_url(redis_at.url, **options)
    try:
        clustered = client.info("cluster").get("cluster_enabled") == 1
    except NoPermissionError:  # INFO refused by an ACL: take it for a plain server
        clustered = False
    if not clustered:
        return client
    client.close()
    return RedisCluster.from_url(redis_at.url, **options)


class RedisStore:
    """Coalescing, pipelined writer of :data:`Write` values to one Redis database or
    Redis Cluster.

    :arg url: ``redis[s]://[user:password@]host:port/db`` or a :class:`RedisTarget`;
        any node of a cluster.
    :arg flush_interval_s: how long writes may wait to be coalesced.
    :arg max_pending: keys waiting before :meth:`add` blocks.
    :arg retry_max_s: the longest pause between retries while Redis is down.
    :arg track_users: remember user ids of profile writes (for run summaries).
    :arg flush_on_add: :meth:`add` flushes when the last flush is ``flush_interval_s``
        old (else only the background thread does).
    :arg on_add: given each batch of writes as it is queued; returns writes to queue
        after them (change notifications: :class:`Publish`), in the caller's thread.
    :arg on_flush: told of every flush that Redis took: the writes and its seconds.
    """

    def __init__(
        self,
        url: RedisLike,
        flush_interval_s: float = 0.01,
        max_pending: int = 200_000,
        retry_max_s: float = 5.0,
        track_users: bool = True,
        flush_on_add: bool = True,
        on_add: Optional[Callable[[list[Write]], list[Write]]] = None,
        on_flush: Optional[Callable[[Sequence[Write], float], None]] = None,
    ) -> None:
        self.url = url
        self.on_add = on_add
        self.on_flush = on_flush
        self.address = address(url)
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.retry_max_s = retry_max_s
        self.track_users = track_users
        self.flush_on_add = flush_on_add
        self.stats = StoreStats()
        self._client: Optional[Client] = None  # connected by the first flush (Redis may be down now)
        self._stale_slots = False  # the cluster answered MOVED/ASK/TRYAGAIN/CLUSTERDOWN
        self._pending: dict[str, Write] = {}
        self._streams: list[Union[StreamAdd, Publish, StreamPurge]] = []  # appended, never coalesced
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
        if self.on_add is not None:
            writes = self._with_hook(writes)
        with self._lock:
            while len(self._pending) >= self.max_pending and not self._closed:
                self._lock.wait(0.1)
            for w in writes:
                kind = type(w)
                if kind is StreamAdd or kind is Publish or kind is StreamPurge:
                    self._streams.append(w)
                elif kind is ZAddCapped:
                    self._pending[w.key] = _merged(self._pending.get(w.key), w)
                else:
                    self._pending[w.key] = w
        if (self.flush_on_add and self._failing is None and time.monotonic() - self._flushed_at >= self.flush_interval_s
                and self._flush_lock.acquire(blocking=False)):
            try:
                self._attempt()  # one try: on failure the background thread retries
            except Exception:  # pragma: no cover - as in the background thread: logged
                log.exception("flushing to Redis at %s failed", self.address)
            finally:
                self._flush_lock.release()

    def _with_hook(self, writes: Iterable[Write]) -> list[Write]:
        # What on_add adds for some writes follows them, before any StreamPurge that
        # comes after them (a forgotten user's notifications must not outlive the purge).
        out: list[Write] = []
        run: list[Write] = []
        for w in writes:
            if type(w) is StreamPurge:
                out.extend(run)
                out.extend(self.on_add(run))
                out.append(w)
                run = []
            else:
                run.append(w)
        out.extend(run)
        out.extend(self.on_add(run))
        return out

    def flush(self) -> None:
        """Send everything pending now; retries until Redis takes it."""
        with self._flush_lock:
            delay = 0.1
            while True:
                sent = self._attempt()
                if sent is None:
                    log.warning("Redis at %s unavailable (%s); %d keys waiting, retrying in %.1fs", self.address,
                                masked(str(self._failing), self.url), len(self._pending), delay)
                    time.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                if delay > 0.1:
                    log.warning("Redis at %s is back; flushed %d keys", self.address, sent)
                    delay = 0.1
                if not sent:
                    return

    def close(self) -> None:
        """Stop the background flusher and flush what is left."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout=60)
        self.flush()
        if self._client is not None:
            self._client.close()

    # -- internals --------------------------------------------------------------
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
            except (_UNREACHABLE + _RESHARDING) as err:
                self.stats.failures += 1
                self._stale_slots = self._stale_slots or isinstance(err, _RESHARDING)
                with self._lock:
                    # Newer writes queued meanwhile win over the failed older ones.
                    for key, w in self._pending.items():
                        batch[key] = _merged(batch.get(key), w)
                    self._pending = batch
                    self._streams = streams + self._streams
                self._failing = err
                return None
            with self._lock:
                self._lock.notify_all()
        self._failing = None
        self._flushed_at = time.monotonic()
        return len(batch) + len(streams)

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
                log.exception("flushing to Redis at %s failed", self.address)

    def _send(self, batch: dict[str, Write], streams: Sequence[Union[StreamAdd, Publish, StreamPurge]]) -> None:
        if self._client is None:
            self._client = connect(self.url)
        elif self._stale_slots and isinstance(self._client, RedisCluster):
            self._client.nodes_manager.initialize()
        self._stale_slots = False
        writes: list[Write] = [*batch.values(), *streams]
        started = time.perf_counter()
        send_pipelines(route(self._client, writes))
        if self.on_flush is not None:
            self.on_flush(writes, time.perf_counter() - started)
        self.stats.flushes += 1
        self.stats.keys_written += len(writes) - sum(1 for w in streams if type(w) is Publish)  # notifications are no keys
        if self.track_users:
            self.stats.profile_hashes.add_all(hash(key) for key, w in batch.items()
                                              if type(w) is Put and key.endswith("}:profile"))


def route(client: Client, writes: Sequence[Write]) -> list[tuple[redis.ConnectionPool, list[Write]]]:
    """The writes each server takes, with its connection pool: all of them for a plain
    Redis; for a cluster, each primary's share (by the slot of each key)."""
    if not isinstance(client, RedisCluster):
        return [(client.connection_pool, list(writes))]
    by_node: dict[str, tuple[redis.ConnectionPool, list[Write]]] = {}
    for w in writes:
        node = client.get_node_from_key(w.key)
        if node.name not in by_node:
            by_node[node.name] = (node.redis_connection.connection_pool, [])
        by_node[node.name][1].append(w)
    return list(by_node.values())


def send_pipelines(pipelines: Sequence[tuple[redis.ConnectionPool, Sequence[Write]]]) -> None:
    """Send each pipeline on a connection of its pool, all of them before reading any
    reply (cluster nodes work at the same time), then read every reply.

    Raises the first error Redis answered, preferring one that says the cluster is
    resharding (the caller retries those); a stream entry that is already there (a
    replay) is no error."""
    in_flight: list[tuple[redis.ConnectionPool, redis.Connection, int]] = []
    errors: list[redis.ResponseError] = []
    try:
        for pool, writes in pipelines:
            payload, count = encode_commands(writes)
            conn = pool.get_connection()
            in_flight.append((pool, conn, count))
            conn.send_packed_command([payload])
        for _, conn, count in in_flight:
            for _ in range(count):
                try:
                    reply = conn.read_response()
                except redis.ResponseError as err:  # the others still answer: read on
                    errors.append(err)
                    continue
                if type(reply) is list:  # an EXEC: the replies of the transaction's commands
                    errors.extend(r for r in reply if isinstance(r, redis.ResponseError))
    except BaseException:
        for _, conn, _ in in_flight:
            conn.disconnect()  # replies may still be on their way: never reuse it
        raise
    finally:
        for pool, conn, _ in in_flight:
            pool.release(conn)
    errors = [err for err in errors if _STALE_STREAM_ID not in str(err)]
    if errors:
        raise next((err for err in errors if isinstance(err, _RESHARDING)), errors[0])


def _command(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


_MULTI = _command((b"MULTI",))
_EXEC = _command((b"EXEC",))


def encode_commands(writes: Iterable[Write]) -> tuple[bytes, int]:
    r"""The Redis commands of ``writes`` in the wire protocol (RESP), and how many
    there are (the replies to read). A sorted set is replaced in a transaction.

    >>> encode_commands([Put("k", b"v", 60), ZReplace("z", (("a", 1.5),)), HashSet("h", (("f", "1"),))])
    (b'*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$2\r\n60\r\n*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nDEL\r\n$1\r\nz\r\n*4\r\n$4\r\nZADD\r\n$1\r\nz\r\n$3\r\n1.5\r\n$1\r\na\r\n*1\r\n$4\r\nEXEC\r\n*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$1\r\nf\r\n$1\r\n1\r\n', 6)
    """
    out: list[bytes] = []
    add = out.append
    extra = 0
    for w in writes:
        kind = type(w)
        key = w.key.encode()
        if kind is Put:
            add(_command((b"SET", key, w.value, b"EX", b"%d" % w.ttl_s) if w.ttl_s else (b"SET", key, w.value)))
        elif kind is ZReplace:
            if w.members:
                args = [b"ZADD", key]
                for member, score in w.members:
                    args.append(repr(float(score)).encode())
                    args.append(member.encode())
                add(_MULTI)
                add(_command((b"DEL", key)))
                add(_command(args))
                add(_EXEC)
            else:
                add(_command((b"DEL", key)))
        elif kind is ZAddCapped:
            if w.fresh:
                add(_command((b"DEL", key)))
            args = [b"ZADD", key]
            for member, score in w.members:
                args.append(repr(float(score)).encode())
                args.append(member.encode())
            add(_command(args))
            add(_command((b"ZREMRANGEBYRANK", key, b"0", b"%d" % -(w.cap + 1))))
            if w.ttl_s:
                add(_command((b"EXPIRE", key, b"%d" % w.ttl_s)))
        elif kind is Delete:
            add(_command((b"DEL", key)))
        elif kind is StreamPurge:
            add(_command((b"EVAL", _PURGE_SCRIPT, b"1", key, w.name.encode(), w.value.encode())))
        elif kind is HashSet:
            args = [b"HSET", key]
            for name, value in w.fields:
                args.append(name.encode())
                args.append(value.encode())
            add(_command(args))
        elif kind is Publish and len(w.fields) == 3:  # one per list written: spelled out, which is cheaper
            (n1, v1), (n2, v2), (n3, v3) = w.fields
            v1, v2, v3, n1, n2, n3 = v1.encode(), v2.encode(), v3.encode(), n1.encode(), n2.encode(), n3.encode()
            maxlen, entry_id, channel, message = b"%d" % w.maxlen, w.entry_id.encode(), w.channel.encode(), w.message
            add(b"*12\r\n$4\r\nXADD\r\n$%d\r\n%b\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
                    len(key), key, len(maxlen), maxlen, len(entry_id), entry_id, len(n1), n1, len(v1), v1, len(n2), n2,
                    len(v2), v2, len(n3), n3, len(v3), v3, len(channel), channel, len(message), message))
            extra += 1  # two commands in one piece: two replies
        else:
            args = [b"XADD", key, b"MAXLEN", b"~", b"%d" % w.maxlen, w.entry_id.encode()]
            for name, value in w.fields:
                args.append(name.encode())
                args.append(value.encode())
            add(_command(args))
            if kind is Publish:
                add(_command((b"PUBLISH", w.channel.encode(), w.message)))
    return b"".join(out), len(out) + extra


class WorkerStores:
    """One :class:`RedisStore` per worker thread, for the steps that run on it: each
    writes the keys it owns over its worker's connections (:meth:`current`, held until
    :meth:`close`).

    :arg url: the Redis (or Redis Cluster) to write to.
    :arg flush_interval_s: how long writes are coalesced.
    :arg on_store: told of each store built (run summaries read their stats).
    :arg hooks: called for each store built; returns its ``on_add`` and ``on_flush``
        (see :class:`RedisStore`): each worker's store gets hooks of its own.
    :arg track_users: the stores remember the users whose profiles they wrote
        (:class:`RedisStore`); off for live runs, where that set would only grow.
    :arg flush_on_add: the worker threads flush their stores themselves (live runs:
        see the module docstring).
    """

    def __init__(self, url: RedisLike, flush_interval_s: float = 0.01, on_store: Optional[Callable[[RedisStore], None]] = None,
                 hooks: Optional[Callable[[], tuple[Optional[Callable], Optional[Callable]]]] = None,
                 track_users: bool = True, flush_on_add: bool = True) -> None:
        self.url = url
        self.flush_interval_s = flush_interval_s
        self.on_store = on_store
        self.hooks = hooks
        self.track_users = track_users
        self.flush_on_add = flush_on_add
        self._lock = threading.Lock()
        self._stores: dict[int, RedisStore] = {}  # worker thread id -> its store

    def current(self) -> RedisStore:
        """This worker thread's store (made at its first use)."""
        store = self._stores.get(threading.get_ident())
        if store is not None:
            return store
        on_add, on_flush = self.hooks() if self.hooks is not None else (None, None)
        store = RedisStore(self.url, flush_interval_s=self.flush_interval_s, on_add=on_add, on_flush=on_flush,
                           track_users=self.track_users, flush_on_add=self.flush_on_add)
        if self.on_store is not None:
            self.on_store(store)
        with self._lock:
            self._stores[threading.get_ident()] = store
        return store

    def close(self) -> None:
        """Close every worker's store (the end of a run): the last writes are flushed."""
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()


def ping(url: RedisLike, timeout_s: float = 3.0) -> Optional[str]:
    """None when Redis (or the Redis Cluster) at ``url`` answers, else a sentence saying
    what went wrong and what to do; it names the server without the URL's credentials.

    >>> ping("redis://pulse:s3cret@127.0.0.1:1/0")  # doctest: +ELLIPSIS
    'cannot reach Redis at 127.0.0.1:1/0: Error ... connecting to 127.0.0.1:1. Connection refused.'
    """
    try:
        client = connect(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        client.ping()
        client.close()
    except (redis.RedisError, RedisClusterException, OSError, ValueError) as err:
        problem = masked(str(err), url)
        return f"cannot reach Redis at {address(url)}: {problem}{_hint(problem)}"
    return None


def stored_schema_problem(url: RedisLike, keys: KeySchema) -> Optional[str]:
    """:func:`schema_problem` of the Redis at ``url`` (which answers: see :func:`ping`)."""
    client = connect(url)
    try:
        return schema_problem(client, keys)
    finally:
        client.close()


def schema_problem(client: Client, keys: KeySchema) -> Optional[str]:
    """None when the keys under ``keys.prefix`` are of this :data:`SCHEMA_VERSION` (or no
    run has written ``pulse:meta`` yet), else a sentence saying which version they are and
    what to do. Values of another version are laid out differently, so neither a run (which
    would mix two layouts under one prefix) nor a reader may take them for this one's.
    """
    found = client.hget(keys.meta, "schema_version")
    if found is None or found.decode() == str(SCHEMA_VERSION):
        return None
    return (f"the keys under the prefix {keys.prefix!r} were written with key schema version {found.decode()}, "
            f"and this Pulse reads and writes version {SCHEMA_VERSION} (see `pulse schema`): their layout differs, "
            f"so they are not used. Delete them (e.g. `redis-cli --scan --pattern '{keys.pattern()}' | xargs redis-cli del`) "
            "and replay the log, or use another --prefix or database")


def _hint(problem: str) -> str:
    if "CERTIFICATE_VERIFY_FAILED" in problem:
        return (" (the server's certificate is not signed by a CA this machine trusts: "
                "set PULSE_REDIS_TLS_CA_FILE to the CA's certificate)")
    if "WRONGPASS" in problem or "invalid username-password" in problem or "NOAUTH" in problem:
        return " (check the user and password: in the URL, or PULSE_REDIS_USERNAME and PULSE_REDIS_PASSWORD[_FILE])"
    if "Connection reset" in problem or "Connection closed by server" in problem:
        return " (a TLS port answered a plain connection, or the reverse? use rediss:// for TLS)"
    return ""
