"""Behavioural bot rules beside the anomaly model: the rules on their own, and on a
generated log where scrapers with a browser's user agent and click floods are mixed
into people."""

from __future__ import annotations

import collections
import pickle
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from pulse.flows.config import Settings
from pulse.flows.generate import generate, write_log
from pulse.flows.replay import replay
from pulse.operators.events import Event
from pulse.operators.windows import WindowSummary
from pulse.state.bots import BotRuleConfig, BotRules
from pulse.state.keys import KeySchema
from pulse.state.river_models import CALM, RiverConfig, RiverModels, rule_verdict
from pulse.state.user import UserConfig, UserState

T0 = 1_767_571_200_000


def scraper(n: int = 40, gap_ms: int = 400, session: str = "s1", t0: int = T0) -> list[Event]:
    return [Event(user_id="b", type="view", ts=t0 + k * gap_ms, item_id=f"i{k}", category=f"c{k % 8}", session_id=session)
            for k in range(n)]


def person(views: int = 40, gap_ms: int = 1500, dwell_ms: int = 4000) -> list[Event]:
    """One category, each view followed by a scroll and a dwell report."""
    out, t = [], T0
    for k in range(views):
        item = dict(user_id="h", item_id=f"i{k % 7}", category="shoes", session_id="s1")
        out += [Event(type="view", ts=t, **item), Event(type="scroll", ts=t + 300, scroll_pct=60, **item),
                Event(type="dwell", ts=t + 300 + dwell_ms, dwell_ms=dwell_ms, **item)]
        t += 300 + dwell_ms + gap_ms
    return out


def last_reason(rules: BotRules, events) -> str:
    reason = ""
    for ev in events:
        reason = rules.learn_one(ev)
    return reason


def test_a_hurried_random_walk_without_dwell_or_scroll_is_a_bot():
    reason = last_reason(BotRules(), scraper())
    assert {"sub_second", "no_dwell", "no_scroll", "random_walk"} <= {part.split(":")[0] for part in reason.split("; ")}


def test_a_person_browsing_one_category_with_dwell_and_scroll_is_not_a_bot():
    assert last_reason(BotRules(), person(views=200)) == ""


def test_quick_views_alone_are_not_enough():
    # sub-second gaps, but dwell and scroll reports and one category: one shape rule only
    events = [Event(user_id="h", type=t, ts=T0 + k * 450 + d, item_id=f"i{k}", category="shoes", session_id="s1",
                    dwell_ms=900 if t == "dwell" else None, scroll_pct=50 if t == "scroll" else None)
              for k in range(60) for t, d in (("view", 0), ("scroll", 100), ("dwell", 200))]
    assert last_reason(BotRules(), events) == ""


def test_the_rate_rule_alone_flags_a_flood():
    events = scraper(n=130, gap_ms=300)
    rules = BotRules(BotRuleConfig(min_session_events=1_000))  # no shape rule can be read yet
    assert last_reason(rules, events) == "rate: 120 item events in one minute"


def test_no_shape_rule_is_read_before_the_session_has_enough_item_events():
    reasons = [BotRules(BotRuleConfig(min_session_events=30)).learn_one(ev) for ev in scraper(n=29)]
    assert set(reasons) == {""}


def test_a_bots_verdict_stands_into_its_next_session():
    rules = BotRules()
    reason = last_reason(rules, scraper(session="s1"))
    assert reason
    assert rules.learn_one(scraper(n=1, session="s2", t0=T0 + 60_000)[0]) == reason


def test_a_later_session_judged_human_clears_the_verdict():
    rules = BotRules()
    assert last_reason(rules, scraper(session="s1"))
    later = [ev.model_copy(update={"user_id": "b", "ts": ev.ts + 3_600_000}) for ev in person(views=40)]
    reasons = [rules.learn_one(ev) for ev in later]
    assert reasons[0] and reasons[-1] == ""


def test_a_new_session_is_counted_afresh():
    rules = BotRules(BotRuleConfig(min_session_events=30))
    last_reason(rules, person(views=40))  # judged human
    fresh = scraper(n=29, session="s2", t0=T0 + 3_600_000)
    assert {rules.learn_one(ev) for ev in fresh} == {""}


def test_the_thresholds_are_configurable():
    loose = BotRuleConfig(min_session_events=10, min_rules=4, walk_categories=20)
    assert last_reason(BotRules(loose), scraper()) == ""
    assert last_reason(BotRules(BotRuleConfig(min_session_events=10, min_rules=4, walk_categories=8)), scraper())


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="min_rules"):
        BotRuleConfig(min_rules=5)
    with pytest.raises(ValueError, match="share"):
        BotRuleConfig(fast_share=1.5)


def test_the_rules_state_survives_a_snapshot():
    rules, events = BotRules(), scraper()
    last_reason(rules, events[:35])
    restored = pickle.loads(pickle.dumps(rules))
    assert last_reason(restored, events[35:]) == last_reason(rules, events[35:])


def test_a_user_who_never_hurries_has_no_bot_state():
    st = UserState(UserConfig())
    for ev in person(views=50):
        assert st.learn_one(ev).bot is None
    assert st.bots is None


