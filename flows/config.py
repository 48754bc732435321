"""Configuration: every knob in one place, from environment variables (``PULSE_*``),
an optional TOML file (``PULSE_CONFIG`` or ``--config``), or command-line options (which
win). ``pulse config`` prints the effective values."""

from __future__ import annotations

import os
from typing import Optional

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from pulse.operators.recommend import BlendConfig
from pulse.state.anomaly import AnomalyConfig
from pulse.state.engine import EngineConfig
from pulse.state.keys import KeySchema
from pulse.state.profile import ProfileConfig
from pulse.state.rules import RuleConfig
from pulse.state.segments import SegmentConfig
from pulse.state.user import UserConfig


class Settings(BaseSettings):
    """Pulse settings. Environment variables are ``PULSE_`` + the upper-case name."""

    model_config = SettingsConfigDict(env_prefix="PULSE_", extra="ignore")

    redis_url: Optional[str] = Field(None, description="Redis to write to; none = embedded server (demo only)")
    key_prefix: str = Field("pulse", description="prefix of every Redis key")
    user_ttl_s: int = Field(30 * 86400, description="TTL of per-user keys, seconds")
    flush_interval_s: float = Field(0.01, description="how long Redis writes are coalesced")
    # profiles
    profile_half_life_s: float = Field(7 * 86400, description="half-life of user affinities (event time)")
    long_dwell_ms: int = 30_000
    quick_exit_ms: int = 3_000
    # rule-based segments (enthusiast:<category>)
    enthusiast_min_items: int = Field(5, description="distinct items of a category viewed to be in enthusiast:<category>")
    enthusiast_window_s: float = Field(86400.0, description="event-time seconds within which those items must have been viewed")
    enthusiast_event_types: tuple[str, ...] = Field(("view",), description="event types that count as viewing an item")
    enthusiast_max_categories: int = Field(32, description="categories tracked per user for the rule")
    # windows
    tumbling_s: tuple[int, ...] = (60, 3600)
    session_gap_s: int = 1800
    allowed_lateness_s: int = 5
    # the models and the blend
    trending_half_life_s: float = 86400.0
    covisit_half_life_s: float = 30 * 86400.0
    recs_k: int = 10
    recs_interval_s: float = Field(1.0, description="debounce: recommendations refresh at most this often per user")
    exclude_seen: bool = Field(False, description="exclude every seen item (purchased items are always excluded)")
    max_category_share: float = 0.5
    weight_co_visit: float = 1.0
    weight_category: float = 0.35
    weight_segment: float = 0.2
    weight_trending: float = 0.1
    segments: int = 5
    anomaly_quantile: float = 0.98
    anomaly_min_events: int = 30
    live_idle_s: float = Field(1800.0, description="live runs: evict users idle this long (wall clock)")
    gc_threshold: int = Field(50_000, description="allocations between young-generation garbage collections")

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        KeySchema(value)  # raises, saying which prefixes are allowed
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = os.environ.get("PULSE_CONFIG")
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def keys(self) -> KeySchema:
        return KeySchema(self.key_prefix)

    def user_config(self) -> UserConfig:
        return UserConfig(
            profile=ProfileConfig(half_life_s=self.profile_half_life_s, long_dwell_ms=self.long_dwell_ms, quick_exit_ms=self.quick_exit_ms),
            rules=RuleConfig(min_items=self.enthusiast_min_items, window_s=self.enthusiast_window_s,
                             event_types=tuple(self.enthusiast_event_types), max_categories=self.enthusiast_max_categories),
            tumbling_s=tuple(self.tumbling_s),
            session_gap_s=self.session_gap_s,
            allowed_lateness_s=self.allowed_lateness_s,
            profile_interval_s=self.recs_interval_s,
        )

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            keys=self.keys(),
            blend=BlendConfig(
                k=self.recs_k,
                weights={"co_visit": self.weight_co_visit, "category": self.weight_category,
                         "segment": self.weight_segment, "trending": self.weight_trending},
                max_category_share=self.max_category_share,
                exclude_seen=self.exclude_seen,
            ),
            segments=SegmentConfig(n_clusters=self.segments),
            anomaly=AnomalyConfig(quantile=self.anomaly_quantile, min_events=self.anomaly_min_events),
            trending_half_life_s=self.trending_half_life_s,
            covisit_half_life_s=self.covisit_half_life_s,
            recs_interval_s=self.recs_interval_s,
            user_ttl_s=self.user_ttl_s,
        )
