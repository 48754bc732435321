"""The collector's pure steps (operators/intake.py) and its rate limiter: bodies cut into
events, stamps, and verdicts that are the flow's own, byte for byte."""

from __future__ import annotations

import gzip
import time

import orjson
import pytest

from pulse.flows.collect import ClientBuckets
from pulse.operators.events import Event, Raw, parse
from pulse.operators.intake import CONSENT_FIELDS, BodyError, Stamps, admit, hash_ip, inflate, split

NOW = int(time.time() * 1000)
GOOD = {"user_id": "u1", "type": "view", "ts": NOW - 1000, "item_id": "sku-1", "event_id": "e1"}


def test_a_json_array_is_its_elements():
    assert split(orjson.dumps([GOOD, GOOD]), 10) == [GOOD, GOOD]


def test_one_object_is_one_event_even_over_several_lines():
    assert split(orjson.dumps(GOOD, option=orjson.OPT_INDENT_2), 10) == [GOOD]


def test_ndjson_lines_are_events_and_blank_lines_are_skipped():
    body = orjson.dumps(GOOD) + b"\n\n" + orjson.dumps({**GOOD, "event_id": "e2"}) + b"\r\n"
    assert [c["event_id"] for c in split(body, 10)] == ["e1", "e2"]


def test_a_bad_ndjson_line_is_its_own_invalid_json_and_the_others_stand():
    out = split(orjson.dumps(GOOD) + b"\n{oops\n" + orjson.dumps(GOOD), 10)
    assert out[0] == GOOD and out[2] == GOOD
    assert out[1].reason == "invalid_json" and out[1].position == 1


def test_a_broken_array_is_a_400():
    with pytest.raises(BodyError) as e:
        split(b'[{"user_id": "u1"},', 10)
    assert e.value.status == 400 and e.value.reason == "invalid_json"


def test_an_empty_body_is_a_400():
    with pytest.raises(BodyError) as e:
        split(b"  \n ", 10)
    assert (e.value.status, e.value.reason) == (400, "empty_body")


@pytest.mark.parametrize("body", [orjson.dumps([GOOD] * 11), b"\n".join([orjson.dumps(GOOD)] * 11)], ids=["array", "ndjson"])
def test_more_events_than_the_limit_is_a_413(body):
    with pytest.raises(BodyError) as e:
        split(body, 10)
    assert (e.value.status, e.value.reason) == (413, "too_many_events")
    assert "11 events; the limit is 10" in e.value.detail


def test_gzip_is_inflated():
    assert inflate(gzip.compress(b"[1, 2]"), "gzip", 100) == b"[1, 2]"


def test_a_gzip_bomb_stops_at_the_limit():
    bomb = gzip.compress(b" " * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(BodyError) as e:
        inflate(bomb, "gzip", 1 << 20)
    assert (e.value.status, e.value.reason) == (413, "body_too_large")


def test_truncated_gzip_is_a_400():
    with pytest.raises(BodyError) as e:
        inflate(gzip.compress(orjson.dumps([GOOD] * 50))[:-12], "gzip", 1 << 20)
    assert (e.value.status, e.value.reason) == (400, "invalid_gzip")
    assert "truncated" in e.value.detail


def test_an_unknown_encoding_is_a_415():
    with pytest.raises(BodyError) as e:
        inflate(b"x", "br", 100)
    assert e.value.status == 415 and "'br'" in e.value.detail


def test_stamps_are_added_and_the_server_user_agent_wins():
    out = admit([{**GOOD, "user_agent": "mine"}], Stamps(received_at=NOW, user_agent="Mozilla/5.0", ip_hash="ab12"))
    sent = orjson.loads(out.accepted[0].value)
    assert sent == {**GOOD, "user_agent": "Mozilla/5.0", "received_at": NOW, "ip_hash": "ab12"}


def test_accepted_events_are_keyed_by_their_user_as_the_flow_reads_it():
    out = admit([{**GOOD, "user_id": 42}], Stamps(received_at=NOW))
    assert out.accepted[0].key == b"42"


def test_what_is_accepted_parses_in_the_flow_with_the_extra_fields_kept():
    out = admit([{**GOOD, "recomm_id": "r-9", "anonymous_id": "a-1"}], Stamps(received_at=NOW))
    value = out.accepted[0].value
    assert isinstance(parse(Raw("events/0", 0, value)), Event)
    assert orjson.loads(value)["recomm_id"] == "r-9"


@pytest.mark.parametrize(
    "candidate",
    [
        {**GOOD, "blob": "x" * 70_000},
        7,
        {"type": "view", "ts": NOW},
        {**GOOD, "dwell_ms": "long"},
        {**GOOD, "scroll_pct": 140},
        {**GOOD, "type": "teleport"},
        {**GOOD, "ts": NOW // 1000},
        {**GOOD, "user_agent": "Googlebot/2.1"},
        {**GOOD, "user_id": ""},
    ],
    ids=["payload_too_large", "not_an_object", "missing_field", "invalid_type", "invalid_value", "unknown_event_type",
         "ts_out_of_range", "bot_user_agent", "empty_id"],
)  # fmt: skip
def test_a_rejection_is_the_flows_dead_letter_for_the_same_bytes(candidate):
    stamps = Stamps(received_at=NOW)
    [rejection] = admit([candidate], stamps).rejected
    if isinstance(candidate, dict):
        stamps.apply(candidate)
    flow = parse(Raw("http", 0, orjson.dumps(candidate)))
    assert (rejection.index, rejection.reason, rejection.field, rejection.detail) == (0, flow.reason, flow.field, flow.detail)


def test_rejections_carry_their_index_in_the_body():
    out = admit([GOOD, {**GOOD, "type": "teleport"}, GOOD, 5], Stamps(received_at=NOW))
    assert len(out.accepted) == 2
    assert [(r.index, r.reason) for r in out.rejected] == [(1, "unknown_event_type"), (3, "not_an_object")]


def test_an_opt_out_is_forwarded_stripped_of_everything_but_ids_type_and_time():
    event = {**GOOD, "consent": False, "anonymous_id": "a-1", "page": "/secret", "price": 3}
    out = admit([event], Stamps(received_at=NOW))
    assert not out.rejected and out.consent_withdrawals == 1
    sent = orjson.loads(out.accepted[0].value)
    assert set(sent) == {*CONSENT_FIELDS, "consent"} and sent["consent"] is False
    assert parse(Raw("events/0", 0, out.accepted[0].value)).reason == "no_consent"


def test_the_ip_hash_is_keyed():
    assert hash_ip(b"k1", "10.0.0.1") == hash_ip(b"k1", "10.0.0.1")
    assert hash_ip(b"k1", "10.0.0.1") != hash_ip(b"k2", "10.0.0.1")
    assert "10.0.0.1" not in hash_ip(b"k1", "10.0.0.1") and len(hash_ip(b"k1", "10.0.0.1")) == 32


def test_a_client_over_its_rate_waits_and_others_do_not():
    buckets = ClientBuckets(rate=10.0, burst=3)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == pytest.approx(0.1)
    assert buckets.take("b", 0.0) == 0.0
    assert buckets.take("a", 0.1) == 0.0


def test_the_rate_limiter_forgets_refilled_clients_when_full():
    buckets = ClientBuckets(rate=1.0, burst=2, max_clients=2)
    buckets.take("a", 0.0)
    buckets.take("b", 5.0)
    assert len(buckets) == 2
    buckets.take("c", 5.0)  # a has refilled (2 s) and is forgotten to make room
    assert len(buckets) == 2
