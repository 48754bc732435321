"""Property-based fuzzing (hypothesis) of the parser, the validator and the whole flow:
whatever comes in, nothing crashes, every refused record is a dead letter with a
documented reason, and what is accepted keeps the contract (ids that fit in a key,
values in range). Kept to a few seconds; ``benchmarks/fuzz.py`` runs longer."""

from __future__ import annotations

import json
import math

import orjson
import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import dump_redis
from pulse.flows.config import Settings
from pulse.flows.replay import replay
from pulse.operators.events import EVENT_TYPES, MAX_PAYLOAD_BYTES, REASONS, DeadLetter, Event, Raw, parse
from pulse.state.keys import KeySchema, id_problem

TS = 1_767_571_200_000
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Ids with the characters that have broken keys and logs, around ordinary ones.
edge_chars = st.sampled_from(list(":*{}? \n\r\t\x00\x1b\x7f\u00a0\u200b\u202e\u2066\u2028\ufeff\U0001f642é用"))
ids = st.one_of(
    st.text(min_size=0, max_size=12),
    st.lists(st.one_of(edge_chars, st.characters(codec="utf-8")), max_size=12).map("".join),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just("x" * 300),
)
numbers = st.one_of(st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=True, allow_infinity=True),
                    st.just(10**30), st.just(-0.0))
anything = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
FIELDS = {
    "user_id": ids, "item_id": ids, "type": st.one_of(st.sampled_from(EVENT_TYPES), st.text(max_size=8)),
    "ts": st.one_of(st.just(TS), numbers, st.text(max_size=25), st.just("2026-01-05T10:00:00Z")),
    "category": st.one_of(ids, st.lists(ids, max_size=18)), "session_id": ids, "event_id": ids,
    "dwell_ms": numbers, "scroll_pct": numbers, "price": numbers, "rating": numbers,
    "device": st.text(max_size=70), "user_agent": st.text(max_size=40), "consent": st.one_of(st.booleans(), anything),
}


@st.composite
def event_like(draw) -> dict:
    """A valid event with some fields replaced by hostile values, some dropped and
    some nested junk added."""
    obj = {"user_id": "u1", "type": "view", "ts": TS, "item_id": "i1"}
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=6, unique=True)):
        obj[name] = draw(FIELDS[name])
    for name in draw(st.lists(st.sampled_from(["user_id", "type", "ts"]), max_size=1)):
        obj.pop(name, None)
    if draw(st.booleans()):
        obj[draw(st.text(max_size=5))] = draw(anything)
    return obj


def as_json(obj, ascii_only: bool) -> bytes:
    # the standard library writes NaN and Infinity (as hostile producers do; orjson would
    # not) and, unescaped, lone surrogates as bytes that are no UTF-8
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


event_payloads = st.builds(as_json, event_like(), st.booleans())


def check(out, payload: bytes) -> None:
    """The contract of parse's answer, whatever the input."""
    assert isinstance(out, (Event, DeadLetter))
    if isinstance(out, DeadLetter):
        assert out.reason in REASONS and out.detail
        assert out.payload == (b"" if out.reason == "no_consent" else payload)
        return
    for value, limit in [(out.user_id, 128), (out.item_id, 256), *((c, 128) for c in out.category)]:
        if value is not None:
            assert id_problem(value, limit) is None, value
    key = KeySchema().recs(out.user_id)
    assert key.count("{") == 1 and key.count("}") == 1 and key.isprintable()
    assert out.type in EVENT_TYPES
    for value, low, high in [(out.dwell_ms, 0, 86_400_000), (out.scroll_pct, 0, 100), (out.price, 0, 1e9), (out.rating, 0, 10)]:
        assert value is None or (math.isfinite(value) and low <= value <= high)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_are_an_event_or_a_dead_letter_with_a_reason(payload):
    check(parse(Raw("fuzz", 1, payload)), payload)


@FAST
@given(anything)
def test_any_json_value_is_an_event_or_a_dead_letter_with_a_reason(value):
    payload = json.dumps(value).encode()
    check(parse(Raw("fuzz", 1, payload)), payload)


@FAST
@given(event_payloads)
def test_hostile_field_values_never_pass_the_contract(payload):
    check(parse(Raw("fuzz", 1, payload)), payload)


