"""Secure connections to Redis: an ACL user over TLS with a private CA (and a client
certificate where the server asks for one), on one server and on a Redis Cluster; and
no password in any output."""

import os
import secrets
import subprocess
import sys

import orjson
import pytest
import redis
from redis.cluster import RedisCluster

from pulse.flows.config import Settings
from pulse.flows.generate import generate, write_log
from pulse.state.store import Put, RedisStore, RedisTarget, ping
from tls_services import TlsRedis, TlsRedisCluster, make_certificates

PASSWORD = "Pw-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_redis(certs, tmp_path_factory):
    server = TlsRedis(tmp_path_factory.mktemp("tls-redis"), certs, PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_redis(certs, tmp_path_factory):
    server = TlsRedis(tmp_path_factory.mktemp("mtls-redis"), certs, PASSWORD, client_certs=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    lines, _ = generate(users=50, items=60, events=1_500, seed=5, malformed=0.02, days=1)
    path = tmp_path_factory.mktemp("log") / "events.jsonl"
    write_log(str(path), lines)
    return path


def pulse(*args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "pulse", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def write_one(redis_at) -> None:
    store = RedisStore(redis_at)
    store.add([Put("pulse:user:{u1}:recs", b"{}")])
    store.close()


def test_a_replay_over_tls_as_an_acl_user_writes_its_keys_and_prints_no_password(tls_redis, certs, small_log):
    out = pulse("-v", "replay", str(small_log), "--redis", tls_redis.url(1), env={"PULSE_REDIS_TLS_CA_FILE": str(certs.ca)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert orjson.loads(out.stdout.splitlines()[-1])["events_ok"] > 0
    assert tls_redis.client(db=1).dbsize() > 0
    assert PASSWORD not in out.stdout + out.stderr


def test_a_two_process_replay_over_tls_gets_its_url_through_the_environment(tls_redis, certs, small_log):
    out = pulse("replay", str(small_log), "--processes", "2", "--redis", tls_redis.url(2),
                env={"PULSE_REDIS_TLS_CA_FILE": str(certs.ca)}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert orjson.loads(out.stdout.splitlines()[-1])["processes"] == 2
    assert tls_redis.client(db=2).dbsize() > 0
    assert PASSWORD not in out.stdout + out.stderr


def test_the_user_and_password_may_come_from_settings_and_a_file(tls_redis, certs, tmp_path):
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(PASSWORD + "\n")
    settings = Settings(redis_url=tls_redis.url(3, credentials=False), redis_username="pulse",
                        redis_password_file=secret_file, redis_tls_ca_file=certs.ca)
    write_one(settings.redis_target())
    assert tls_redis.client(db=3).get("pulse:user:{u1}:recs") == b"{}"


def test_a_client_certificate_reaches_a_server_that_requires_one(mtls_redis, certs):
    write_one(RedisTarget(mtls_redis.url(), ca_file=str(certs.ca), cert_file=str(certs.client_cert),
                          key_file=str(certs.client_key)))
    assert mtls_redis.client().get("pulse:user:{u1}:recs") == b"{}"


def test_a_server_that_requires_a_client_certificate_refuses_a_client_without_one(mtls_redis, certs):
    problem = ping(RedisTarget(mtls_redis.url(), ca_file=str(certs.ca)), timeout_s=2)
    assert problem is not None and problem.startswith(f"cannot reach Redis at 127.0.0.1:{mtls_redis.port}/0")
    assert PASSWORD not in problem


def test_an_unknown_ca_is_a_clear_error_naming_the_setting(tls_redis):
    problem = ping(tls_redis.url(), timeout_s=2)
    assert "CERTIFICATE_VERIFY_FAILED" in problem and "PULSE_REDIS_TLS_CA_FILE" in problem
    assert PASSWORD not in problem


def test_a_wrong_password_is_a_clear_cli_error_without_either_password(tls_redis, certs, small_log):
    wrong = "Wrong-" + secrets.token_hex(8)
    out = pulse("replay", str(small_log), "--redis", f"rediss://pulse:{wrong}@127.0.0.1:{tls_redis.port}/0",
                env={"PULSE_REDIS_TLS_CA_FILE": str(certs.ca)})
    assert out.returncode == 2
    error = orjson.loads(out.stdout.splitlines()[-1])["error"]
    assert "check the user and password" in error
    assert wrong not in out.stdout + out.stderr and PASSWORD not in out.stdout + out.stderr


def test_tls_files_with_a_plain_url_are_refused(certs):
    with pytest.raises(ValueError, match="rediss://"):
        RedisTarget("redis://127.0.0.1:6379/0", ca_file=str(certs.ca))


def test_a_missing_tls_file_is_a_clear_cli_error(small_log, tmp_path):
    out = pulse("replay", str(small_log), "--redis", "rediss://127.0.0.1:1/0",
                env={"PULSE_REDIS_TLS_CA_FILE": str(tmp_path / "nope.crt")})
    assert out.returncode == 2
    assert "PULSE_REDIS_TLS_CA_FILE names" in orjson.loads(out.stdout.splitlines()[-1])["error"]


def test_an_unreadable_password_file_is_a_clear_cli_error(small_log, tmp_path):
    out = pulse("replay", str(small_log), "--redis", "redis://127.0.0.1:1/0",
                env={"PULSE_REDIS_PASSWORD_FILE": str(tmp_path / "nope")})
    assert out.returncode == 2
    assert "cannot be read" in orjson.loads(out.stdout.splitlines()[-1])["error"]


def test_pulse_config_masks_every_secret(tmp_path):
    sasl = "Sasl-" + secrets.token_hex(8)
    admin = "Admin-" + secrets.token_hex(8)
    out = pulse("config", env={"PULSE_REDIS_URL": f"rediss://pulse:{PASSWORD}@cache:6380/0", "PULSE_KAFKA_SASL_PASSWORD": sasl,
                               "PULSE_KAFKA_OPTIONS": orjson.dumps({"sasl.oauthbearer.client.secret": sasl + "x"}).decode(),
                               "PULSE_COLLECT_ADMIN_TOKEN": admin})
    assert out.returncode == 0, out.stderr
    doc = orjson.loads(out.stdout.splitlines()[-1])
    assert doc["redis_url"] == "rediss://pulse:***@cache:6380/0"
    assert doc["kafka_sasl_password"] == "***" and doc["collect_admin_token"] == "***"
    assert sasl not in out.stdout + out.stderr and PASSWORD not in out.stdout and admin not in out.stdout + out.stderr


def test_log_lines_and_uncaught_tracebacks_are_scrubbed():
    code = (
        "import logging, sys\n"
        "from pulse.flows.redact import REDACTOR\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        f"REDACTOR.add({PASSWORD!r}); REDACTOR.install()\n"
        f"logging.getLogger('x').warning('connecting with %s', {PASSWORD!r})\n"
        f"raise RuntimeError('AUTH ' + {PASSWORD!r} + ' refused')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "connecting with ***" in out.stderr and "RuntimeError: AUTH *** refused" in out.stderr
    assert PASSWORD not in out.stderr


@pytest.fixture(scope="module")
def tls_cluster(certs, tmp_path_factory):
    cluster = TlsRedisCluster(tmp_path_factory.mktemp("tls-cluster"), certs, PASSWORD)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_a_redis_cluster_over_tls_as_an_acl_user_takes_writes_on_every_node(tls_cluster, certs):
    store = RedisStore(RedisTarget(tls_cluster.url(), ca_file=str(certs.ca)))
    store.add([Put(f"pulse:user:{{u{n}}}:recs", b"{}") for n in range(60)])
    store.close()
    reader = RedisCluster(host="127.0.0.1", port=tls_cluster.ports[1], ssl=True, ssl_ca_certs=str(certs.ca),
                          username="pulse", password=PASSWORD)
    assert all(reader.get(f"pulse:user:{{u{n}}}:recs") == b"{}" for n in range(60))
    assert all(tls_cluster.node(i).dbsize() > 0 for i in range(3))


def test_a_plain_connection_to_a_tls_port_says_to_use_rediss(tls_redis):
    problem = ping(f"redis://pulse:{PASSWORD}@127.0.0.1:{tls_redis.port}/0", timeout_s=2)
    assert problem is not None and PASSWORD not in problem
    assert "rediss://" in problem
