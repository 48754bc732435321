"""The data-quality monitor: thresholds crossed by a real replay show in the stats hash,
the log and the metrics; a clean stretch raises nothing."""

import logging
import subprocess
import sys

import orjson
import pytest
from prometheus_client import REGISTRY

from pulse.client import PulseClient
from pulse.flows.config import Settings
from pulse.flows.generate import generate, write_log
from pulse.flows.monitor import Sample, Thresholds, check
from pulse.flows.replay import replay


def sample(t, events_in, ok, late=0, **dlq):
    return Sample(t=t, events_in=events_in, events_ok=ok, late=late, dlq=dlq)


def test_a_clean_window_raises_no_alert():
    assert check(Thresholds(), sample(0, 0, 0), sample(10_000, 5_000, 4_990, invalid_json=10)) == []


def test_one_reason_over_its_share_raises_an_alert_naming_it():
    (alert,) = check(Thresholds(dlq_share_max=0.05), sample(0, 0, 0), sample(10_000, 1_000, 900, invalid_json=100))
    assert alert["check"] == "dead_letters:invalid_json" and alert["value"] == 0.1
    assert "10.0% of records were dead-lettered as invalid_json" in alert["message"]


def test_shares_are_not_judged_on_too_few_records():
    assert check(Thresholds(min_events=100), sample(0, 0, 0), sample(1_000, 50, 10, invalid_json=40)) == []


def test_late_events_over_their_share_raise_an_alert():
    (alert,) = check(Thresholds(late_share_max=0.01), sample(0, 0, 0), sample(10_000, 1_000, 1_000, late=50))
    assert alert["check"] == "late_events"


def test_a_slow_live_run_raises_an_alert_a_replay_does_not():
    th = Thresholds(min_events_per_s=100)
    slow = (sample(0, 0, 0), sample(10_000, 200, 200))
    assert [a["check"] for a in check(th, *slow, live=True)] == ["events_per_s"]
    assert check(th, *slow, live=False) == []


def test_segment_drift_over_its_threshold_raises_an_alert():
    new = Sample(t=1, events_in=0, events_ok=0, late=0, drift={"s0": 0.5, "s1": 4.2})
    assert [a["check"] for a in check(Thresholds(drift_max=3.0), new, new)] == ["segment_drift:s1"]


@pytest.fixture(scope="module")
def dirty_replay(tmp_path_factory, redis_server):
    lines, _ = generate(users=100, items=100, events=3_000, seed=8, malformed=0.3, days=1)
    path = tmp_path_factory.mktemp("dirty") / "events.jsonl"
    write_log(str(path), lines)
    url = redis_server.url(41)
    PulseClient(url).redis.flushdb()
    return path, url


def test_a_dirty_log_shows_its_alert_in_the_stats_the_log_and_the_metrics(dirty_replay, caplog):
    path, url = dirty_replay
    with caplog.at_level(logging.WARNING, logger="pulse.monitor"):
        replay(path, "native", Settings(monitor_dlq_share_max=0.02, replay_stats=True), url)
    (stats,) = PulseClient(url).stats()
    checks = {a["check"] for a in stats["alerts"]}
    assert any(c.startswith("dead_letters:") for c in checks)
    assert any("data quality:" in r.message and "dead-lettered" in r.message for r in caplog.records)
    raised = {s.labels["check"] for m in REGISTRY.collect() if m.name == "pulse_monitor_alert" for s in m.samples if s.value == 1}
    assert checks <= raised


def test_thresholds_come_from_the_environment(dirty_replay, tmp_path):
    path, url = dirty_replay
    env = {"PULSE_MONITOR_DLQ_SHARE_MAX": "0.99", "PULSE_REPLAY_STATS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "pulse", "replay", str(path), "--redis", url], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "data quality" not in out.stderr
    assert orjson.loads(out.stdout.strip().splitlines()[-1])["events_dlq"] > 0
    assert PulseClient(url).stats()[0]["alerts"] == []
