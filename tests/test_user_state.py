"""The user step's state: compact, and exactly as it was.

``data/user_state_expected.jsonl.gz`` was recorded from the dict-and-set implementation
that the compact one replaced: a generated log (with duplicates, late and out-of-order
events, rated and item-less events added) run through :class:`UserState` under two
configurations, one line per event with everything the flow reads back (the duplicate
and late flags, the weight, every closed window's features and accessors, the profile
document). The compact state must reproduce every line byte for byte, key order and
floating-point digits included, also when it is snapshotted (pickled or deep-copied) and
resumed along the way. The recording holds profile documents of key schema 2, which
:func:`as_recorded_now` lays out as schema 3 does (fields that the others give dropped,
the mean dwell to the millisecond); only the engagement, recorded to 6 decimals and now
written to 4 significant digits, is compared to within those digits."""

from __future__ import annotations

import copy
import gc
import gzip
import pickle
import random
import sys
import tracemalloc
from pathlib import Path
from typing import Optional

import orjson
import pytest

from pulse.flows.generate import DAY_MS, START_MS, generate
from pulse.operators import windows
from pulse.operators.events import Event, Raw, Validation, parse
from pulse.operators.windows import MAX_CATEGORIES, MAX_ITEMS, UserWindows, stable_hash
from pulse.state.profile import ProfileConfig, doc_affinities
from pulse.state.rules import RuleConfig
from pulse.state.schema import doc_number
from pulse.state.user import EventIds, UserConfig, UserState

EXPECTED = Path(__file__).parent / "data" / "user_state_expected.jsonl.gz"

CONFIGS = {
    "default": UserConfig(),
    # small caps, a short half-life (scores rebase within the log's seven days), a small
    # dedup ring, and windows that close often
    "tight": UserConfig(
        profile=ProfileConfig(half_life_s=1800, max_categories=1, max_items=3),
        rules=RuleConfig(min_items=2, window_s=1800, max_categories=2, event_types=("view", "click")),
        dedup_capacity=16, tumbling_s=(60, 600), session_gap_s=300, allowed_lateness_s=30, profile_interval_s=0.0,
    ),
}


def stream() -> list[Event]:
    """A generated log with what real input also holds: repeats, stragglers, ratings."""
    lines, _ = generate(users=50, items=100, events=2000, seed=5, bot_share=0.1, days=2)
    limits = Validation(now_ms=START_MS + 2 * DAY_MS)  # the same events whatever the wall clock says
    parsed = [parse(Raw("gen", n, line), limits) for n, line in enumerate(lines)]
    rng = random.Random(11)
    out: list[Event] = []
    history: dict[str, list[Event]] = {}
    for ev in parsed:
        if not isinstance(ev, Event):
            continue  # crawlers
        out.append(ev)
        mine = history.setdefault(ev.user_id, [])
        mine.append(ev)
        r = rng.random()
        if r < 0.05:  # the same event again
            out.append(ev)
        elif r < 0.06 and len(mine) > 30:  # an old event again: a small ring has forgotten it
            out.append(mine[-30])
        elif r < 0.11:  # a straggler: within the allowed lateness, or past it
            out.append(ev.model_copy(update={"ts": ev.ts - rng.randrange(0, 120_000), "event_id": f"{ev.event_id}-s"}))
        elif r < 0.13:
            out.append(ev.model_copy(update={"type": "rate", "rating": rng.randrange(0, 11) / 2, "event_id": None,
                                             "ts": ev.ts + 1}))
        elif r < 0.14:
            out.append(ev.model_copy(update={"type": "search", "item_id": None, "category": (), "event_id": f"{ev.event_id}-q"}))
    return out


def window_record(w) -> list:
    return [w.kind, w.start_ms, w.end_ms, w.events, w.views, w.ctr, w.cart_rate, w.purchase_rate, w.dwell_mean_ms,
            w.scroll_mean, w.length_s, len(w.items), len(w.categories), w.counts.get("click", 0), w.features()]


