"""The Redis key schema: the one place that names what frontends read.

Every key starts with a configurable prefix (default ``pulse``) so several deployments
can share one Redis. Per-user and per-item keys put the id in braces, a Redis Cluster
hash tag, so all of one user's keys land in the same slot.

=====================================  ===========  ==========================================
key                                    type         value
=====================================  ===========  ==========================================
``pulse:user:{<user_id>}:recs``        string/JSON  ``{"user_id", "recomm_id", "generated_at",
                                                    "segment", "items": [{"item_id", "score",
                                                    "reason"}]}``
``pulse:user:{<user_id>}:profile``     string/JSON  counts per type, last_seen, engagement,
                                                    decayed affinities, rule segments
``pulse:user:{<user_id>}:segment``     string/JSON  ``{"user_id", "segment", "segment_traits",
                                                    "anomaly"}``: the River models' verdicts
``pulse:user:{<user_id>}:events``      sorted set   the user's latest events (``recent_events``
                                                    of them; off by default)
``pulse:item:{<item_id>}:similar``     string/JSON  ``[{"item_id", "score"}]`` co-visitation
``pulse:trending``                     sorted set   item -> decayed popularity
``pulse:trending:category:{<c>}``      sorted set   item -> decayed popularity in category c
``pulse:trending:segment:{<s>}``       sorted set   item -> decayed popularity in segment s
``pulse:item:{<item_id>}:nbrs``        string/JSON  internal: the co-visitation list the blend
                                                    reads in other processes
``pulse:segments``                     string/JSON  segment sizes, centroids, drift, traits
``pulse:anomalies``                    stream       one entry per flagged user
``pulse:meta``                         hash         schema_version, events_processed, ...
``pulse:updates``                      stream       one entry per user whose list changed (also
                                                    published on the Pub/Sub channel of the name)
``pulse:stats:{<process>}``            hash         a run's counters, rates and monitor alerts
=====================================  ===========  ==========================================

Example:

>>> keys = KeySchema("shop1")
>>> keys.recs("42")
'shop1:user:{42}:recs'
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bumped when a key or a value's layout changes in a way frontends would notice.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class KeySchema:
    prefix: str = "pulse"

    def recs(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}:recs"

    def profile(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}:profile"

    def verdict(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}:segment"

    def recent_events(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}:events"

    def similar(self, item_id: str) -> str:
        return f"{self.prefix}:item:{{{item_id}}}:similar"

    def nbrs(self, item_id: str) -> str:
        return f"{self.prefix}:item:{{{item_id}}}:nbrs"

    def segment_trending(self, segment: str) -> str:
        return f"{self.prefix}:trending:segment:{{{segment}}}"

    def category_trending(self, category: str) -> str:
        return f"{self.prefix}:trending:category:{{{category}}}"

    @property
    def trending(self) -> str:
        return f"{self.prefix}:trending"

    @property
    def segments(self) -> str:
        return f"{self.prefix}:segments"

    @property
    def anomalies(self) -> str:
        return f"{self.prefix}:anomalies"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def updates(self) -> str:
        """The stream of users whose list changed, and the Pub/Sub channel of the same name."""
        return f"{self.prefix}:updates"

    def stats(self, process: int = 0) -> str:
        return f"{self.prefix}:stats:{{{process}}}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this deployment."""
        return f"{self.prefix}:*"
