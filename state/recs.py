"""Per-user recommendation state and the user's list.

The user step (keyed by user, on every worker) keeps, beside the user's windows and
profile, what the user's list depends on: the user's recent distinct items (the seeds of
co-visitation candidates), the items the user must not get (purchased, or everything
seen), and the user's strongest categories. It blends the list from a
:mod:`~pulse.state.view` of the models (which also says the user's segment and anomaly
flag) and writes ``pulse:user:{<id>}:recs`` at most once per ``recs_interval_s`` of
event time: a refresh held back by this debounce is written at the user's next event, on
a wall-clock timer in live runs, or at the end of the input.

Values depend on event time and the view only, so a replay in one process writes the
same lists every time.

Example:

>>> from pulse.state.engine import Engine, EngineConfig, ModelUpdate
>>> from pulse.state.view import LocalView
>>> from pulse.operators.events import Event
>>> eng = Engine(EngineConfig(recs_interval_s=0))
>>> ev = Event(user_id="u1", type="view", ts=1_000, item_id="a")
>>> _ = eng.learn_one(ModelUpdate.of(ev, 1.0, ()))
>>> recs, st = Recommender(eng.config), UserRecs()
>>> [w.key for w in recs.learn_one(st, ev, 1.0, LocalView(eng))]
['pulse:user:{u1}:recs']
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import orjson

from pulse.operators.events import Event
from pulse.operators.recommend import BlendConfig, Rec, blend_parts
from pulse.state.engine import EngineConfig, iso_ms, recomm_id
from pulse.state.store import Put


class ItemSet:
    """An insertion-ordered, bounded set of item ids that also gives their numbers in a
    view's index as an int64 array (what the compiled blend excludes by). Past
    ``capacity`` ids the oldest tenth is dropped at once. The numbers are worked out
    again for another index (another process, or after a resume): only ids are state.

    >>> from pulse.state.covisit import ItemIndex
    >>> ix = ItemIndex(); _ = ix.add("z")
    >>> s = ItemSet(capacity=10)
    >>> s.add("a"); s.add("b"); s.add("a")
    >>> list(s), s.numbers(ix).tolist(), "b" in s
    (['b', 'a'], [1, 2], True)
    """

    __slots__ = ("ids", "capacity", "_array", "_size", "_index")

    def __init__(self, capacity: int = 2_000) -> None:
        self.ids: dict[str, None] = {}
        self.capacity = capacity
        self._array = _NO_NUMBERS
        self._size = 0
        self._index = None  # the index the array's numbers belong to

    def __getstate__(self) -> tuple:
        return (self.ids, self.capacity)

    def __setstate__(self, state: tuple) -> None:
        self.ids, self.capacity = state
        self._array, self._size, self._index = _NO_NUMBERS, 0, None

    def __contains__(self, item: object) -> bool:
        return item in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return iter(self.ids)

    def add(self, item: str) -> None:
        """Add ``item`` (or make it the newest)."""
        ids = self.ids
        if item in ids:
            del ids[item]
            ids[item] = None
            return
        ids[item] = None
        if len(ids) > self.capacity:
            for old in list(ids)[: max(1, self.capacity // 10)]:
                del ids[old]
            self._index = None
        elif self._index is not None:
            if self._size == len(self._array):
                grown = np.empty(max(8, 2 * self._size), dtype=np.int64)
                grown[: self._size] = self._array
                self._array = grown
            self._array[self._size] = self._index.add(item)
            self._size += 1

    def numbers(self, index) -> np.ndarray:
        """The items' numbers in ``index`` (an :class:`~pulse.state.covisit.ItemIndex`;
        a view: do not keep it)."""
        if self._index is not index:
            add = index.add
            self._array = np.fromiter((add(i) for i in self.ids), dtype=np.int64, count=len(self.ids))
            self._size = len(self.ids)
            self._index = index
        return self._array[: self._size]


_NO_NUMBERS = np.zeros(0, dtype=np.int64)


class UserRecs:
    """What the user step remembers for the user's list."""

    __slots__ = ("seeds", "seen", "purchased", "categories", "recs_at", "recs_due", "recs_n", "last_ts")

    def __init__(self, max_seen: int = 2_000) -> None:
        self.seeds: list[str] = []  # recent distinct items, newest last
        self.seen = ItemSet(max_seen)
        self.purchased = ItemSet(max_seen)
        self.categories: list[tuple[str, float]] = []  # strongest first
        self.recs_at: Optional[int] = None
        self.recs_due: Optional[int] = None
        self.recs_n = 0
        self.last_ts = 0


class Recommender:
    """Keeps :class:`UserRecs` and writes users' lists (see the module docstring);
    ``write_recs=False`` (offline evaluation) keeps the state and writes nothing."""

    def __init__(self, config: EngineConfig, write_recs: bool = True) -> None:
        self.config = config
        self.keys = config.keys
        self.interval_ms = int(config.recs_interval_s * 1000)
        self.seeds = config.recs_seed_items
        self.write_recs = write_recs

    def learn_one(self, st: UserRecs, ev: Event, weight: float, view) -> list[Put]:
        """Fold in one accepted event; returns the list's write when one is due."""
        item = ev.item_id
        if item is not None:
            if weight > 0:
                seeds = st.seeds
                if not seeds or seeds[-1] != item:
                    if item in seeds:
                        seeds.remove(item)  # distinct: a revisit moves it to the end
                    seeds.append(item)
                    if len(seeds) > self.seeds:
                        del seeds[0]
            st.seen.add(item)
            if ev.type == "purchase":
                st.purchased.add(item)
        if ev.ts > st.last_ts:
            st.last_ts = ev.ts
        if not self.write_recs:
            return []
        if st.recs_at is None or ev.ts - st.recs_at >= self.interval_ms:
            return [self.recs_write(st, ev.user_id, ev.ts, view)]
        if st.recs_due is None:
            st.recs_due = st.recs_at + self.interval_ms
        return []

    def pending(self, st: UserRecs, user_id: str, view) -> list[Put]:
        """The refresh held back by the debounce, if any (end of input, live timer)."""
        if st.recs_due is None or not self.write_recs:
            return []
        return [self.recs_write(st, user_id, max(st.last_ts, st.recs_at or 0), view)]

    def recommend(self, st: UserRecs, user_id: str, now: int, view, blend: Optional[BlendConfig] = None) -> tuple[Optional[str], list[Rec]]:
        """The user's segment and current list as of event time ``now``."""
        blend = blend or self.config.blend
        exclude = st.seen if blend.exclude_seen else st.purchased
        with view.lock:
            segment, flagged = view.verdict(user_id)
            parts = view.parts(st.seeds[::-1], st.categories, segment, flagged, now, blend)
            cats = view.categories
            return segment, blend_parts(parts, blend, view.ids, (), view.item_categories, view.scratch,
                                        exclude.numbers(view.index), (cats.matrix, cats.count))

    def recs_write(self, st: UserRecs, user_id: str, now: int, view) -> Put:
        st.recs_at = now
        st.recs_due = None
        st.recs_n += 1
        segment, recs = self.recommend(st, user_id, now, view)
        if not recs:
            # The models had nothing yet (the first events of a run): try again at the
            # user's next event, on the live timer or at the end of the input.
            st.recs_due = now
        doc = {
            "user_id": user_id,
            "recomm_id": recomm_id(user_id, now, st.recs_n),
            "generated_at": iso_ms(now),
            "segment": segment,
            "items": [{"item_id": r.item_id, "score": r.score, "reason": r.reason} for r in recs],
        }
        return Put(self.keys.recs(user_id), orjson.dumps(doc), self.config.user_ttl_s)
