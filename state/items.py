"""The item-side models, learned from every accepted event.

The model step (:func:`pulse.operators.steps.learn_models`) receives an
:class:`~pulse.operators.messages.ItemUpdate` for every accepted event from the step that
keeps users' lists (:mod:`pulse.state.recs`, keyed by user), in canonical order (see
:mod:`pulse.operators.order`), and folds it into :class:`ItemModels`:

* :class:`~pulse.state.trending.Trending` popularity: global, per category, per segment;
* :class:`~pulse.state.covisit.CoVisitation` item-to-item co-visitation;
* an :class:`~pulse.state.covisit.ItemIndex` that numbers items, and their categories
  by number, so that lists and heads are numpy arrays a blend gathers cheaply
  (:class:`~pulse.state.view.LocalView`);
* the counts ``pulse:meta`` reports, and what changed since the last round of global
  writes (:mod:`pulse.state.rounds` writes them).

It keeps nothing per user: each update brings what the models need of its user (the
recent distinct items co-visitation pairs the new item with, the segment, whether the
user is flagged, which keeps the user out of the models). The River models run in a
step of their own (:mod:`pulse.state.river_models`). Everything is a function of event
time and of the events' order, never of the wall clock.

Example:

>>> from pulse.operators.messages import ItemUpdate
>>> models = ItemModels(EngineConfig())
>>> models.learn_one(ItemUpdate("u1", True, "a", ("shoes",), 1_000, 1.0, (), None, False, new_user=True))
>>> models.learn_one(ItemUpdate("u1", True, "b", ("shoes",), 2_000, 1.0, ("a",), None, False))
>>> [i for i, _ in models.covisit.similar("b")], models.events, models.users
(['a'], 2, 1)
>>> models.take_changed()
(['shoes'], [], ['a', 'b'])
"""

from __future__ import annotations

import threading

from pulse.operators.messages import ItemUpdate
from pulse.state.config import EngineConfig
from pulse.state.covisit import CoVisitation, ItemIndex
from pulse.state.trending import Trending
from pulse.state.view import MAX_ITEM_CATEGORIES, ItemCategories


class ItemModels:
    """Trending, co-visitation and the item index; see the module docstring."""

    def __init__(self, config: EngineConfig = EngineConfig()) -> None:
        self.config = c = config
        self.index = ItemIndex()  # item id <-> number, shared by the models' arrays
        self.trending = Trending(c.trending_half_life_s, numbers=self.index.numbers)
        self.by_category: dict[str, Trending] = {}
        self.by_segment: dict[str, Trending] = {}
        self.covisit = CoVisitation(c.covisit_half_life_s, c.covisit_window, c.covisit_recency, c.covisit_neighbours,
                                    c.covisit_alpha, c.covisit_beta, index=self.index)
        self.item_categories: dict[str, tuple[str, ...]] = {}
        self.categories = ItemCategories()  # by item number, for the blend's category cap
        #: held while the models change, and by blends that read them from other
        #: worker threads (the compiled kernels release the GIL)
        self.lock = threading.Lock()
        self.clock = 0  # the largest event time seen
        self.events = 0
        self.events_flagged = 0
        self.flags = 0  # users newly flagged
        self.users = 0  # users' first updates
        self._changed: tuple[set[str], set[str], set[str]] = (set(), set(), set())  # categories, segments, items

    def __getstate__(self) -> dict:
        # (the lock is not state)
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def learn_one(self, up: ItemUpdate) -> None:
        """Fold in one update."""
        self.flags += up.new_flag
        self.users += up.new_user
        if not up.event:
            return
        self.events += 1
        if up.ts > self.clock:
            self.clock = up.ts
        item, weight = up.item_id, up.weight
        if item is None:
            return
        number = self.index.add(item)
        category = up.category
        if category and self.item_categories.get(item) != category[:MAX_ITEM_CATEGORIES]:
            self.item_categories[item] = category[:MAX_ITEM_CATEGORIES]
            self.categories.set(number, category)
        if up.flagged:  # flagged users do not feed the models
            self.events_flagged += 1
            return
        if weight <= 0:
            return
        ts = up.ts
        half_life = self.config.trending_half_life_s
        changed_categories, changed_segments, changed_items = self._changed
        self.trending.learn_one(item, weight, ts)
        for cat in category:
            t = self.by_category.get(cat)
            if t is None:
                t = self.by_category[cat] = Trending(half_life, numbers=self.index.numbers)
            t.learn_one(item, weight, ts)
            changed_categories.add(cat)
        segment = up.segment
        if segment is not None:
            t = self.by_segment.get(segment)
            if t is None:
                t = self.by_segment[segment] = Trending(half_life, numbers=self.index.numbers)
            t.learn_one(item, weight, ts)
            changed_segments.add(segment)
        changed_items.update(self.covisit.learn_one(up.recent, item, weight, ts))

    def take_changed(self) -> tuple[list[str], list[str], list[str]]:
        """The categories, segments and items whose lists changed since the last call,
        each sorted."""
        out = tuple(sorted(names) for names in self._changed)
        for names in self._changed:
            names.clear()
        return out  # type: ignore[return-value]