@FAST
@given(ids)
def test_an_accepted_id_is_the_trimmed_input_and_fits_in_one_hash_tag(user_id):
    out = parse(Raw("fuzz", 1, json.dumps({"user_id": user_id, "type": "view", "ts": TS}).encode("utf-8", "surrogatepass")))
    if isinstance(out, Event):
        assert out.user_id == str(user_id).strip()
        assert KeySchema().profile(out.user_id) == f"pulse:user:{{{out.user_id}}}:profile"
    else:
        assert (out.reason, out.field) in {("invalid_value", "user_id"), ("invalid_type", "user_id"), ("invalid_json", None)}


@pytest.mark.parametrize("depth, reason", [(1_000, None), (2_000, "invalid_json"), (100_000, "payload_too_large")])
def test_deep_nesting_is_ignored_within_the_parsers_limit_and_refused_beyond(depth, reason):
    # orjson parses up to 1,024 levels; an unknown field of any depth within that is ignored
    payload = b'{"user_id": "u1", "type": "view", "ts": %d, "x": %s%s}' % (TS, b"[" * depth, b"]" * depth)
    out = parse(Raw("fuzz", 1, payload))
    check(out, payload)
    assert (out.reason if isinstance(out, DeadLetter) else None) == reason


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"123456789012345678901234567890"])
def test_nan_infinity_and_huge_numbers_are_dead_letters(token):
    payload = b'{"user_id": "u1", "type": "view", "ts": %d, "dwell_ms": %s}' % (TS, token)
    out = parse(Raw("fuzz", 1, payload))
    assert isinstance(out, DeadLetter) and out.reason in {"invalid_json", "invalid_value"}


def test_a_ten_megabyte_line_is_refused_before_parsing():
    payload = b'{"user_id": "u1", "type": "view", "ts": %d, "note": "%s"}' % (TS, b"x" * 10_000_000)
    out = parse(Raw("fuzz", 1, payload))
    assert (out.reason, len(out.payload)) == ("payload_too_large", len(payload))
    assert str(MAX_PAYLOAD_BYTES) in out.detail


valid_events = st.lists(
    st.builds(lambda u, i, t, d: {"user_id": f"u{u}", "item_id": f"i{i}", "type": t, "ts": TS + d, "category": f"c{i % 3}"},
              st.integers(0, 5), st.integers(0, 8), st.sampled_from(["view", "click", "add_to_cart", "purchase"]),
              st.integers(0, 3_600_000)),
    min_size=1, max_size=30,
)
garbage_lines = st.lists(st.one_of(st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b.strip()),
                                   event_payloads.filter(lambda b: b"\n" not in b)), min_size=1, max_size=30)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(valid_events, garbage_lines, st.randoms(use_true_random=False))
def test_garbage_mixed_into_a_log_is_all_dead_lettered_and_leaves_the_valid_events_unaffected(
        tmp_path_factory, redis_server, valid, garbage, rnd):
    # Garbage that happens to be a valid event is not garbage: leave it out here.
    garbage = [g for g in garbage if not isinstance(parse(Raw("g", 1, g)), Event)]
    assume(garbage)
    clean = [orjson.dumps(v) for v in sorted(valid, key=lambda v: v["ts"])]
    mixed = list(clean)
    for g in garbage:
        mixed.insert(rnd.randrange(len(mixed) + 1), g)
    work = tmp_path_factory.mktemp("fuzzflow")
    dumps = []
    for name, lines in (("clean", clean), ("mixed", mixed)):
        path = work / f"{name}.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        url = redis_server.url(60 if name == "clean" else 61)
        redis.Redis.from_url(url).flushdb()
        summary = replay(path, "native", Settings(), url, str(work / f"{name}.dlq"))
        assert summary["events_in"] == len(lines)
        assert (summary["events_ok"], summary["events_dlq"]) == (len(clean), len(lines) - len(clean))
        reasons = [orjson.loads(d)["reason"] for d in (work / f"{name}.dlq").read_bytes().splitlines()]
        assert len(reasons) == summary["events_dlq"] and set(reasons) <= set(REASONS)
        # users' lists may differ by where batches end (README: what stays the same)
        dumps.append({k: v for k, v in dump_redis(url).items() if not k.endswith(":recs")})
    assert dumps[0] == dumps[1]
