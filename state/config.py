"""The configuration of the stateful steps' models and documents (:class:`EngineConfig`):
keys, blend, segments, anomalies, decay, co-visitation, rounds of global writes and
retention. :mod:`pulse.flows.config` builds it from the settings.

Example:

>>> sorted(EngineConfig().model_windows)
['session', 'tumbling:60']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pulse.operators.recommend import BlendConfig
from pulse.state.anomaly import AnomalyConfig
from pulse.state.keys import KeySchema
from pulse.state.river_models import RiverConfig
from pulse.state.segments import SegmentConfig


@dataclass(frozen=True)
class EngineConfig:
    keys: KeySchema = field(default_factory=KeySchema)
    blend: BlendConfig = field(default_factory=BlendConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    trending_half_life_s: float = 86_400.0
    covisit_half_life_s: float = 30 * 86_400.0
    covisit_window: int = 10
    covisit_recency: float = 0.9
    covisit_neighbours: int = 100
    covisit_alpha: float = 0.7
    covisit_beta: float = 0.3
    #: how many of the user's recent items seed co-visitation candidates, and how much
    #: each step back in the user's history counts
    recs_seed_items: int = 8
    recs_seed_recency: float = 0.9
    recs_interval_s: float = 1.0
    global_interval_s: float = 5.0
    #: ... and only after this many events, so a fast replay of days of event time
    #: does not rewrite the global keys every few events (live runs also write them
    #: on a wall-clock timer)
    global_min_events: int = 2_000
    trending_size: int = 100
    similar_size: int = 20
    #: retention of each kind of per-user key (seconds; pulse:user:{<id>}:profile,
    #: :recs, :segment, :events)
    profile_ttl_s: int = 30 * 86_400
    recs_ttl_s: int = 30 * 86_400
    verdict_ttl_s: int = 30 * 86_400
    events_ttl_s: int = 30 * 86_400
    max_seen: int = 2_000

    @property
    def model_windows(self) -> frozenset:
        """The window kinds the models learn from (the user step sends only those)."""
        return frozenset((self.segments.window, self.anomaly.window))

    @property
    def river(self) -> RiverConfig:
        return RiverConfig(self.segments, self.anomaly, self.global_interval_s)
