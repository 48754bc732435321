"""The event contract: what is accepted, and the reason given for what is not."""

import orjson
import pytest

from pulse.operators.events import MAX_PAYLOAD_BYTES, REASONS, DeadLetter, Event, Raw, parse
from pulse.operators.formats import Format, movielens_genres

GOOD = {"user_id": "u1", "type": "view", "ts": 1_767_571_200_000, "item_id": "i1"}


def raw(obj, position=7) -> Raw:
    return Raw("log.jsonl", position, obj if isinstance(obj, bytes) else orjson.dumps(obj))


def reason_of(obj) -> tuple:
    out = parse(raw(obj))
    assert isinstance(out, DeadLetter), out
    return out.reason, out.field


def test_a_minimal_event_is_accepted():
    ev = parse(raw(GOOD))
    assert isinstance(ev, Event)
    assert (ev.user_id, ev.type, ev.ts, ev.item_id, ev.seq) == ("u1", "view", 1_767_571_200_000, "i1", 7)


def test_iso_timestamps_with_a_zone_become_epoch_ms():
    ev = parse(raw({**GOOD, "ts": "2026-01-05T00:00:00+01:00"}))
    assert ev.ts == 1_767_567_600_000


def test_iso_timestamp_without_a_zone_is_refused():
    assert reason_of({**GOOD, "ts": "2026-01-05T00:00:00"}) == ("invalid_value", "ts")


def test_unknown_fields_are_ignored_and_numeric_ids_accepted():
    ev = parse(raw({**GOOD, "user_id": 42, "colour": "red"}))
    assert ev.user_id == "42"


def test_category_may_be_a_list():
    assert parse(raw({**GOOD, "category": ["Drama", "War"]})).category == ("Drama", "War")


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b'{"user_id": "u1", "type": ', ("invalid_json", None)),
        (b"[1, 2]", ("not_an_object", None)),
        ({"type": "view", "ts": 1_767_571_200_000}, ("missing_field", "user_id")),
        ({"user_id": "u1", "ts": 1_767_571_200_000}, ("missing_field", "type")),
        ({"user_id": "u1", "type": "view"}, ("missing_field", "ts")),
        ({**GOOD, "type": "hover"}, ("unknown_event_type", "type")),
        ({**GOOD, "user_id": 1.5}, ("invalid_type", "user_id")),
        ({**GOOD, "ts": "yesterday"}, ("invalid_value", "ts")),
        ({**GOOD, "dwell_ms": "long"}, ("invalid_type", "dwell_ms")),
        ({**GOOD, "dwell_ms": -1}, ("invalid_value", "dwell_ms")),
        ({**GOOD, "scroll_pct": 101}, ("invalid_value", "scroll_pct")),
        ({**GOOD, "user_id": ""}, ("invalid_value", "user_id")),
        ({**GOOD, "user_id": "x" * 129}, ("invalid_value", "user_id")),
        ({**GOOD, "ts": 946_684_799_999}, ("ts_out_of_range", "ts")),
        ({**GOOD, "ts": 1_767_571_200}, ("ts_out_of_range", "ts")),  # seconds, not ms
        ({**GOOD, "ts": 4_102_444_800_000}, ("ts_out_of_range", "ts")),
        ({**GOOD, "user_agent": "Googlebot/2.1"}, ("bot_user_agent", "user_agent")),
        ({**GOOD, "consent": False}, ("no_consent", None)),
    ],
)
def test_bad_input_gets_a_specific_reason(payload, expected):
    assert reason_of(payload) == expected


def test_payloads_over_64_kib_are_refused_before_parsing():
    big = orjson.dumps({**GOOD, "note": "x" * MAX_PAYLOAD_BYTES})
    assert reason_of(big) == ("payload_too_large", None)


def test_a_dead_letter_keeps_the_original_payload_and_says_how_to_fix_it():
    dead = parse(raw({**GOOD, "ts": 1_767_571_200}))
    doc = orjson.loads(dead.to_json())
    assert orjson.loads(doc["payload"])["ts"] == 1_767_571_200
    assert (doc["source"], doc["position"]) == ("log.jsonl", 7)
    assert "milliseconds" in doc["detail"]


def test_opted_out_events_do_not_keep_their_payload():
    dead = parse(raw({**GOOD, "consent": False}))
    assert dead.payload == b""


def test_every_reason_is_documented():
    assert {"invalid_json", "missing_field", "duplicate_event", "no_consent"} <= set(REASONS)


def test_movielens_lines_become_rate_events_with_genres():
    genres = movielens_genres(b"242|Kolya (1996)|24-Jan-1997||http://x|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n")
    ev = Format.movielens(genres).parse(Raw("u.data", 1, b"196\t242\t3\t881250949"))
    assert (ev.user_id, ev.item_id, ev.type, ev.rating, ev.ts, ev.category) == ("196", "242", "rate", 3.0, 881_250_949_000, ("Comedy",))


def test_a_broken_movielens_line_is_an_invalid_record():
    dead = Format.movielens().parse(Raw("u.data", 3, b"196\t242\tthree"))
    assert dead.reason == "invalid_record"


def test_taobao_behaviours_map_to_event_types():
    fmt = Format.taobao()
    types = [fmt.parse(Raw("t.csv", n, f"1,2,3,{b},1511544070".encode())).type for n, b in enumerate(["pv", "cart", "fav", "buy"])]
    assert types == ["view", "add_to_cart", "bookmark", "purchase"]
    assert fmt.parse(Raw("t.csv", 9, b"1,2,3,like,1511544070")).reason == "invalid_record"
