"""Per-user state is capped: one user's events, however many, leave each structure at
its cap (the README's "Bounded state" lists them, with their defaults and settings).
The floods at full size are measured by benchmarks/floods.py."""

from __future__ import annotations

import pickle

import pytest

from pulse.flows.config import Settings
from pulse.operators.events import Event
from pulse.operators.windows import LOG_SLOTS, MAX_ITEMS, UserWindows
from pulse.operators.messages import ModelUpdate
from pulse.state.profile import ProfileConfig, UserProfile
from pulse.state.recs import Recommender, UserRecs
from pulse.state.river_models import RiverConfig, RiverModels
from pulse.state.user import UserState

T0 = 1_767_571_200_000


def view(n: int, ts: int, kind: str = "view", **fields) -> Event:
    # (ids of one width: a state at its cap then pickles to the same size)
    return Event(user_id="flood", type=kind, ts=ts, item_id=item(n), category=[f"c{n % 300:03d}"], event_id=f"e{n:07d}",
                 session_id="s", **fields)


def item(n: int) -> str:
    return f"i{n:07d}"


def test_one_users_event_ids_stay_at_the_dedup_capacity():
    st = UserState(Settings(dedup_capacity=64).user_config())
    for n in range(1_000):
        st.learn_one(view(n, T0 + n * 1000))
    assert len(st.event_ids) == 8 * 64  # 8-byte hashes: the newest 64 ids
    assert st.learn_one(view(999, T0 + 2_000_000)).duplicate and not st.learn_one(view(1, T0 + 2_000_001)).duplicate


def test_one_users_profile_keeps_at_most_twice_its_category_and_item_caps():
    profile = UserProfile(ProfileConfig(max_categories=4, max_items=5))
    sizes = []
    for n in range(1, 1_001):  # a new item and a new category at every view
        profile.learn_one(view(n, T0 + n * 1000))
        sizes.append(len(pickle.dumps(profile)))
    categories = profile.category_scores(T0 + 1_000_000)
    assert 4 <= len(categories) <= 8 and f"c{1_000 % 300:03d}" in categories  # the newest is kept
    # the tables fill to twice their caps and are pruned back: the same largest state
    # in the second 500 views as in the first
    assert max(sizes[500:]) == max(sizes[:500])


def list_state(events: list[Event], **settings) -> tuple[UserRecs, int]:
    """What the list step keeps of the user after ``events``, and the recent-items cap."""
    config = Settings(**settings).engine_config()
    recs = Recommender(config, write_recs=False)
    st = recs.new_state()
    for ev in events:
        recs.learn_update(st, ModelUpdate.of(ev, 1.0, ()), None, None)
    return st, recs.recent


def test_one_users_seen_items_stay_at_max_seen():
    # (kept where lists exclude every seen item)
    st, _ = list_state([view(n, T0 + n) for n in range(1_000)], max_seen=100, exclude_seen=True)
    assert 90 <= len(st.seen) <= 100  # (past the cap its oldest tenth goes at once)
    assert item(999) in st.seen and item(0) not in st.seen


def test_one_users_purchases_stay_at_max_seen():
    st, _ = list_state([view(n, T0 + n, "purchase", price=1.0) for n in range(1_000)], max_seen=100)
    assert 90 <= len(st.purchased) <= 100 and item(999) in st.purchased


def test_one_users_recent_items_stay_at_the_co_visitation_window():
    st, cap = list_state([view(n, T0 + n) for n in range(1_000)])
    assert cap == 10 and st.recent == [item(n) for n in range(990, 1_000)]


def flood(shape: str, n: int) -> list[Event]:
    if shape == "one_session":  # views 100 ms apart, over ever new items
        return [view(n, T0 + n * 100) for n in range(n)]
    # a session of 1,000 views 0.5 s apart every 2 hours
    return [view(k, T0 + (k // 1_000) * 7_200_000 + (k % 1_000) * 500) for k in range(n)]


@pytest.mark.parametrize("shape", ["one_session", "sessions"])
def test_one_users_flood_leaves_the_user_step_state_at_its_caps(shape):
    st = UserState(Settings().user_config())
    sizes = []
    events = flood(shape, 48_000)
    for n, ev in enumerate(events, 1):
        st.learn_one(ev)
        if n in (24_000, 48_000):
            sizes.append(len(pickle.dumps(st)))
    assert st.bots is not None  # the bot rules' state is part of it
    # (what stays are numbers: their pickled widths wobble by a few bytes)
    assert abs(sizes[1] - sizes[0]) < 0.01 * sizes[0], sizes
    windows = st.windows.close_all()
    assert max(w.features()["distinct_items"] for w in windows) <= MAX_ITEMS


def test_one_sessions_window_state_does_not_grow_with_its_events():
    # Every window stays open (1,024 s of views 100 ms apart, within the hour and the
    # session), so without the fold at LOG_SLOTS the log would keep every event.
    w = UserWindows(tumbling_s=(3600,), session_gap_s=1800, allowed_lateness_s=0)
    sizes = []
    for n in range(1, 40 * LOG_SLOTS + 1):
        w.learn_one(Event(user_id="u", type="view", ts=T0 + n * 100, item_id=f"i{n % 50}"))
        if n in (10 * LOG_SLOTS, 40 * LOG_SLOTS):
            sizes.append(len(pickle.dumps(w)))
    assert abs(sizes[1] - sizes[0]) < 0.01 * sizes[0], sizes
    hour, session = w.close_all()
    assert hour.events == session.events == 40 * LOG_SLOTS


@pytest.mark.parametrize("shape", ["one_session", "sessions"])
def test_one_users_flood_leaves_the_list_step_state_at_its_caps(shape):
    events = flood(shape, 20_000)
    small, _ = list_state(events[:5_000])
    large, _ = list_state(events)
    a, b = len(pickle.dumps(small)), len(pickle.dumps(large))
    assert abs(b - a) < 0.01 * a, (a, b)


def test_the_river_step_lets_go_of_a_user_a_live_run_freed():
    models = RiverModels(RiverConfig())
    for n in range(1_000):
        models.learn_one(f"bot{n}", "p", n, [], rules="rate: 130 item events in one minute", ts=T0 + n)
    assert len(models.ruled) == 1_000
    for n in range(1_000):
        models.release(f"bot{n}")
    assert not models.ruled and not models.flagged
