"""The pipeline recovers structure planted in a generated log: user groups become
segments, bots get flagged, and a bundle's visitors are recommended its other items."""

import collections
from math import comb

import orjson
import pytest
import redis

from pulse.flows.config import Settings
from pulse.flows.generate import START_MS, generate, write_log
from pulse.flows.replay import replay
from pulse.state.keys import KeySchema

KEYS = KeySchema()


def adjusted_rand_index(a: dict, b: dict) -> float:
    keys = list(a)
    pairs = collections.Counter((a[k], b[k]) for k in keys)
    rows = collections.Counter(a[k] for k in keys)
    cols = collections.Counter(b[k] for k in keys)
    index = sum(comb(n, 2) for n in pairs.values())
    sum_rows = sum(comb(n, 2) for n in rows.values())
    sum_cols = sum(comb(n, 2) for n in cols.values())
    expected = sum_rows * sum_cols / comb(len(keys), 2)
    return (index - expected) / ((sum_rows + sum_cols) / 2 - expected)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, redis_server):
    lines, truth = generate(users=600, items=300, events=60_000, seed=21, bot_share=0.04, days=2)
    # One probe user per bundle views the bundle's first item after everything else.
    end = START_MS + 3 * 86_400_000
    for k, bundle in enumerate(truth["bundles"]):
        lines.append(orjson.dumps({"user_id": f"probe{k}", "type": "view", "ts": end + k, "item_id": bundle[0]}))
    path = tmp_path_factory.mktemp("planted") / "events.jsonl"
    write_log(str(path), lines)
    url = redis_server.url(49)
    redis.Redis.from_url(url).flushdb()
    summary = replay(path, "native", Settings(), url)
    client = redis.Redis.from_url(url)
    profiles = {}
    for key in client.scan_iter(match="pulse:user:*:profile", count=1000):
        user = KEYS.user_of(key.decode())
        verdict = orjson.loads(client.get(KEYS.verdict(user)))
        profiles[user] = {**orjson.loads(client.get(key)), **verdict}
    return truth, profiles, client, summary


def test_segments_agree_with_the_planted_user_groups(planted):
    truth, profiles, _, _ = planted
    present = [u for u in truth["personas"] if u in profiles]
    personas = {u: truth["personas"][u] for u in present if profiles[u]["segment"]}
    assert len(personas) >= 0.9 * len(present)
    ari = adjusted_rand_index(personas, {u: profiles[u]["segment"] for u in personas})
    assert ari >= 0.35, f"adjusted Rand index {ari:.3f}"


def test_segments_have_readable_traits(planted):
    _, profiles, client, _ = planted
    summary = orjson.loads(client.get(KEYS.segments))
    assert summary["segments"]
    assert any(seg["traits"] for seg in summary["segments"].values())
    # a user's verdict names the segment; its traits are the summary's
    assert all(p["segment"] in summary["segments"] for p in profiles.values() if p["segment"])


def test_flood_bots_are_flagged_with_high_recall_and_few_false_positives(planted):
    truth, profiles, client, _ = planted
    floods = {u for u, kind in truth["bots"].items() if kind == "flood"}
    flagged_ever = {e[1][b"user_id"].decode() for e in client.xrange(KEYS.anomalies)}
    recall = len(flagged_ever & floods) / len(floods)
    humans = set(truth["personas"])
    false_positive_rate = len(flagged_ever & humans) / len(humans)
    assert recall >= 0.8, f"recall {recall:.2f}"
    assert false_positive_rate <= 0.02, f"false positives {false_positive_rate:.3f}"


def test_a_flagged_user_gets_non_personalized_recommendations(planted):
    _, profiles, client, _ = planted
    flagged = [u for u, p in profiles.items() if p["anomaly"]["flagged"]]
    assert flagged
    for user in flagged:
        recs = orjson.loads(client.get(KEYS.recs(user)))
        assert {item["reason"] for item in recs["items"]} <= {"trending"}


def test_crawlers_never_reach_the_models(planted):
    truth, profiles, _, summary = planted
    crawlers = {u for u, kind in truth["bots"].items() if kind == "crawler"}
    assert summary["dlq_by_reason"]["bot_user_agent"] > 0
    assert not crawlers & set(profiles)


def test_a_bundle_visitor_is_recommended_the_bundles_other_items(planted):
    truth, _, client, _ = planted
    found = 0
    for k, bundle in enumerate(truth["bundles"]):
        recs = orjson.loads(client.get(KEYS.recs(f"probe{k}")))
        items = [r["item_id"] for r in recs["items"]]
        found += sum(1 for other in bundle[1:] if other in items)
        reasons = {r["item_id"]: r["reason"] for r in recs["items"]}
        for other in bundle[1:]:
            if other in reasons:
                assert reasons[other] == f"co_visit:{bundle[0]}"
    assert found >= 0.8 * 2 * len(truth["bundles"]), f"{found} of {2 * len(truth['bundles'])} bundle items recommended"


def test_bundle_items_are_each_others_similar_items(planted):
    truth, _, client, _ = planted
    for bundle in truth["bundles"]:
        similar = [s["item_id"] for s in orjson.loads(client.get(KEYS.similar(bundle[0])))[:5]]
        assert set(bundle[1:]) <= set(similar), (bundle, similar)
