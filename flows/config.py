"""Configuration: every knob in one place, from environment variables (``PULSE_*``),
an optional TOML file (``PULSE_CONFIG`` or ``--config``), or command-line options (which
win). ``pulse config`` prints the effective values, with every secret masked.

Secrets (the Redis password, the Kafka SASL password, a TLS key's password) come from
the environment (``PULSE_REDIS_PASSWORD``) or from a file named there
(``PULSE_REDIS_PASSWORD_FILE``: what Kubernetes and Docker secrets mount); a password in
the Redis URL works too. :meth:`Settings.secrets` lists them, so that no output shows
them (:mod:`pulse.flows.redact`).

>>> s = Settings(redis_url="rediss://pulse:s3cret@cache:6380/0", kafka_sasl_password="t0ken")
>>> s.masked_dump()["redis_url"], s.masked_dump()["kafka_sasl_password"]
('rediss://pulse:***@cache:6380/0', '***')
>>> sorted(s.secrets())
['s3cret', 't0ken']
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Optional
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from pulse.flows.monitor import Thresholds
from pulse.operators.recommend import BlendConfig
from pulse.state.anomaly import AnomalyConfig
from pulse.state.bots import BotRuleConfig
from pulse.state.config import EngineConfig
from pulse.state.keys import KeySchema
from pulse.state.profile import ProfileConfig
from pulse.state.rules import RuleConfig
from pulse.state.segments import SegmentConfig
from pulse.state.store import RedisTarget
from pulse.state.user import UserConfig


class Settings(BaseSettings):
    """Pulse settings. Environment variables are ``PULSE_`` + the upper-case name."""

    model_config = SettingsConfigDict(env_prefix="PULSE_", extra="ignore")

    redis_url: Optional[str] = Field(None, description="Redis to write to (rediss:// for TLS); none = embedded server (demo only)")
    redis_username: Optional[str] = Field(None, description="Redis ACL user (instead of the URL's)")
    redis_password: Optional[SecretStr] = Field(None, description="its password (instead of the URL's)")
    redis_password_file: Optional[Path] = Field(None, description="a file holding the Redis password")
    redis_tls_ca_file: Optional[Path] = Field(None, description="CA certificate(s) that signed the Redis server's (rediss://)")
    redis_tls_cert_file: Optional[Path] = Field(None, description="client certificate, for servers with tls-auth-clients")
    redis_tls_key_file: Optional[Path] = Field(None, description="the client certificate's private key")
    # Kafka security: passed to librdkafka as they are (its names in the comments)
    kafka_security_protocol: Optional[str] = Field(None, description="security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
    kafka_sasl_mechanism: Optional[str] = Field(None, description="sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...")
    kafka_sasl_username: Optional[str] = Field(None, description="sasl.username")
    kafka_sasl_password: Optional[SecretStr] = Field(None, description="sasl.password")
    kafka_sasl_password_file: Optional[Path] = Field(None, description="a file holding sasl.password")
    kafka_ssl_ca_file: Optional[Path] = Field(None, description="ssl.ca.location: the CA that signed the brokers' certificates")
    kafka_ssl_cert_file: Optional[Path] = Field(None, description="ssl.certificate.location: client certificate")
    kafka_ssl_key_file: Optional[Path] = Field(None, description="ssl.key.location: its private key")
    kafka_ssl_key_password: Optional[SecretStr] = Field(None, description="ssl.key.password")
    kafka_options: dict[str, str] = Field(default_factory=dict, description="any other librdkafka setting, as JSON "
                                          "(PULSE_KAFKA_OPTIONS='{\"ssl.endpoint.identification.algorithm\": \"none\"}')")
    key_prefix: str = Field("pulse", description="prefix of every Redis key")
    user_ttl_s: int = Field(30 * 86400, description="TTL of per-user keys, seconds")
    # retention per kind of per-user key (seconds; unset: user_ttl_s)
    ttl_profile_s: Optional[int] = Field(None, ge=1, description="TTL of pulse:user:{<id>}:profile")
    ttl_recs_s: Optional[int] = Field(None, ge=1, description="TTL of pulse:user:{<id>}:recs")
    ttl_segment_s: Optional[int] = Field(None, ge=1, description="TTL of pulse:user:{<id>}:segment (the verdicts)")
    ttl_events_s: Optional[int] = Field(None, ge=1, description="TTL of pulse:user:{<id>}:events (recent events)")
    # privacy (pulse.state.privacy)
    pseudonymize_key: Optional[SecretStr] = Field(None, description="replace user ids by their HMAC-SHA256 under this key before anything is stored")
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
    # per-user caps (see the README's "Bounded state")
    dedup_capacity: int = Field(1_024, ge=1, description="event ids remembered per user for dedup (the newest)")
    max_seen: int = Field(2_000, ge=1, description="items remembered per user as seen, and as bought (the oldest tenth goes at once)")
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
    # behavioural bot rules beside the model (pulse.state.bots)
    bot_rules: bool = Field(True, description="flag sessions whose rate or shape is a bot's")
    bot_min_session_events: int = Field(30, description="item events (views, clicks) in a session before its shape is judged")
    bot_max_per_minute: int = Field(120, description="item events within one minute that alone make a bot")
    bot_fast_gap_ms: int = Field(1000, description="a gap between item events shorter than this is sub-second")
    bot_fast_share: float = Field(0.7, description="share of sub-second gaps that counts as hurried")
    bot_dwell_share: float = Field(0.1, description="fewer dwell reports per item event than this: no dwell")
    bot_max_dwell_ms: float = Field(500.0, description="a mean dwell below this: no dwell")
    bot_scroll_share: float = Field(0.05, description="fewer scroll reports per item event than this: no scroll")
    bot_walk_categories: int = Field(4, description="distinct categories in one session that make a random walk")
    bot_min_rules: int = Field(2, description="shape rules (sub-second, no dwell, no scroll, random walk) that must hold together")
    recent_events: int = Field(0, description="keep each user's latest N events in pulse:user:{<id>}:events for the dashboard (0: off; about 60 bytes of Redis each)")
    # change notifications (pulse:updates)
    updates: bool = Field(True, description="announce every list written on the pulse:updates stream and Pub/Sub channel")
    updates_maxlen: int = Field(10_000, description="the pulse:updates stream is capped at about this many entries")
    # the data-quality monitor (pulse:stats:{<process>}, the dashboard, the log, pulse_monitor_alert)
    replay_stats: bool = Field(False, description="replays also write the run's stats hash pulse:stats:{<process>} (wall-clock rates: "
                               "off by default, so that a replay's Redis contents are a function of the log; live runs always write it)")
    monitor_interval_s: float = Field(1.0, description="seconds between the monitor's samples")
    monitor_window_s: float = Field(10.0, description="the monitor checks rates over this many seconds")
    monitor_dlq_share_max: float = Field(0.10, description="alert when one dead-letter reason takes more than this share of records")
    monitor_late_share_max: float = Field(0.01, description="alert when more than this share of events is late")
    monitor_min_events_per_s: float = Field(0.0, description="live runs: alert below this many records/s (0: off)")
    monitor_drift_max: float = Field(10.0, description="alert when a segment's centroid moves more (standard deviations)")
    monitor_min_events: int = Field(100, description="share checks need this many records in the window")
    # pulse serve
    serve_token: Optional[SecretStr] = Field(None, description="pulse serve: the token every request must carry (PULSE_SERVE_TOKEN)")
    live_idle_s: float = Field(1800.0, description="live runs: evict users idle this long (wall clock)")
    gc_threshold: int = Field(50_000, description="allocations between young-generation garbage collections")
    # the HTTP collector (pulse collect)
    collect_host: str = Field("127.0.0.1", description="collector: address to listen on")
    collect_port: int = Field(8080, ge=0, le=65535, description="collector: port to listen on")
    collect_max_body_bytes: int = Field(1 << 20, ge=1024, description="collector: largest request body, before and after gzip")
    collect_max_events: int = Field(500, ge=1, description="collector: most events in one request")
    collect_rate_per_s: float = Field(20.0, ge=0, description="collector: requests per second per client IP (token bucket); 0 = no limit")
    collect_rate_burst: float = Field(40.0, ge=1, description="collector: requests a client may send at once before the rate applies")
    collect_cors_origins: tuple[str, ...] = Field((), description="collector: origins allowed to POST from a browser (CORS), e.g. https://shop.example")
    collect_stamp_user_agent: bool = Field(False, description="collector: put the request's User-Agent into each event (crawlers then get bot_user_agent)")
    collect_stamp_ip: Literal["none", "ip", "hash"] = Field("none", description="collector: add the client IP to each event: none, ip, or hash (HMAC with collect_ip_hash_key)")
    collect_ip_hash_key: Optional[SecretStr] = Field(None, description="collector: secret key of the IP hash (collect_stamp_ip=hash)")
    collect_admin_token: Optional[SecretStr] = Field(
        None, description="collector: the operator token (Authorization: Bearer ...) a request needs for its forget events to be taken")
    collect_forwarded_allow_ips: Optional[str] = Field(None, description="collector: proxies whose X-Forwarded-For is trusted for the client IP (comma-separated, or *)")
    collect_queue_max: int = Field(100_000, ge=1, description="collector: events waiting for Kafka before requests get 503 + Retry-After")
    collect_retry_after_s: int = Field(1, ge=1, description="collector: Retry-After of a 503 when the queue is full")
    collect_linger_ms: float = Field(5.0, ge=0, description="collector: how long the producer batches messages")
    collect_message_timeout_ms: int = Field(300_000, ge=1000, description="collector: a message not delivered in this time fails and is produced again")

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

    def thresholds(self) -> Thresholds:
        return Thresholds(dlq_share_max=self.monitor_dlq_share_max, late_share_max=self.monitor_late_share_max,
                          min_events_per_s=self.monitor_min_events_per_s, drift_max=self.monitor_drift_max,
                          min_events=self.monitor_min_events)

    def keys(self) -> KeySchema:
        return KeySchema(self.key_prefix)

    def redis_target(self) -> RedisTarget:
        """How to reach :attr:`redis_url`: with the ACL user, password and TLS files set
        beside it. :class:`ValueError` when they do not fit together."""
        if not self.redis_url:
            raise ValueError("no Redis URL")
        password = _secret(self.redis_password, self.redis_password_file, "PULSE_REDIS_PASSWORD_FILE")
        return RedisTarget(self.redis_url, self.redis_username, password, _path(self.redis_tls_ca_file),
                           _path(self.redis_tls_cert_file), _path(self.redis_tls_key_file))

    def kafka_client_options(self) -> dict[str, str]:
        """The librdkafka settings every Kafka client of a run gets beside
        ``bootstrap.servers``: security protocol, SASL and SSL, then :attr:`kafka_options`."""
        options = {
            "security.protocol": self.kafka_security_protocol,
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": _secret(self.kafka_sasl_password, self.kafka_sasl_password_file, "PULSE_KAFKA_SASL_PASSWORD_FILE"),
            "ssl.ca.location": _path(self.kafka_ssl_ca_file),
            "ssl.certificate.location": _path(self.kafka_ssl_cert_file),
            "ssl.key.location": _path(self.kafka_ssl_key_file),
            "ssl.key.password": self.kafka_ssl_key_password.get_secret_value() if self.kafka_ssl_key_password else None,
        }
        return {**{k: v for k, v in options.items() if v}, **self.kafka_options}

    def secrets(self) -> set[str]:
        """Every secret these settings hold (passwords, keys' passwords, secret-looking
        librdkafka options), for masking in outputs."""
        found = set()
        if self.redis_url:
            found.add(urlsplit(self.redis_url).password)
        for value in (self.redis_password, self.kafka_sasl_password, self.kafka_ssl_key_password, self.serve_token,
                      self.collect_ip_hash_key, self.collect_admin_token, self.pseudonymize_key):
            found.add(value.get_secret_value() if value else None)
        for path in (self.redis_password_file, self.kafka_sasl_password_file):
            found.add(_read_secret(path, "") if path and path.is_file() else None)
        found |= {v for k, v in self.kafka_options.items() if _SECRET_OPTION.search(k)}
        return {s for s in found if s}

    def masked_dump(self) -> dict:
        """The settings as JSON values, secrets masked (what ``pulse config`` prints)."""
        doc = self.model_dump(mode="json")
        for name in ("redis_password", "kafka_sasl_password", "kafka_ssl_key_password", "serve_token", "collect_ip_hash_key",
                     "collect_admin_token", "pseudonymize_key"):
            if doc.get(name):
                doc[name] = "***"
        if self.redis_url and urlsplit(self.redis_url).password:
            parts = urlsplit(self.redis_url)
            doc["redis_url"] = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
        doc["kafka_options"] = {k: "***" if _SECRET_OPTION.search(k) else v for k, v in self.kafka_options.items()}
        return doc

    def user_config(self) -> UserConfig:
        return UserConfig(
            profile=ProfileConfig(half_life_s=self.profile_half_life_s, long_dwell_ms=self.long_dwell_ms, quick_exit_ms=self.quick_exit_ms),
            rules=RuleConfig(min_items=self.enthusiast_min_items, window_s=self.enthusiast_window_s,
                             event_types=tuple(self.enthusiast_event_types), max_categories=self.enthusiast_max_categories),
            bots=BotRuleConfig(enabled=self.bot_rules, min_session_events=self.bot_min_session_events,
                               max_per_minute=self.bot_max_per_minute, fast_gap_ms=self.bot_fast_gap_ms,
                               fast_share=self.bot_fast_share, dwell_share=self.bot_dwell_share,
                               max_dwell_ms=self.bot_max_dwell_ms, scroll_share=self.bot_scroll_share,
                               walk_categories=self.bot_walk_categories, min_rules=self.bot_min_rules,
                               session_gap_s=self.session_gap_s),
            dedup_capacity=self.dedup_capacity,
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
            profile_ttl_s=self.ttl_profile_s or self.user_ttl_s,
            recs_ttl_s=self.ttl_recs_s or self.user_ttl_s,
            verdict_ttl_s=self.ttl_segment_s or self.user_ttl_s,
            events_ttl_s=self.ttl_events_s or self.user_ttl_s,
            max_seen=self.max_seen,
        )


_SECRET_OPTION = re.compile(r"password|secret|token|jaas|credential", re.IGNORECASE)


def _path(path: Optional[Path]) -> Optional[str]:
    return str(path) if path else None


def _read_secret(path: Path, variable: str) -> str:
    try:
        # a trailing newline is how files end, never part of a password
        return path.read_text().rstrip("\r\n")
    except OSError as err:
        raise ValueError(f"{variable} names {path}, which cannot be read ({err.strerror})") from None


def _secret(value: Optional[SecretStr], path: Optional[Path], variable: str) -> Optional[str]:
    if value is not None:
        return value.get_secret_value()
    return _read_secret(path, variable) if path else None