def test_the_user_step_reports_the_verdict_once_when_it_changes():
    st = UserState(UserConfig())
    changes = [(k, b) for k, b in enumerate(st.learn_one(ev).bot for ev in scraper()) if b is not None]
    assert len(changes) == 1 and changes[0][1].startswith("sub_second")


def test_turned_off_the_rules_keep_no_state_and_flag_nobody():
    st = UserState(UserConfig(bots=BotRuleConfig(enabled=False)))
    assert {st.learn_one(ev).bot for ev in scraper()} == {None}
    assert st.bots is None


def test_the_river_step_flags_a_user_the_rules_flag_once():
    models = RiverModels(RiverConfig())
    first = models.learn_one("b", "log", 1, [], rules="rate: 130 item events in one minute", ts=T0)
    assert first.anomalies == ((rule_verdict("rate: 130 item events in one minute"), T0, True),)
    assert models.learn_one("b", "log", 2, [], rules="another reason", ts=T0 + 1).anomalies[0][2] is False


def test_the_rules_clearing_unflags_a_user_the_model_does_not_flag():
    models = RiverModels(RiverConfig())
    models.learn_one("b", "log", 1, [], rules="rate: 130 item events in one minute", ts=T0)
    assert models.learn_one("b", "log", 2, [], rules="", ts=T0 + 1).anomalies == ((CALM, T0 + 1, False),)
    assert "b" not in models.ruled


def test_a_calm_window_keeps_the_rules_flag():
    models = RiverModels(RiverConfig())
    models.learn_one("b", "log", 1, [], rules="rate: 130 item events in one minute", ts=T0)
    calm = WindowSummary("tumbling:60", T0, T0 + 60_000, 4, 3, 3, 1, 0, 0, 12_000.0, 40.0, 60.0)
    (shown, _, new), = models.learn_one("b", "log", 3, [calm]).anomalies
    assert shown["flagged"] and shown["reason"].startswith("rules: ") and not new


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, redis_server):
    lines, truth = generate(users=600, items=300, events=60_000, seed=21, bot_share=0.04, days=2, scraper_share=0.04)
    path = tmp_path_factory.mktemp("bots") / "events.jsonl"
    write_log(str(path), lines)
    url = redis_server.url(48)
    client = redis.Redis.from_url(url)
    client.flushdb()
    replay(path, "native", Settings(), url)
    present = collections.Counter(orjson.loads(line)["user_id"] for line in lines)
    flagged: dict[str, list[str]] = collections.defaultdict(list)
    for _, entry in client.xrange(KeySchema().anomalies):
        flagged[entry[b"user_id"].decode()].append(entry[b"reason"].decode())
    return truth, present, flagged, client


def test_scrapers_and_floods_are_flagged_with_recall_of_at_least_0_9(mixed):
    truth, present, flagged, _ = mixed
    bots = {u for u, kind in truth["bots"].items() if kind in ("scraper", "flood") and present[u]}
    assert len(bots) >= 30
    recall = len(bots & set(flagged)) / len(bots)
    assert recall >= 0.9, f"recall {recall:.3f}"


def test_at_most_two_percent_of_people_are_flagged(mixed):
    truth, present, flagged, _ = mixed
    humans = {u for u in truth["personas"] if present[u]}
    rate = len(humans & set(flagged)) / len(humans)
    assert rate <= 0.02, f"false positives {rate:.3f}"


def test_a_scraper_is_flagged_by_the_rules_with_their_reason_in_its_verdict(mixed):
    truth, present, flagged, client = mixed
    scrapers = [u for u, kind in truth["bots"].items() if kind == "scraper" and u in flagged]
    assert any(r.startswith("rules: ") for u in scrapers for r in flagged[u])
    verdicts = [orjson.loads(client.get(KeySchema().verdict(u)))["anomaly"] for u in scrapers]
    assert any(v["flagged"] and v["reason"].startswith("rules: ") for v in verdicts)


def test_a_scraper_flagged_by_the_rules_gets_a_non_personalized_list(mixed):
    truth, _, flagged, client = mixed
    checked = 0
    for u in (u for u, kind in truth["bots"].items() if kind == "scraper" and u in flagged):
        verdict = orjson.loads(client.get(KeySchema().verdict(u)))["anomaly"]
        if verdict["flagged"]:
            recs = orjson.loads(client.get(KeySchema().recs(u)))
            assert {item["reason"] for item in recs["items"]} <= {"trending"}
            checked += 1
    assert checked >= 5


def test_the_benchmark_reports_recall_and_false_positives_on_a_small_log(redis_url):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bots.py"
    done = subprocess.run([sys.executable, str(script), "--redis", redis_url, "--seeds", "5", "--users", "300",
                           "--items", "200", "--events", "20000", "--days", "1"], capture_output=True, timeout=300)
    report = orjson.loads(done.stdout)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert report["bots"] >= 10 and report["recall"] >= 0.9 and report["human_false_positive_rate"] <= 0.02
