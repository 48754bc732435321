"""Rule-based segments: a user who viewed 5 distinct items of a category within 24 h of
event time is in ``enthusiast:<category>``; the profile key says so."""

import collections
import copy
import pickle
import random

import orjson
import pytest
import redis

from conftest import dump_redis
from pulse.flows.config import Settings
from pulse.flows.generate import write_log
from pulse.flows.replay import replay
from pulse.operators.events import Event
from pulse.state.keys import KeySchema
from pulse.state.rules import EnthusiastRules, RuleConfig
from pulse.state.user import UserConfig, UserState

T0 = 1_767_571_200_000
MIN = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR


def view(item, ts, category="shoes", type="view"):
    return Event(user_id="u", type=type, ts=ts, item_id=item, category=category)


def learned(events, config=RuleConfig()) -> EnthusiastRules:
    rules = EnthusiastRules(config)
    for ev in events:
        rules.learn_one(ev)
    return rules


def test_five_distinct_items_viewed_within_a_day_make_an_enthusiast():
    rules = learned(view(f"i{k}", T0 + k * HOUR) for k in range(5))
    assert rules.predict_one(T0 + 4 * HOUR) == ["enthusiast:shoes"]


def test_four_distinct_items_are_not_enough():
    rules = learned(view(f"i{k}", T0 + k * HOUR) for k in range(4))
    assert rules.predict_one(T0 + 3 * HOUR) == []


def test_the_same_item_viewed_five_times_is_not_enough():
    rules = learned(view("i0", T0 + k * MIN) for k in range(5))
    assert rules.predict_one(T0 + 4 * MIN) == []


def test_views_older_than_the_window_stop_counting():
    rules = learned(view(f"i{k}", T0 + k * HOUR) for k in range(5))
    assert rules.predict_one(T0 + DAY - 1) == ["enthusiast:shoes"]
    assert rules.predict_one(T0 + DAY) == []  # i0 is now 24 h old


def test_viewing_an_item_again_renews_it():
    rules = learned([*(view(f"i{k}", T0 + k * HOUR) for k in range(5)), view("i0", T0 + 20 * HOUR)])
    assert rules.predict_one(T0 + DAY + 30 * MIN) == ["enthusiast:shoes"]  # i0 counts from 20 h
    assert rules.predict_one(T0 + DAY + 2 * HOUR) == []  # i1 and i2 have expired


def test_every_category_of_a_view_counts():
    rules = learned(view(f"i{k}", T0 + k, category=["Drama", "War"]) for k in range(5))
    assert rules.predict_one(T0 + 5) == ["enthusiast:Drama", "enthusiast:War"]


def test_only_the_configured_event_types_count():
    clicks = [view(f"i{k}", T0 + k, type="click") for k in range(5)]
    assert learned(clicks).predict_one(T0 + 5) == []
    config = RuleConfig(event_types=("view", "click"))
    assert learned(clicks, config).predict_one(T0 + 5) == ["enthusiast:shoes"]


def test_views_without_an_item_or_a_category_do_not_count():
    events = [Event(user_id="u", type="view", ts=T0 + k, category="shoes") for k in range(5)]
    events += [Event(user_id="u", type="view", ts=T0 + k, item_id=f"i{k}") for k in range(5)]
    rules = learned(events)
    assert rules.predict_one(T0 + 5) == [] and rules.views == {}


def test_views_arriving_out_of_order_still_count():
    order = [3, 0, 4, 1, 2]
    rules = learned(view(f"i{k}", T0 + k * HOUR) for k in order)
    assert rules.predict_one(T0 + 4 * HOUR) == ["enthusiast:shoes"]
    assert rules.predict_one(T0 + DAY) == []


