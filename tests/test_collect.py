"""The HTTP collector against a real Kafka broker: what it takes, what it refuses and
why, its limits, stamps, metrics, and a broker outage (503, then nothing lost)."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest

from collect_server import CollectorServer, post, read_topic, request
from conftest import free_port
from pulse.operators.events import REASONS

pytestmark = pytest.mark.kafka

NOW = int(time.time() * 1000)
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36"


def event(n: int = 0, **fields) -> dict:
    return {"user_id": f"u{n % 7}", "type": "view", "ts": NOW - 1000 + n, "item_id": f"sku-{n % 11}", "event_id": f"e{n}", **fields}


@pytest.fixture
def topic(kafka_broker) -> str:
    return kafka_broker.create_topic(f"collect-{uuid.uuid4().hex[:8]}", partitions=3)


@pytest.fixture
def collector(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic) as server:
        yield server


def test_a_json_array_is_answered_202_and_reaches_the_topic_keyed_by_user(collector, kafka_broker, topic):
    batch = [event(n) for n in range(50)]
    reply = post(collector, batch)
    assert reply.status == 202 and reply.json() == {"accepted": 50, "rejected": []}
    msgs = read_topic(kafka_broker.bootstrap, topic, 50)
    assert len(msgs) == 50
    sent = {e["event_id"]: e for e in batch}
    for m in msgs:
        value = orjson.loads(m.value())
        assert m.key().decode() == value["user_id"] == sent[value["event_id"]]["user_id"]
        assert {k: v for k, v in value.items() if k != "received_at"} == sent[value["event_id"]]
        assert abs(value["received_at"] - time.time() * 1000) < 60_000


def test_one_users_events_share_a_partition(collector, kafka_broker, topic):
    assert post(collector, [event(n) for n in range(70)]).status == 202
    partitions: dict = {}
    for m in read_topic(kafka_broker.bootstrap, topic, 70):
        partitions.setdefault(m.key(), set()).add(m.partition())
    assert len(partitions) == 7 and all(len(p) == 1 for p in partitions.values())


def test_ndjson_sent_as_text_plain_like_send_beacon_is_taken(collector):
    body = b"\n".join(orjson.dumps(event(n)) for n in range(3))
    reply = post(collector, body, {"Content-Type": "text/plain;charset=UTF-8"})
    assert reply.status == 202 and reply.json()["accepted"] == 3


def test_one_event_object_is_taken(collector):
    reply = post(collector, event(1))
    assert reply.status == 202 and reply.json() == {"accepted": 1, "rejected": []}


def test_a_gzip_body_is_taken(collector):
    reply = post(collector, gzip.compress(orjson.dumps([event(n) for n in range(20)])), {"Content-Encoding": "gzip"})
    assert reply.status == 202 and reply.json()["accepted"] == 20


def test_bad_gzip_is_a_400_that_says_so(collector):
    reply = post(collector, b"\x1f\x8b not really gzip", {"Content-Encoding": "gzip"})
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_gzip" and "gzip" in reply.json()["detail"]


#: One event per reason the collector can give; the flow alone sees duplicate_event
#: (it needs the user's state) and invalid_record (adapter formats only).
REJECTED = {
    "payload_too_large": orjson.dumps(event(0, blob="x" * 70_000)),
    "invalid_json": b'{"user_id": "u1", "type": ',
    "not_an_object": b"[1, 2]",
    "missing_field": orjson.dumps({"user_id": "u1", "type": "view"}),
    "invalid_type": orjson.dumps(event(0, dwell_ms="long")),
    "invalid_value": orjson.dumps(event(0, scroll_pct=140)),
    "unknown_event_type": orjson.dumps(event(0, type="teleport")),
    "ts_out_of_range": orjson.dumps(event(0, ts=NOW // 1000)),
    "bot_user_agent": orjson.dumps(event(0, user_agent="Mozilla/5.0 (compatible; Googlebot/2.1)")),
}


def test_the_collector_covers_every_reason_but_the_flows_own():
    assert set(REJECTED) == set(REASONS) - {"duplicate_event", "invalid_record", "no_consent"}


@pytest.mark.parametrize("reason", sorted(REJECTED))
def test_a_bad_event_is_rejected_with_the_flows_reason_and_the_good_ones_pass(collector, reason):
    body = orjson.dumps(event(1)) + b"\n" + REJECTED[reason].replace(b"\n", b"") + b"\n" + orjson.dumps(event(2))
    if reason == "not_an_object":
        body = orjson.dumps([event(1), 5, event(2)])
    reply = post(collector, body, {"Content-Type": "application/x-ndjson"})
    assert reply.status == 202
    doc = reply.json()
    assert doc["accepted"] == 2
    [rejection] = doc["rejected"]
    assert rejection["index"] == 1 and rejection["reason"] == reason and rejection["detail"]
    if reason in ("missing_field", "invalid_type", "invalid_value", "unknown_event_type", "ts_out_of_range", "bot_user_agent"):
        assert rejection["field"] in ("ts", "dwell_ms", "scroll_pct", "type", "user_agent")


def test_consent_false_is_accepted_and_forwarded_without_its_payload(collector, kafka_broker, topic):
    reply = post(collector, [event(3, consent=False, anonymous_id="a-3", page="/private", price=12.5)])
    assert reply.json() == {"accepted": 1, "rejected": []}
    [msg] = read_topic(kafka_broker.bootstrap, topic, 1)
    value = orjson.loads(msg.value())
    assert set(value) == {"user_id", "anonymous_id", "type", "ts", "received_at", "consent"} and value["consent"] is False


def forget(n: int) -> dict:
    return {"user_id": f"u{n}", "type": "forget", "ts": NOW}


ADMIN_TOKEN = "op-" + uuid.uuid4().hex


def test_a_forget_from_a_browser_is_refused_with_its_reason_and_never_produced(collector, kafka_broker, topic):
    reply = post(collector, [event(1), forget(2), event(3)])
    assert reply.status == 202
    doc = reply.json()
    assert doc["accepted"] == 2
    [rejection] = doc["rejected"]
    assert rejection["index"] == 1 and rejection["reason"] == "forget_refused" and rejection["field"] == "type"
    assert "no operator token" in rejection["detail"] and "pulse forget" in rejection["detail"]
    values = [orjson.loads(m.value()) for m in read_topic(kafka_broker.bootstrap, topic, 2)]
    assert sorted(v["user_id"] for v in values) == ["u1", "u3"]


def test_refused_forgets_are_counted_by_reason(collector):
    post(collector, [forget(1), forget(2)])
    text = request(f"{collector.url}/metrics").body.decode()
    assert 'pulse_collect_events_rejected_total{reason="forget_refused"} 2.0' in text
    assert collector.collector.rejected["forget_refused"] == 2


def test_a_forget_with_the_operator_token_reaches_the_topic(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_admin_token=ADMIN_TOKEN) as server:
        reply = post(server, [forget(4)], {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert reply.json() == {"accepted": 1, "rejected": []}
        [msg] = read_topic(kafka_broker.bootstrap, topic, 1)
        assert msg.key() == b"u4" and orjson.loads(msg.value())["type"] == "forget"


def test_a_wrong_operator_token_lets_no_forget_through_and_no_answer_shows_the_token(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_admin_token=ADMIN_TOKEN) as server:
        reply = post(server, [forget(5), event(6)], {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}x"})
        doc = reply.json()
        assert doc["accepted"] == 1 and [r["reason"] for r in doc["rejected"]] == ["forget_refused"]
        assert "not the collector's operator token" in doc["rejected"][0]["detail"]
        [msg] = read_topic(kafka_broker.bootstrap, topic, 1)
        assert msg.key() == b"u6"
        metrics = request(f"{server.url}/metrics").body
        assert ADMIN_TOKEN.encode() not in reply.body + metrics and ADMIN_TOKEN[:-1].encode() not in reply.body + metrics


def test_a_body_over_the_limit_is_a_413_and_nothing_is_produced(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_max_body_bytes=4096) as server:
        reply = post(server, [event(n) for n in range(100)])
        assert reply.status == 413 and reply.json()["error"] == "body_too_large"
        assert "limit is 4096" in reply.json()["detail"]
        assert server.collector.accepted == 0 and server.collector.producer.depth() == 0


def test_a_small_gzip_body_that_inflates_over_the_limit_is_a_413(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_max_body_bytes=4096) as server:
        body = gzip.compress(orjson.dumps([event(n) for n in range(100)]))
        assert len(body) < 4096
        reply = post(server, body, {"Content-Encoding": "gzip"})
        assert reply.status == 413 and "inflates to over 4096" in reply.json()["detail"]


def test_more_events_than_allowed_is_a_413(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_max_events=10) as server:
        reply = post(server, [event(n) for n in range(11)])
        assert reply.status == 413 and reply.json()["error"] == "too_many_events"


def test_an_unsupported_content_type_is_a_415(collector):
    reply = post(collector, b"a=1", {"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 415 and "text/plain" in reply.json()["detail"]


def test_a_client_over_its_rate_gets_429_with_retry_after(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_rate_per_s=0.5, collect_rate_burst=3) as server:
        statuses = [post(server, event(n)).status for n in range(4)]
        assert statuses == [202, 202, 202, 429]
        reply = post(server, event(9))
        assert reply.status == 429 and int(reply.headers["Retry-After"]) >= 1
        assert reply.json()["error"] == "rate_limited"


def test_cors_allows_the_configured_origin_only(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_cors_origins=("https://shop.example",)) as server:
        def preflight(origin: str):
            return request(f"{server.url}/events", method="OPTIONS", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})

        ok = preflight("https://shop.example")
        assert ok.status == 200 and ok.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        refused = preflight("https://evil.example")
        assert refused.status == 400 and "Access-Control-Allow-Origin" not in refused.headers
        reply = post(server, event(1), {"Origin": "https://shop.example"})
        assert reply.status == 202 and reply.headers["Access-Control-Allow-Origin"] == "https://shop.example"


def test_a_stamped_headless_user_agent_is_rejected_as_a_bot(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_stamp_user_agent=True) as server:
        bot = post(server, event(1), {"User-Agent": HEADLESS}).json()
        assert bot["accepted"] == 0 and bot["rejected"][0]["reason"] == "bot_user_agent"
        human = post(server, event(2), {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}).json()
        assert human["accepted"] == 1
        [msg] = read_topic(kafka_broker.bootstrap, topic, 1)
        assert orjson.loads(msg.value())["user_agent"] == "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"


def test_the_ip_is_stamped_only_as_a_keyed_hash_when_asked(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_stamp_ip="hash", collect_ip_hash_key="k3y") as server:
        assert post(server, [event(1), event(2)]).json()["accepted"] == 2
        values = [orjson.loads(m.value()) for m in read_topic(kafka_broker.bootstrap, topic, 2)]
        assert len({v["ip_hash"] for v in values}) == 1 and len(values[0]["ip_hash"]) == 32
        assert all("ip" not in v and "127.0.0.1" not in orjson.dumps(v).decode() for v in values)


def test_the_raw_ip_is_stamped_when_asked(kafka_broker, topic):
    with CollectorServer(kafka_broker.bootstrap, topic, collect_stamp_ip="ip") as server:
        assert post(server, event(1)).json()["accepted"] == 1
        [msg] = read_topic(kafka_broker.bootstrap, topic, 1)
        assert orjson.loads(msg.value())["ip"] == "127.0.0.1"


def test_hashing_ips_without_a_key_is_refused_with_what_to_set(kafka_broker, topic):
    with pytest.raises(ValueError, match="PULSE_COLLECT_IP_HASH_KEY"):
        CollectorServer(kafka_broker.bootstrap, topic, collect_stamp_ip="hash")


def test_metrics_count_requests_events_by_reason_latency_and_queue(collector):
    post(collector, [event(1), event(2, type="teleport"), event(3, ts=5)])
    post(collector, b"nope", {"Content-Encoding": "gzip"})
    assert collector.wait_delivered(1) == 1
    text = request(f"{collector.url}/metrics").body.decode()
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("pulse_")}
    assert lines['pulse_collect_requests_total{status="202"}'] == 1
    assert lines['pulse_collect_requests_total{status="400"}'] == 1
    assert lines["pulse_collect_events_accepted_total"] == 1
    assert lines['pulse_collect_events_rejected_total{reason="unknown_event_type"}'] == 1
    assert lines['pulse_collect_events_rejected_total{reason="ts_out_of_range"}'] == 1
    assert lines["pulse_collect_produce_latency_seconds_count"] == 1
    assert lines["pulse_collect_request_seconds_count"] == 2
    assert lines["pulse_collect_queue_depth"] == 0
    assert lines["pulse_collect_delivered_total"] == 1


def test_healthz_answers_with_the_queue(collector):
    reply = request(f"{collector.url}/healthz")
    assert reply.status == 200 and reply.json()["status"] == "ok" and reply.json()["queue_depth"] == 0


def test_the_tracker_is_served_as_javascript(collector):
    reply = request(f"{collector.url}/pulse.js")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/javascript")
    assert b"export function init" in reply.body


@pytest.fixture
def outage(kafka_broker, topic):
    """A collector with room for 300 undelivered events and a 1 s delivery timeout; two
    batches go through, then the broker stops: batches are accepted until the queue is
    full, then answered 503; after a pause (deliveries time out) the broker comes back."""
    with CollectorServer(kafka_broker.bootstrap, topic, collect_queue_max=300, collect_message_timeout_ms=1000) as server:
        before = [[event(n) for n in range(b * 50, b * 50 + 50)] for b in range(2)]
        assert all(post(server, batch).status == 202 for batch in before)
        assert server.wait_delivered(100) == 100
        kafka_broker.stop()
        try:
            replies, batches = [], []
            for b in range(2, 12):
                batch = [event(n) for n in range(b * 50, b * 50 + 50)]
                batches.append(batch)
                replies.append(post(server, batch))
            time.sleep(3)  # past the delivery timeout: deliveries fail and are produced again
            failures_while_down = server.collector.producer.failures
        finally:
            kafka_broker.start()
        accepted = before + [b for b, r in zip(batches, replies) if r.status == 202]
        expected = sum(len(b) for b in accepted)
        delivered = server.wait_delivered(expected, timeout=60)
        yield dict(server=server, replies=replies, batches=batches, accepted=accepted, expected=expected,
                   delivered=delivered, failures_while_down=failures_while_down, msgs=read_topic(kafka_broker.bootstrap, topic, expected))


def test_a_full_queue_is_answered_503_with_retry_after(outage):
    statuses = [r.status for r in outage["replies"]]
    assert statuses == [202] * 6 + [503] * 4  # 100 delivered, then 6 batches fill the 300 places
    refused = outage["replies"][-1]
    assert refused.headers["Retry-After"] == "1" and refused.json()["error"] == "queue_full"


def test_failed_deliveries_are_counted_and_produced_again(outage):
    assert outage["failures_while_down"] >= 300  # every queued event timed out at least once
    text = request(f"{outage['server'].url}/metrics").body.decode()
    assert f"pulse_collect_delivery_failures_total {float(outage['server'].collector.producer.failures)}" in text


def test_after_the_outage_every_accepted_event_is_on_the_topic_once(outage):
    assert outage["delivered"] == outage["expected"] == 400
    ids = [orjson.loads(m.value())["event_id"] for m in outage["msgs"]]
    assert len(ids) == len(set(ids)) == 400
    assert set(ids) == {e["event_id"] for batch in outage["accepted"] for e in batch}


def test_a_refused_batch_leaves_nothing_on_the_topic(outage):
    refused = {e["event_id"] for b, r in zip(outage["batches"], outage["replies"]) if r.status == 503 for e in b}
    assert len(refused) == 200
    assert not refused & {orjson.loads(m.value())["event_id"] for m in outage["msgs"]}


def test_the_command_serves_until_sigterm_then_prints_its_summary(kafka_broker, topic):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pulse", "collect", "--brokers", kafka_broker.bootstrap, "--topic", topic,
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if request(f"http://127.0.0.1:{port}/healthz").status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        body = orjson.dumps([event(1), event(2, type="teleport")])
        reply = request(f"http://127.0.0.1:{port}/events", body, {"Content-Type": "application/json"})
        assert reply.status == 202
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    summary = orjson.loads(out.strip().splitlines()[-1])
    assert summary["requests"] == 1 and summary["events_accepted"] == 1 and summary["delivered"] == 1
    assert summary["rejected_by_reason"] == {"unknown_event_type": 1} and summary["undelivered"] == 0


def test_an_unreachable_broker_is_a_clear_error():
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "pulse", "collect", "--brokers", f"127.0.0.1:{port}", "--connect-timeout", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"cannot reach the Kafka broker at 127.0.0.1:{port}" in " ".join(out.stderr.split())
    assert "error" in orjson.loads(out.stdout.strip().splitlines()[-1])


def test_the_demo_shop_without_a_reachable_redis_is_a_clear_error(kafka_broker, topic):
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "pulse", "collect", "--brokers", kafka_broker.bootstrap, "--topic", topic, "--demo-shop",
                          "--redis", f"redis://pulse:s3cret@127.0.0.1:{port}/0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    said = " ".join(out.stderr.split())
    assert f"cannot reach Redis at 127.0.0.1:{port}/0" in said and "--redis" in said
    assert "s3cret" not in out.stderr + out.stdout