def trace(config: UserConfig, events: list[Event], snapshot_every: int = 0):
    """One JSON line per event, then one per user at the end of the input: what the user
    step (operators/steps.py) and the evaluation (flows/evaluate.py) read from the state.
    With ``snapshot_every``, the states are pickled or deep-copied and resumed that often."""
    users: dict[str, UserState] = {}
    for n, ev in enumerate(events):
        if snapshot_every and n % snapshot_every == 0:
            restore = pickle.loads if n // snapshot_every % 2 else copy.deepcopy
            users = {u: restore(pickle.dumps(st)) if restore is pickle.loads else restore(st) for u, st in users.items()}
        st = users.get(ev.user_id)
        if st is None:
            st = users[ev.user_id] = UserState(config)
        known = ev.event_id is not None and ev.event_id in st.event_ids
        prior = sum(st.profile.counts.values())
        learned = st.learn_one(ev)
        doc = None
        if not learned.duplicate and (learned.closed or st.profile_due(ev.ts)):
            doc = st.profile_doc(ev.ts)
        yield orjson.dumps([ev.user_id, known, prior, learned.duplicate, learned.weight, learned.late,
                            [window_record(w) for w in learned.closed], doc, st.profile.last_seen, st.profile_dirty])
    for user, st in sorted(users.items()):
        closed = st.windows.close_all()
        doc = st.profile_doc(st.profile.last_seen or 0) if st.profile_dirty or closed else None
        yield orjson.dumps([st.user_id, [window_record(w) for w in closed], doc])


def schema3(doc: Optional[dict]) -> Optional[dict]:
    """A recorded (key schema 2) profile document in the layout of schema 3."""
    if doc is None:
        return None
    assert doc["events"] == sum(doc["counts"].values())  # (what schema 3 leaves to the reader)
    return {"counts": doc["counts"], "first_seen": doc["first_seen"], "last_seen": doc["last_seen"],
            "engagement": doc["engagement"], "dwell_mean_ms": None if doc["dwell_mean_ms"] is None else round(doc["dwell_mean_ms"]),
            "categories": doc["categories"], "items": doc["items"], "rule_segments": doc["rule_segments"]}


def without_engagement(line: bytes, layout=lambda doc: doc) -> tuple[bytes, Optional[float]]:
    """A trace line (its profile document through ``layout``) without the document's
    engagement, and the engagement."""
    row = orjson.loads(line)
    at = 7 if len(row) == 10 else 2  # (an event's line, or a user's at the end)
    doc = layout(row[at])
    engagement = doc.pop("engagement") if doc is not None else None
    row[at] = doc
    return orjson.dumps(row), engagement


def assert_as_recorded(lines: list[bytes], recorded: list[bytes]) -> None:
    assert len(lines) == len(recorded)
    for n, (line, want) in enumerate(zip(lines, recorded)):
        got, engagement = without_engagement(line)
        expect, recorded_engagement = without_engagement(want, schema3)
        assert got == expect, f"line {n}"
        assert (engagement is None) == (recorded_engagement is None), f"line {n}"
        if engagement is not None:  # 4 significant digits of a value within 5e-7 of the recorded one
            assert engagement in {doc_number(recorded_engagement + d) for d in (-5e-7, 0.0, 5e-7)}, f"line {n}"


def expected() -> dict[str, list[bytes]]:
    """The recorded lines by configuration (each stored as ``<name> <line>``)."""
    out: dict[str, list[bytes]] = {name: [] for name in CONFIGS}
    with gzip.open(EXPECTED, "rb") as f:
        for row in f.read().splitlines():
            name, line = row.split(b" ", 1)
            out[name.decode()].append(line)
    return out


@pytest.fixture(scope="module")
def recorded() -> dict[str, list[bytes]]:
    return expected()


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return stream()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_output_is_the_recorded_one(name, recorded, events):
    assert_as_recorded(list(trace(CONFIGS[name], events)), recorded[name])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_snapshots_taken_along_the_way_change_nothing(name, recorded, events):
    assert_as_recorded(list(trace(CONFIGS[name], events, snapshot_every=97)), recorded[name])


@pytest.mark.parametrize("slots", [8, 40])
def test_folding_busy_users_logs_early_changes_nothing(slots, recorded, events, monkeypatch):
    monkeypatch.setattr(windows, "LOG_SLOTS", slots)  # (the recorded log folds at the default too)
    for name, config in CONFIGS.items():
        assert_as_recorded(list(trace(config, events)), recorded[name])


def ev(n: int, **fields) -> Event:
    return Event(**{"user_id": "u", "type": "view", "ts": START_MS + n, "item_id": f"i{n}", "event_id": f"e{n}", **fields})


