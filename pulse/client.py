"""A small read-only client of what Pulse keeps in Redis, for a site's backend.

It hides the key schema (prefix, hash tags) and decodes the values; every method reads,
none writes. Values follow the contract of :mod:`pulse.state.schema` (``pulse schema``).

Example (needs a Redis that a replay wrote to)::

    from pulse.client import PulseClient

    pulse = PulseClient("redis://127.0.0.1:6379/0")
    recs = pulse.recs("u42")                  # None for a user Pulse has not seen
    top = [item["item_id"] for item in recs["items"]] if recs else []
    pulse.similar("sku-1")                    # [{"item_id", "score"}, ...] or None
    pulse.trending(category="shoes", k=10)    # [("sku-9", 12.5), ...]
    for update in pulse.updates(block_ms=5000):   # users whose list changed, as they change
        print(update["user_id"], update["recomm_id"])

Where the flow pseudonymizes user ids (``PULSE_PSEUDONYMIZE_KEY``), give the client the
same key and ask with the site's own ids: it derives each user's pseudonym
(:func:`pulse.state.privacy.pseudonym`, HMAC-SHA256) to find the keys::

    pulse = PulseClient(url, pseudonymize_key=os.environ["PULSE_PSEUDONYMIZE_KEY"])
    pulse.recs("u42")                         # reads pulse:user:{<pseudonym of u42>}:recs
"""

from __future__ import annotations

from typing import Iterator, Optional

import orjson

from pulse.state.keys import KeySchema
from pulse.state.privacy import pseudonym
from pulse.state.store import RedisLike, connect, schema_problem


class PulseClient:
    """Reads Pulse's keys in one Redis database or Redis Cluster.

    :arg url: ``redis://[user:password@]host:port/db`` (any node of a cluster; ``rediss://``
        for TLS), or a :class:`~pulse.state.store.RedisTarget` with an ACL user and TLS files.
    :arg prefix: the deployment's key prefix (``--prefix``; default ``pulse``).
    :arg pseudonymize_key: the flow's ``PULSE_PSEUDONYMIZE_KEY``, where it pseudonymizes
        user ids: the user ids given to the methods are then the site's own.
    :raises ValueError: when ``pulse:meta`` says the keys are of another key schema
        version than this client's (:func:`~pulse.state.store.schema_problem`).
    """

    def __init__(self, url: RedisLike, prefix: str = "pulse", pseudonymize_key: Optional[str] = None) -> None:
        self.keys = KeySchema(prefix)
        self.redis = connect(url)
        self.pseudonymize_key = pseudonymize_key
        problem = schema_problem(self.redis, self.keys)
        if problem:
            self.redis.close()
            raise ValueError(problem)

    def user_key_id(self, user_id: str) -> str:
        """The id Pulse stores ``user_id`` under: its pseudonym, or itself."""
        return pseudonym(user_id, self.pseudonymize_key) if self.pseudonymize_key else user_id

    def close(self) -> None:
        self.redis.close()

    def _json(self, key: str):
        raw = self.redis.get(key)
        return None if raw is None else orjson.loads(raw)

    def recs(self, user_id: str) -> Optional[dict]:
        """The user's list ``{"recomm_id", "generated_at", "segment", "items"}``."""
        return self._json(self.keys.recs(self.user_key_id(user_id)))

    def profile(self, user_id: str) -> Optional[dict]:
        """The user's profile (counts, first and last seen, engagement, affinities,
        rule segments)."""
        return self._json(self.keys.profile(self.user_key_id(user_id)))

    def verdict(self, user_id: str) -> Optional[dict]:
        """The models' verdicts: ``{"segment", "anomaly"}`` (the segment's traits are
        in :meth:`segments`)."""
        return self._json(self.keys.verdict(self.user_key_id(user_id)))

    def recent_events(self, user_id: str, count: int = 20) -> list[dict]:
        """The user's latest events, newest first (kept when the run's
        ``recent_events`` setting is on; else none)."""
        return [orjson.loads(m) for m in self.redis.zrevrange(self.keys.recent_events(self.user_key_id(user_id)), 0, count - 1)]

    def similar(self, item_id: str) -> Optional[list]:
        """The item's co-visitation neighbours ``[{"item_id", "score"}]``, best first."""
        return self._json(self.keys.similar(item_id))

    def trending(self, category: Optional[str] = None, segment: Optional[str] = None, k: int = 20) -> list[tuple[str, float]]:
        """The ``k`` most popular items (decayed), overall or within a category or segment."""
        if category is not None and segment is not None:
            raise ValueError("trending: give a category or a segment, not both")
        key = (self.keys.category_trending(category) if category is not None
               else self.keys.segment_trending(segment) if segment is not None else self.keys.trending)
        return [(m.decode(), s) for m, s in self.redis.zrevrange(key, 0, k - 1, withscores=True)]

    def categories(self) -> list[str]:
        """The categories that have a trending list."""
        head = f"{self.keys.prefix}:trending:category:{{"
        return sorted(k.decode()[len(head):-1] for k in self.redis.scan_iter(match=head + "*", count=1000))

    def segments(self) -> Optional[dict]:
        """Segment sizes, centroids, traits and drift."""
        return self._json(self.keys.segments)

    def traits(self, segment: str) -> list[str]:
        """What ``segment`` stands for, in words (``pulse:segments``; a user's verdict
        names the segment only); [] for a segment not summarized yet."""
        summary = self.segments()
        return summary["segments"].get(segment, {}).get("traits", []) if summary else []

    def anomalies(self, count: int = 50) -> list[dict]:
        """The newest flagged users, newest first, each with its stream ``id``."""
        return [_entry(i, f) for i, f in self.redis.xrevrange(self.keys.anomalies, count=count)]

    def meta(self) -> dict:
        """What the models have seen: ``schema_version``, ``events_processed``, ..."""
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(self.keys.meta).items()}

    def stats(self) -> list[dict]:
        """The stats hashes of the newest run (one per process; see
        :mod:`pulse.flows.monitor`), JSON fields decoded."""
        found = []
        for key in self.redis.scan_iter(match=f"{self.keys.prefix}:stats:*", count=1000):
            doc = {k.decode(): v.decode() for k, v in self.redis.hgetall(key).items()}
            for name in ("dlq_by_reason", "alerts", "history"):
                doc[name] = orjson.loads(doc[name]) if doc.get(name) else ([] if name != "dlq_by_reason" else {})
            found.append(doc)
        if not found:
            return []
        newest = max(found, key=lambda d: int(d.get("updated_at", 0)))
        return sorted((d for d in found if d.get("run") == newest.get("run")), key=lambda d: int(d.get("process", 0)))

    def recent_updates(self, count: int = 50) -> list[dict]:
        """The newest entries of ``pulse:updates``, newest first."""
        return [_entry(i, f) for i, f in self.redis.xrevrange(self.keys.updates, count=count)]

    def updates(self, last_id: str = "$", block_ms: int = 0, count: int = 100) -> Iterator[dict]:
        """The users whose list changed after stream id ``last_id`` (``$``: from now),
        as they change: ``{"id", "user_id", "recomm_id", "generated_at"}``. Waits up to
        ``block_ms`` for each (0: forever); ends when a wait times out."""
        while True:
            reply = self.redis.xread({self.keys.updates: last_id}, count=count, block=block_ms)
            if not reply:
                return
            for entry_id, fields in reply[0][1]:
                last_id = entry_id.decode()
                yield _entry(entry_id, fields)


def _entry(entry_id: bytes, fields: dict) -> dict:
    return {"id": entry_id.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
