"""The list step's per-user state (pulse.state.recs.UserRecs): what it keeps, and only that."""

from __future__ import annotations

import dataclasses

import pytest

from pulse.operators.events import Event
from pulse.operators.messages import ModelUpdate
from pulse.state.config import EngineConfig
from pulse.state.items import ItemModels
from pulse.state.recs import Recommender
from pulse.state.view import LocalView


def _update(user: str, item: str, ts: int, affinities=None) -> ModelUpdate:
    return ModelUpdate.of(Event(user_id=user, type="view", ts=ts, item_id=item), 1.0, (), affinities)


def test_the_items_seen_are_kept_only_where_lists_exclude_them():
    plain = Recommender(EngineConfig())
    excluding = Recommender(dataclasses.replace(EngineConfig(), blend=dataclasses.replace(EngineConfig().blend, exclude_seen=True)))
    view = LocalView(ItemModels(EngineConfig()))
    a, b = plain.new_state(), excluding.new_state()
    for n, item in enumerate(("x", "y")):
        plain.learn_update(a, _update("u", item, 1_000 * n), None, view)
        excluding.learn_update(b, _update("u", item, 1_000 * n), None, view)
    assert a.seen is None
    assert list(b.seen) == ["x", "y"]


def test_a_list_excluding_seen_items_from_a_state_without_them_is_refused():
    recs = Recommender(EngineConfig())
    blend = dataclasses.replace(EngineConfig().blend, exclude_seen=True)
    with pytest.raises(ValueError, match="new_state"):
        recs.recommend(recs.new_state(), "u", 0, LocalView(ItemModels(EngineConfig())), blend)


def test_the_strongest_categories_come_back_with_their_affinities_in_order():
    recs = Recommender(EngineConfig())
    st = recs.new_state()
    recs.learn_update(st, _update("u", "x", 0, (("shoes", 0.75), ("bags", 0.125))), None, LocalView(ItemModels(EngineConfig())))
    assert st.affinities == [("shoes", 0.75), ("bags", 0.125)]


def test_users_of_one_segment_share_its_name():
    from pulse.state.river_models import Verdict

    recs = Recommender(EngineConfig())
    view = LocalView(ItemModels(EngineConfig()))
    states = []
    for user in ("u1", "u2"):
        st = recs.new_state()
        up = ModelUpdate(user, True, "x", (), 1_000, 1.0, (object(),), "log", 0 if user == "u1" else 1)
        # (built apart, as verdicts unpickled in another process are)
        verdict = Verdict(user, "log", up.seq, "".join(["s", "3"]), ())
        recs.learn_update(st, up, verdict, view)
        states.append(st)
    assert states[0].segment == states[1].segment == "s3" and states[0].segment is states[1].segment