def test_repeated_event_ids_are_caught_within_the_capacity_and_forgotten_beyond():
    st = UserState(UserConfig(dedup_capacity=100))
    for n in range(150):
        assert not st.learn_one(ev(n)).duplicate
    assert [st.learn_one(ev(n)).duplicate for n in (149, 50, 49, 0)] == [True, True, False, False]
    assert "e149" in st.event_ids and "e10" not in st.event_ids
    assert len(st.event_ids) == 8 * 100  # 8-byte hashes, no more than the capacity


def test_a_hash_straddling_two_entries_is_no_match():
    digest = stable_hash("x").to_bytes(8, "little", signed=True)
    ids = EventIds(bytes(4) + digest + bytes(4))
    assert "x" not in ids and ids.add("x", capacity=10) and "x" in ids


def test_stored_affinities_are_doc_numbers_of_the_documents_six_decimals():
    # doc_affinities rounds a document's affinities on their integer millionths: every
    # value must come out as doc_number's, ties (…5 exactly), signs and large values included
    rng = random.Random(3)
    millionths = [rng.randrange(10**k) for k in range(1, 17) for _ in range(2_000)]
    millionths += [q * 10**k + 5 * 10 ** (k - 1) for k in range(1, 9) for q in range(1_000, 1_200)]  # ties
    millionths += [10**k + d for k in range(3, 17) for d in (-1, 0, 1)]
    scores = {f"{sign * n}": sign * m / 1e6 for n, m in enumerate(millionths, 1) for sign in (1, -1)}
    stored = doc_affinities(scores)
    assert list(stored) == list(scores)
    assert [repr(v) for v in stored.values()] == [repr(doc_number(v)) for v in scores.values()]


def test_distinct_items_and_categories_are_capped_per_window():
    w = UserWindows(tumbling_s=(3600,), session_gap_s=3600, allowed_lateness_s=0)
    for n in range(MAX_ITEMS + 50):
        w.learn_one(ev(n, category=[f"c{n}a", f"c{n}b", f"c{n}c"]))
    hour, session = w.close_all()
    for agg in (hour, session):
        features = agg.features()
        assert features["events"] == MAX_ITEMS + 50 and features["distinct_items"] == MAX_ITEMS
        # an event's categories all count while there are fewer than the cap
        assert features["distinct_categories"] == 3 * ((MAX_CATEGORIES + 2) // 3)


def light_users(users: int) -> list[bytes]:
    """Like ../shared/checks/lib/users.py: 5 events a user, one category an event."""
    rnd = random.Random(1)
    lines = []
    for i in range(users * 5):
        u = i if i < users else rnd.randrange(users)
        it = int(rnd.paretovariate(1.2)) % 20_000
        lines.append(orjson.dumps({"user_id": f"user-{u:07d}", "type": rnd.choice(["view", "view", "click", "dwell"]),
                                   "ts": START_MS + i * 20, "item_id": f"item-{it}", "category": f"c{it % 40}",
                                   "event_id": f"e{i}", "dwell_ms": 5000}))
    return lines


def test_a_light_user_costs_about_a_kibibyte():
    lines, config, users = light_users(1000), UserConfig(), 1000
    names = {u: u for u in (orjson.loads(line)["user_id"] for line in lines)}
    states: dict[str, UserState] = {}
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, line in enumerate(lines):  # the user step's calls, strings parsed in here
            e = parse(Raw("log", n, line))
            st = states.get(e.user_id)
            if st is None:
                st = states[names[e.user_id]] = UserState(config)
            if st.learn_one(e).closed or st.profile_due(e.ts):
                st.profile_doc(e.ts)
        del e, st
        gc.collect()
        per_user = (tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(states)) / users
    finally:
        tracemalloc.stop()
    assert per_user < 1_500, f"{per_user:.0f} bytes per light user"
    pickled = sum(len(pickle.dumps(st)) for st in states.values()) / users
    assert pickled < 1_300, f"{pickled:.0f} bytes pickled per light user"


def test_users_loaded_from_a_snapshot_share_their_configuration():
    config = CONFIGS["tight"]
    a, b = UserState(config), UserState(config)
    a.learn_one(ev(1))
    b.learn_one(ev(2))
    loaded = [pickle.loads(pickle.dumps(st)) for st in (a, b)] + [copy.deepcopy(a)]
    assert all(st.config == config for st in loaded)
    assert len({id(st.config) for st in loaded}) == 1
    assert len({id(st.profile.config) for st in loaded} | {id(st.config.profile) for st in loaded}) == 1
    assert len({id(st.windows.spec) for st in loaded + [a, b]}) == 1
