"""Per-user recommendation state and the user's list.

The list step (keyed by user, downstream of the user step and the River step) keeps
what the user's list depends on: the user's recent distinct items (the seeds of
co-visitation candidates, and what the model step pairs a new item with), the items the
user must not get (purchased, or everything seen), the user's strongest categories, and
what the River models last said of the user (segment, anomaly verdict). For each
update it applies the River step's :class:`~pulse.state.river_models.Verdict` of the
update's windows (writing ``pulse:user:{<id>}:segment`` when it changed, and a flagged
user's trending-only list at once), then tells the model step what it needs to learn
the event (:class:`~pulse.operators.messages.ItemUpdate`). It blends the list from a
:mod:`~pulse.state.view` of the models and writes ``pulse:user:{<id>}:recs`` at most once
per ``recs_interval_s`` of event time: a refresh held back by this debounce is written at
the user's next event, on a wall-clock timer in live runs, or at the end of the input.

Values depend on event time and the view only, so a replay in one process writes the
same lists every time.

Example:

>>> from pulse.operators.events import Event
>>> from pulse.operators.messages import ModelUpdate
>>> from pulse.state.items import ItemModels
>>> from pulse.state.view import LocalView
>>> models = ItemModels(EngineConfig(recs_interval_s=0))
>>> recs = Recommender(models.config); st = recs.new_state()
>>> up = ModelUpdate.of(Event(user_id="u1", type="view", ts=1_000, item_id="a"), 1.0, ())
>>> writes, item_update = recs.learn_update(st, up, None, LocalView(models))
>>> [w.key for w in writes], item_update.recent
(['pulse:user:{u1}:recs'], ())
>>> models.learn_one(item_update)
"""

from __future__ import annotations

import struct
import sys
from typing import Optional, Sequence, Union

import numpy as np
import orjson

from pulse.operators.recommend import BlendConfig, Rec, blend_parts
from pulse.operators.messages import ItemUpdate, ModelUpdate
from pulse.state.config import EngineConfig
from pulse.state.documents import iso_ms, recomm_id
from pulse.state.river_models import Verdict
from pulse.state.schema import doc_number
from pulse.state.store import Delete, Put, StreamPurge, Write


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

    #: from how many items the numbers are kept between calls
    CACHED = 16

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
        a view: do not keep it). Kept for the next call from ``CACHED`` items on: a
        small set costs less to number again than to keep an array."""
        if self._index is index:
            return self._array[: self._size]
        add = index.add
        numbers = np.fromiter((add(i) for i in self.ids), dtype=np.int64, count=len(self.ids))
        if len(numbers) >= self.CACHED:
            self._array, self._size, self._index = numbers, len(numbers), index
        return numbers


_NO_NUMBERS = np.zeros(0, dtype=np.int64)


class UserRecs:
    """What the list step remembers of a user. Laid out for size, as there is one per
    user: ``seen`` only where lists exclude every seen item (``keep_seen``), the
    purchases from the first one on, the strongest categories' names apart from their
    affinities (packed doubles), segment names shared between users."""

    __slots__ = ("recent", "seen", "_purchased", "categories", "_affinities", "recs_at", "recs_due", "recs_n",
                 "last_ts", "segment", "_anomaly", "known")

    def __init__(self, max_seen: int = 2_000, keep_seen: bool = True) -> None:
        self.recent: list[str] = []  # recent distinct items, newest last
        #: the items seen (None where nothing reads them: see Recommender.new_state)
        self.seen: Optional[ItemSet] = ItemSet(max_seen) if keep_seen else None
        self._purchased: Optional[ItemSet] = None  # (made at the first purchase: most users never buy)
        self.categories: tuple[str, ...] = ()  # the strongest first
        self._affinities = b""  # theirs, as doubles
        self.recs_at: Optional[int] = None
        self.recs_due: Optional[int] = None
        self.recs_n = 0
        self.last_ts = 0
        self.segment: Optional[str] = None
        # The anomaly verdict, small: None before the first, the score alone while not
        # flagged (most users; the rest of that verdict is the same for all), else the
        # verdict.
        self._anomaly: Union[None, float, dict] = None
        self.known = False  # whether the model step has had an event of this user

    @property
    def purchased(self) -> ItemSet:
        """The items the user bought (do not add to it: see :meth:`add_purchase`)."""
        return self._purchased if self._purchased is not None else _NOTHING_BOUGHT

    def add_purchase(self, item: str, capacity: int) -> None:
        if self._purchased is None:
            self._purchased = ItemSet(capacity)
        self._purchased.add(item)

    @property
    def affinities(self) -> list[tuple[str, float]]:
        """The user's strongest categories with their decayed affinities, strongest first."""
        return list(zip(self.categories, struct.unpack(f"{len(self.categories)}d", self._affinities)))

    @affinities.setter
    def affinities(self, pairs: Sequence[tuple[str, float]]) -> None:
        self.categories = tuple(sys.intern(c) for c, _ in pairs)
        self._affinities = struct.pack(f"{len(pairs)}d", *(a for _, a in pairs))

    @property
    def anomaly(self) -> dict:
        """The detector's last verdict of the user (:data:`NOT_FLAGGED` before any)."""
        a = self._anomaly
        if a is None:
            return NOT_FLAGGED
        if type(a) is float:
            return {"score": a, "flagged": False, "reason": "", "clear_in": 0}
        return a

    @anomaly.setter
    def anomaly(self, verdict: dict) -> None:
        if verdict == NOT_FLAGGED:
            self._anomaly = None
        elif not verdict["flagged"] and verdict == {"score": verdict["score"], "flagged": False, "reason": "", "clear_in": 0}:
            self._anomaly = float(verdict["score"])
        else:
            self._anomaly = verdict

    @property
    def flagged(self) -> bool:
        return type(self._anomaly) is dict and self._anomaly["flagged"]