def test_membership_matches_a_brute_force_count():
    rng = random.Random(7)
    config = RuleConfig(min_items=3, window_s=3600, event_types=("view", "click"))
    rules, last, now = EnthusiastRules(config), {}, T0  # last: (category, item) → last view
    for _ in range(5_000):
        now += rng.randrange(0, 6 * MIN)
        ts = now - rng.randrange(0, 3 * MIN)  # some views arrive a little late
        ev = view(f"i{rng.randrange(8)}", ts, rng.sample(["a", "b", "c", "d"], rng.randrange(0, 3)),
                  rng.choice(["view", "click", "scroll"]))
        rules.learn_one(ev)
        if ev.type != "scroll":
            for c in ev.category:
                last[c, ev.item_id] = max(last.get((c, ev.item_id), 0), ts)
        counts = collections.Counter(c for (c, _), t in last.items() if t > now - HOUR)
        assert rules.predict_one(now) == sorted(f"enthusiast:{c}" for c, n in counts.items() if n >= 3)


def test_threshold_and_window_are_configurable():
    config = RuleConfig(min_items=2, window_s=60)
    rules = learned([view("a", T0), view("b", T0 + 30_000)], config)
    assert rules.predict_one(T0 + 59_999) == ["enthusiast:shoes"]
    assert rules.predict_one(T0 + 60_000) == []


def test_an_unknown_event_type_in_the_config_is_refused():
    with pytest.raises(ValueError, match="hover"):
        RuleConfig(event_types=("view", "hover"))


def test_state_stays_bounded_under_many_categories_and_items():
    config = RuleConfig(min_items=5, max_categories=8)
    rules = learned((view(f"i{k}", T0 + k, category=f"c{k // 10 % 100}") for k in range(20_000)), config)
    assert list(rules.views) == [f"c{c}" for c in range(92, 100)]  # the most recently viewed
    assert all(len(items) == 5 for items in rules.views.values())
    assert rules.predict_one(T0 + 20_000) == [f"enthusiast:c{c}" for c in range(92, 100)]


def test_expired_views_are_forgotten():
    rules = learned(view(f"i{k}", T0 + k) for k in range(5))
    rules.learn_one(view("late", T0 + 2 * DAY, category="hats"))
    assert rules.predict_one(T0 + 2 * DAY) == []
    assert rules.views == {"shoes": (), "hats": (T0 + 2 * DAY,)}


def test_the_rules_survive_a_snapshot():
    rules = learned(view(f"i{k}", T0 + k) for k in range(5))
    for copied in (copy.deepcopy(rules), pickle.loads(pickle.dumps(rules))):
        assert copied.predict_one(T0 + 5) == ["enthusiast:shoes"]


def test_the_profile_document_lists_the_rule_segments():
    st = UserState(UserConfig())
    for k in range(5):
        st.learn_one(view(f"i{k}", T0 + k * MIN))
    assert st.profile_doc(T0 + 4 * MIN)["rule_segments"] == ["enthusiast:shoes"]
    st.learn_one(Event(user_id="u", type="click", ts=T0 + DAY + HOUR, item_id="x"))
    assert st.profile_dirty
    assert st.profile_doc(T0 + DAY + HOUR)["rule_segments"] == []


def test_a_replay_writes_the_rule_segments_into_the_profile(redis_server, tmp_path):
    lines = [orjson.dumps({"user_id": "fan", "type": "view", "ts": T0 + k * HOUR, "item_id": f"s{k}", "category": "shoes"})
             for k in range(5)]
    lines += [orjson.dumps({"user_id": "casual", "type": "view", "ts": T0 + k * HOUR, "item_id": f"s{k % 4}", "category": "shoes"})
              for k in range(8)]
    lines.sort(key=lambda line: orjson.loads(line)["ts"])
    path = tmp_path / "events.jsonl"
    write_log(str(path), lines)
    keys = KeySchema()
    urls = [redis_server.url(57), redis_server.url(58)]
    for url in urls:
        redis.Redis.from_url(url).flushdb()
        replay(path, "native", Settings(), url)
    client = redis.Redis.from_url(urls[0])
    assert orjson.loads(client.get(keys.profile("fan")))["rule_segments"] == ["enthusiast:shoes"]
    assert orjson.loads(client.get(keys.profile("casual")))["rule_segments"] == []
    assert dump_redis(urls[0]) == dump_redis(urls[1])
