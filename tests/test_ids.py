"""Ids cannot escape their key: the id rule of the key schema, as the validator applies
it to events and the key schema to every key it names."""

import json

import orjson
import pytest
import redis

from pulse.flows.config import Settings
from pulse.flows.replay import replay
from pulse.operators.events import DeadLetter, Event, Raw, parse
from pulse.state.keys import KeySchema, clean_id, id_problem

GOOD = {"user_id": "u1", "type": "view", "ts": 1_767_571_200_000, "item_id": "i1"}
HOSTILE = ["a\nb", "a\x00b", "a\x1b[31mb", "a\u202eb", "a\u2066b", "a\u200bb", "a\ufeffb", "a\u2028b", "a\u00a0b",
           "evil}:recs", "{x}", "a{b"]


def parsed(**fields):
    return parse(Raw("log.jsonl", 1, json.dumps({**GOOD, **fields}).encode()))


@pytest.mark.parametrize("bad", HOSTILE, ids=[repr(b) for b in HOSTILE])
def test_a_hostile_user_id_is_dead_lettered_as_invalid_value_naming_the_field(bad):
    out = parsed(user_id=bad)
    assert isinstance(out, DeadLetter)
    assert (out.reason, out.field) == ("invalid_value", "user_id")


@pytest.mark.parametrize("bad", HOSTILE, ids=[repr(b) for b in HOSTILE])
def test_a_hostile_item_id_is_dead_lettered_as_invalid_value_naming_the_field(bad):
    out = parsed(item_id=bad)
    assert (out.reason, out.field) == ("invalid_value", "item_id")


def test_a_hostile_category_is_dead_lettered_naming_the_field():
    out = parsed(category=["Drama", "x}y"])
    assert (out.reason, out.field) == ("invalid_value", "category")


def test_a_lone_surrogate_escape_in_an_id_is_refused_as_invalid_json():
    # JSON may carry "\\ud800"; it is no UTF-8 text, so the parser refuses the record
    assert parsed(user_id="a\ud800b").reason == "invalid_json"


def test_the_detail_says_which_character_where_without_echoing_it_raw():
    out = parsed(user_id="ab\ncd")
    assert "U+000A" in out.detail and "at 2" in out.detail
    assert "\n" not in out.detail


def test_whitespace_around_an_id_is_trimmed():
    ev = parsed(user_id="  u1 \t", item_id="\ni1\n", category=" Drama ")
    assert isinstance(ev, Event)
    assert (ev.user_id, ev.item_id, ev.category) == ("u1", "i1", ("Drama",))


def test_an_id_of_only_whitespace_is_refused():
    assert (parsed(user_id="   ").reason, parsed(user_id="   ").field) == ("invalid_value", "user_id")


def test_the_length_limit_applies_after_trimming():
    assert isinstance(parsed(user_id=" " + "x" * 128 + " "), Event)
    assert parsed(user_id="x" * 129).reason == "invalid_value"


@pytest.mark.parametrize("fine", ["a:b", "a*b", "a b", "?[x]", "über", "用户", "émoji🙂", "-1"])
def test_printable_ids_with_colons_stars_and_spaces_inside_are_kept_as_they_are(fine):
    ev = parsed(user_id=fine, item_id=fine)
    assert (ev.user_id, ev.item_id) == (fine, fine)


def test_the_key_schema_refuses_an_id_that_would_break_its_hash_tag():
    with pytest.raises(ValueError, match="braces"):
        KeySchema().recs("evil}:recs")


def test_the_key_schema_refuses_an_id_with_a_control_character():
    with pytest.raises(ValueError, match="U\\+0000"):
        KeySchema().similar("a\x00b")


@pytest.mark.parametrize("prefix", ["", "a*", "shop[1]", "a b", "x{y}", "a\nb", "p" * 65])
def test_a_prefix_that_a_scan_pattern_or_a_key_would_misread_is_refused(prefix):
    with pytest.raises(ValueError, match="key prefix"):
        KeySchema(prefix)


def test_a_refused_prefix_is_a_clear_settings_error():
    with pytest.raises(ValueError, match="key prefix"):
        Settings(key_prefix="shop*")


def test_the_rule_is_one_function_for_every_caller():
    assert clean_id(" i1 ") == "i1"
    assert id_problem("a}b") is not None
    with pytest.raises(ValueError):
        clean_id("a\tb")


def test_a_replay_of_hostile_ids_writes_no_key_outside_the_rule(tmp_path, redis_url):
    lines = []
    for n, bad in enumerate(HOSTILE):
        lines.append({**GOOD, "user_id": bad, "ts": GOOD["ts"] + n})
        lines.append({**GOOD, "user_id": f"ok{n}", "item_id": bad, "ts": GOOD["ts"] + n})
        lines.append({**GOOD, "user_id": f"ok{n}", "category": bad, "ts": GOOD["ts"] + n})
    lines.append({**GOOD, "user_id": " spaced ", "item_id": "a:b*c d"})
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    dlq = tmp_path / "dlq.jsonl"
    summary = replay(path, "native", Settings(), redis_url, str(dlq))
    assert summary["dlq_by_reason"] == {"invalid_value": 3 * len(HOSTILE)}
    fields = sorted({orjson.loads(line)["field"] for line in dlq.read_bytes().splitlines()})
    assert fields == ["category", "item_id", "user_id"]
    keys = [k.decode() for k in redis.Redis.from_url(redis_url).keys("*")]
    assert "pulse:user:{spaced}:recs" in keys
    assert "pulse:item:{a:b*c d}:similar" in keys
    for key in keys:
        assert key.startswith("pulse:") and key.isprintable(), key
        assert key.count("{") <= 1 and key.count("}") == key.count("{"), key
