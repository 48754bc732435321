"""Kafka with SASL/PLAIN, for real: the session's broker also listens with
SASL_PLAINTEXT; `pulse produce`, `pulse run` and `pulse record` reach it with the
credentials from the settings (PULSE_KAFKA_*), and no output shows the password."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import orjson
import pytest
import redis

from pulse.flows.config import Settings
from pulse.flows.generate import generate, write_log

pytestmark = pytest.mark.kafka


def pulse(*args, env, timeout=180):
    return subprocess.run([sys.executable, "-m", "pulse", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def sasl_env(broker, password: str | None = None, password_file=None) -> dict:
    env = {"PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "PULSE_KAFKA_SASL_MECHANISM": "PLAIN",
           "PULSE_KAFKA_SASL_USERNAME": broker.sasl_user}
    if password_file is not None:
        env["PULSE_KAFKA_SASL_PASSWORD_FILE"] = str(password_file)
    else:
        env["PULSE_KAFKA_SASL_PASSWORD"] = password or broker.sasl_password
    return env


@pytest.fixture(scope="module")
def events_log(tmp_path_factory):
    lines, _ = generate(users=40, items=50, events=800, seed=9, days=1)
    path = tmp_path_factory.mktemp("sasl") / "events.jsonl"
    write_log(str(path), lines)
    return path, len(lines)


def test_the_settings_pass_sasl_through_to_every_client():
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="u",
                 kafka_sasl_password="p", kafka_ssl_ca_file="/ca.pem", kafka_options={"ssl.endpoint.identification.algorithm": "none"})
    assert s.kafka_client_options() == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u",
                                        "sasl.password": "p", "ssl.ca.location": "/ca.pem",
                                        "ssl.endpoint.identification.algorithm": "none"}


def test_produce_and_run_over_sasl_plain_reach_redis_and_print_no_password(kafka_broker, events_log, redis_url, tmp_path):
    path, n = events_log
    topic = kafka_broker.create_topic(f"sasl-{uuid.uuid4().hex[:8]}", partitions=2)
    secret_file = tmp_path / "sasl-password"
    secret_file.write_text(kafka_broker.sasl_password + "\n")
    env = sasl_env(kafka_broker, password_file=secret_file)
    produced = pulse("produce", str(path), "--brokers", kafka_broker.sasl_bootstrap, "--topic", topic, env=env)
    assert produced.returncode == 0, produced.stderr[-2000:]
    assert orjson.loads(produced.stdout.splitlines()[-1])["events"] == n
    ran = pulse("-v", "run", "--brokers", kafka_broker.sasl_bootstrap, "--topic", topic, "--redis", redis_url,
                "--max-events", str(n), "--idle-exit", "20", env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert orjson.loads(ran.stdout.splitlines()[-1])["events_in"] == n
    assert int(redis.Redis.from_url(redis_url).hget("pulse:meta", "events_processed")) > 0
    for out in (produced, ran):
        assert kafka_broker.sasl_password not in out.stdout + out.stderr


def test_record_over_sasl_plain_reads_the_topic_back(kafka_broker, events_log, tmp_path):
    path, n = events_log
    topic = kafka_broker.create_topic(f"sasl-rec-{uuid.uuid4().hex[:8]}", partitions=1)
    env = sasl_env(kafka_broker)
    assert pulse("produce", str(path), "--brokers", kafka_broker.sasl_bootstrap, "--topic", topic, env=env).returncode == 0
    out = pulse("record", "--brokers", kafka_broker.sasl_bootstrap, "--topic", topic, "--out", str(tmp_path / "r.jsonl"), env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert orjson.loads(out.stdout.splitlines()[-1])["events"] == n


def test_a_wrong_sasl_password_is_a_clear_error_without_the_password(kafka_broker, events_log):
    path, _ = events_log
    wrong = "Wrong-" + uuid.uuid4().hex
    out = pulse("produce", str(path), "--brokers", kafka_broker.sasl_bootstrap, "--topic", "events", "--connect-timeout", "3",
                env=sasl_env(kafka_broker, password=wrong))
    assert out.returncode == 2
    error = orjson.loads(out.stdout.splitlines()[-1])["error"]
    assert "refused our credentials" in error and "PULSE_KAFKA_SASL_PASSWORD" in error
    assert wrong not in out.stdout + out.stderr


def test_the_sasl_listener_refuses_clients_without_credentials(kafka_broker, events_log):
    path, _ = events_log
    out = pulse("produce", str(path), "--brokers", kafka_broker.sasl_bootstrap, "--topic", "events", "--connect-timeout", "3",
                env={})
    assert out.returncode == 2