#: the purchases of a user who bought nothing (shared, never added to)
_NOTHING_BOUGHT = ItemSet(0)

#: the verdict of a user the anomaly detector has not judged yet
NOT_FLAGGED = {"score": 0.0, "flagged": False}


class Recommender:
    """Keeps :class:`UserRecs` and writes users' lists and verdicts (see the module
    docstring); ``write_recs=False`` (offline evaluation) keeps the state and writes
    nothing."""

    def __init__(self, config: EngineConfig, write_recs: bool = True) -> None:
        self.config = config
        self.keys = config.keys
        self.interval_ms = int(config.recs_interval_s * 1000)
        self.seeds = config.recs_seed_items
        self.recent = max(config.recs_seed_items, config.covisit_window)
        self.write_recs = write_recs

    def new_state(self) -> UserRecs:
        """A new user's state (keeping the items seen only where lists exclude them)."""
        return UserRecs(self.config.max_seen, keep_seen=self.config.blend.exclude_seen)

    def learn_update(self, st: UserRecs, up: ModelUpdate, verdict: Optional[Verdict], view) -> tuple[list[Put], ItemUpdate]:
        """Fold in one update and the River step's ``verdict`` of its windows (an update
        with windows has one); returns the writes due and what the model step learns."""
        if up.needs_verdict and verdict is None:
            raise ValueError(f"an update of user {up.user_id!r} closed windows or changed the bot rules' verdict, "
                             "but came without the River step's verdict")
        writes: list[Put] = []
        new_flag = False
        if verdict is not None:
            before = (st.segment, st.anomaly)
            was_flagged = st.flagged
            for anomaly, _, new in verdict.anomalies:
                st.anomaly = anomaly
                new_flag = new_flag or new
            if verdict.segment is not None:
                st.segment = sys.intern(verdict.segment)
            if (st.segment, st.anomaly) != before and self.write_recs:
                writes.append(Put(self.keys.verdict(up.user_id), verdict_doc(st.segment, st.anomaly), self.config.verdict_ttl_s))
            if st.flagged and not was_flagged and self.write_recs:
                # A newly flagged user's list, at once: trending only (a replay's last
                # windows close after the user's last event).
                writes.append(self.recs_write(st, up.user_id, max(st.last_ts, up.ts), view))
        if up.affinities is not None:
            st.affinities = up.affinities
        # (a user's last windows, after a live run freed this step's state of the user,
        # are no new user)
        item_update = ItemUpdate(up.user_id, up.event, up.item_id, up.category, up.ts, up.weight, tuple(st.recent),
                                 st.segment, st.flagged, new_flag, up.event and not st.known, up.src, up.seq)
        st.known = st.known or up.event
        if up.event:
            writes.extend(self._learn_event(st, up, view))
        return writes, item_update

    def forget(self, up: ModelUpdate) -> tuple[list[Write], ItemUpdate]:
        """The user is forgotten at ``up`` (:mod:`pulse.state.privacy`): the deletes of
        what this step wrote of the user (the caller drops the user's state), and what
        the model step learns (nothing but the update's place in the order)."""
        writes: list[Write] = []
        if self.write_recs:
            writes = [Delete(self.keys.recs(up.user_id)), Delete(self.keys.verdict(up.user_id)),
                      StreamPurge(self.keys.updates, "user_id", up.user_id)]
        return writes, ItemUpdate(up.user_id, up.event, None, (), up.ts, 0.0, (), None, False, src=up.src, seq=up.seq)

    def _learn_event(self, st: UserRecs, up: ModelUpdate, view) -> list[Put]:
        item = up.item_id
        if item is not None:
            item = sys.intern(item)  # users share one copy of each id
            if up.weight > 0:
                recent = st.recent
                if not recent or recent[-1] != item:
                    if item in recent:
                        recent.remove(item)  # distinct: a revisit moves it to the end
                    recent.append(item)
                    if len(recent) > self.recent:  # (neither the seeds nor co-visitation reach further)
                        del recent[0]
            if st.seen is not None:
                st.seen.add(item)
            if up.purchase:
                st.add_purchase(item, self.config.max_seen)
        if up.ts > st.last_ts:
            st.last_ts = up.ts
        if not self.write_recs:
            return []
        if st.recs_at is None or up.ts - st.recs_at >= self.interval_ms:
            return [self.recs_write(st, up.user_id, up.ts, view)]
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
        if blend.exclude_seen:
            if st.seen is None:
                raise ValueError("a list that excludes every seen item needs a state that keeps them: "
                                 "make it with Recommender.new_state() under a blend with exclude_seen=True")
            exclude = st.seen
        else:
            exclude = st.purchased
        seeds = st.recent[: -self.seeds - 1 : -1]
        with view.lock:
            parts = view.parts(seeds, st.affinities, st.segment, st.flagged, now, blend)
            cats = view.categories
            return st.segment, blend_parts(parts, blend, view.ids, (), view.item_categories, view.scratch,
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
        # (no user id: the key has it; see pulse.state.schema for the layout)
        doc = {
            "recomm_id": recomm_id(user_id, now, st.recs_n),
            "generated_at": iso_ms(now),
            "segment": segment,
            "items": [{"item_id": r.item_id, "score": doc_number(r.score), "reason": r.reason} for r in recs],
        }
        return Put(self.keys.recs(user_id), orjson.dumps(doc), self.config.recs_ttl_s)


def verdict_doc(segment: Optional[str], anomaly: dict) -> bytes:
    """The value of ``pulse:user:{<id>}:segment``: the segment (its traits are in
    ``pulse:segments``) and the anomaly verdict, whose reason and countdown are written
    only while the user is flagged (a calm verdict's are always "" and 0).

    >>> verdict_doc("s1", {"score": 0.12, "flagged": False, "reason": "", "clear_in": 0})
    b'{"segment":"s1","anomaly":{"score":0.12,"flagged":false}}'
    """
    if not anomaly["flagged"]:
        anomaly = {"score": anomaly["score"], "flagged": False}
    return orjson.dumps({"segment": segment, "anomaly": anomaly})
