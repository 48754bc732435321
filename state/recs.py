"""Per-user recommendation state and the documents a frontend reads about a user.

The recommendation step is keyed by user and runs on every worker. For each
:class:`~pulse.state.engine.RecsUpdate` of the model step it keeps what the user's list
depends on — the items the user must not get (purchased, or everything seen), the
user's strongest categories, segment and anomaly flag — and writes:

* ``pulse:user:{<id>}:recs``: the user's list, blended from a
  :mod:`~pulse.state.view` of the models (:func:`~pulse.operators.recommend.blend_parts`),
  at most once per ``recs_interval_s`` of event time (debounced: a refresh held back is
  written at the user's next update, on a wall-clock timer in live runs, or at the end of
  the input); at once when the anomaly flag is raised or cleared (flagged users get
  non-personalized lists);
* ``pulse:user:{<id>}:profile``: the user step's profile document with the segment,
  its traits and the anomaly verdict.

Values depend on event time only, so a replay in one process writes the same documents
every time.

Example:

>>> from pulse.state.engine import Engine, EngineConfig, ModelUpdate
>>> from pulse.state.view import LocalView
>>> from pulse.operators.events import Event
>>> eng = Engine(EngineConfig(recs_interval_s=0))
>>> _, up = eng.learn_one(ModelUpdate("u1", Event(user_id="u1", type="view", ts=1_000, item_id="a"), 1.0, {"events": 1}, ()))
>>> recs = Recommender(eng.config)
>>> st = UserRecs()
>>> sorted(w.key for w in recs.learn_one(st, up, LocalView(eng)))
['pulse:user:{u1}:profile', 'pulse:user:{u1}:recs']
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
import orjson

from pulse.operators.recommend import BlendConfig, Rec, blend_parts
from pulse.state.engine import EngineConfig, RecsUpdate, iso_ms
from pulse.state.store import Put, Write


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
    """What the recommendation step remembers about one user."""

    __slots__ = ("user_id", "seeds", "seen", "purchased", "categories", "segment", "flagged",
                 "recs_at", "recs_due", "recs_n", "last_ts")

    def __init__(self, max_seen: int = 2_000) -> None:
        self.user_id: Optional[str] = None
        self.seeds: tuple[str, ...] = ()  # recent distinct items, newest first
        self.seen = ItemSet(max_seen)
        self.purchased = ItemSet(max_seen)
        self.categories: list[tuple[str, float]] = []  # strongest first
        self.segment: Optional[str] = None
        self.flagged = False
        self.recs_at: Optional[int] = None
        self.recs_due: Optional[int] = None
        self.recs_n = 0
        self.last_ts = 0


def recomm_id(user_id: str, ts: int, n: int) -> str:
    """A fresh id for every list, yet the same on every replay."""
    h = hashlib.blake2b(f"{user_id}\x00{ts}\x00{n}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Recommender:
    """Turns :class:`~pulse.state.engine.RecsUpdate` values into a user's documents (see
    the module docstring); ``write_recs=False`` (offline evaluation) keeps the state and
    writes no lists."""

    def __init__(self, config: EngineConfig, write_recs: bool = True) -> None:
        self.config = config
        self.keys = config.keys
        self.interval_ms = int(config.recs_interval_s * 1000)
        self.write_recs = write_recs

    def learn_one(self, st: UserRecs, up: RecsUpdate, view) -> list[Write]:
        """Fold in one update; returns the writes it causes."""
        writes: list[Write] = []
        st.user_id = up.user_id
        st.seeds = up.seeds
        st.segment = up.segment
        st.flagged = up.anomaly["flagged"]
        if up.profile is not None:
            st.categories = list(up.profile.get("categories", {}).items())[:3]
            writes.append(self.profile_write(up))
        if self.write_recs and up.flag_changed and st.recs_at is not None:
            # Flagged users fall back to non-personalized lists (and back again when
            # cleared): replace the list they have now rather than at their next event.
            writes.append(self.recs_write(st, max(st.last_ts, st.recs_at), view))
        if up.item is None:
            return writes
        if up.ts > st.last_ts:
            st.last_ts = up.ts
        st.seen.add(up.item)
        if up.type == "purchase":
            st.purchased.add(up.item)
        if self.write_recs:
            if st.recs_at is None or up.ts - st.recs_at >= self.interval_ms:
                writes.append(self.recs_write(st, up.ts, view))
            elif st.recs_due is None:
                st.recs_due = st.recs_at + self.interval_ms
        return writes

    def pending(self, st: UserRecs, view) -> list[Write]:
        """The refresh held back by the debounce, if any (end of input, live timer)."""
        if st.recs_due is None or not self.write_recs:
            return []
        return [self.recs_write(st, max(st.last_ts, st.recs_at or 0), view)]

    def recommend(self, st: UserRecs, now: int, view, blend: Optional[BlendConfig] = None) -> list[Rec]:
        """The user's current list as of event time ``now``."""
        blend = blend or self.config.blend
        exclude = st.seen if blend.exclude_seen else st.purchased
        with view.lock:
            parts = view.parts(st.seeds, st.categories, st.segment, st.flagged, now, blend)
            cats = view.categories
            return blend_parts(parts, blend, view.ids, (), view.item_categories, view.scratch, exclude.numbers(view.index),
                               (cats.matrix, cats.count))

    def recs_write(self, st: UserRecs, now: int, view) -> Put:
        st.recs_at = now
        st.recs_due = None
        st.recs_n += 1
        user_id = st.user_id
        doc = {
            "user_id": user_id,
            "recomm_id": recomm_id(user_id, now, st.recs_n),
            "generated_at": iso_ms(now),
            "segment": st.segment,
            "items": [{"item_id": r.item_id, "score": r.score, "reason": r.reason} for r in self.recommend(st, now, view)],
        }
        return Put(self.keys.recs(user_id), orjson.dumps(doc), self.config.user_ttl_s)

    def profile_write(self, up: RecsUpdate) -> Put:
        doc = {
            "user_id": up.user_id,
            **up.profile,
            "segment": up.segment,
            "segment_traits": list(up.traits),
            "anomaly": up.anomaly,
        }
        return Put(self.keys.profile(up.user_id), orjson.dumps(doc), self.config.user_ttl_s)
