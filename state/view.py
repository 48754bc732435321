"""What the recommendation step reads of the models: neighbour lists, trending heads and
item categories, as :class:`~pulse.operators.recommend.Candidates` in item numbers.

The item-side models (co-visitation, trending) are learned by the model step
(:class:`~pulse.state.items.ItemModels`), downstream of the list step that blends users'
lists (:mod:`pulse.state.recs`) on any worker of any process. The dataflow is a DAG, so
the models cannot flow back to it; instead the list step reads a *view* of them: the
seeds' neighbour lists and the trending heads. (The user's segment and anomaly flag reach
the list step itself, from the River step, upstream.)

* :class:`LocalView` when the model step lives in the same process: it reads the
  models themselves (under a lock shared with the model step, which compiled kernels
  need: they release the GIL). A replay in one process reads the models as they stand
  after the batches before the current one, the same on every run and every resume.
* :class:`RemoteView` in the other processes of a cluster: a cache filled from the
  keys the model step writes to Redis (each item's neighbour list in
  ``pulse:item:{<id>}:nbrs``, the trending sorted sets), refreshed by a background
  thread every ``refresh_s`` with what blends asked for (the blend never waits for
  Redis). A list read is at most ``max_age_s`` + ``refresh_s`` plus one global round
  older than the models; one never asked for before is missing from the first blends
  that ask.

Both number items in their own :class:`~pulse.state.covisit.ItemIndex`; a user's
exclusions are kept as ids and numbered through the view's index
(:meth:`pulse.state.recs.ItemSet.numbers`).

Example:

>>> from pulse.operators.messages import ItemUpdate
>>> from pulse.state.items import ItemModels
>>> models = ItemModels()
>>> models.learn_one(ItemUpdate("u1", True, "a", (), 1_000, 1.0, (), None, False))
>>> view = LocalView(models)
>>> c = view.parts(("a",), (), None, False, 1_000)
>>> [c.kind_names[k] for k in c.kinds]
['trending']
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import orjson

from pulse.operators.recommend import BlendConfig, Candidates, ListPool, Scratch, warm_up
from pulse.state.covisit import ItemIndex
from pulse.state.keys import KeySchema
from pulse.state.store import RedisLike, connect

if TYPE_CHECKING:  # pragma: no cover
    from pulse.state.items import ItemModels

log = logging.getLogger("pulse.view")

#: categories per item the diversity cap counts (an item's first ones)
MAX_ITEM_CATEGORIES = 8


class ItemCategories:
    """Item number → its first :data:`MAX_ITEM_CATEGORIES` categories as numbers (an
    int64 matrix padded with -1), what the compiled category cap reads.

    >>> cats = ItemCategories()
    >>> cats.set(2, ("shoes", "sale"))
    >>> cats.matrix[2, :3].tolist(), cats.count
    ([0, 1, -1], 2)
    """

    __slots__ = ("matrix", "numbers")

    def __init__(self) -> None:
        self.matrix = np.full((64, MAX_ITEM_CATEGORIES), -1, dtype=np.int64)
        self.numbers: dict[str, int] = {}

    @property
    def count(self) -> int:
        return len(self.numbers)

    def set(self, number: int, category: Sequence[str]) -> None:
        m = self.matrix
        if number >= len(m):
            grown = np.full((max(number + 1, 2 * len(m)), MAX_ITEM_CATEGORIES), -1, dtype=np.int64)
            grown[: len(m)] = m
            m = self.matrix = grown
        row = [self.numbers.setdefault(c, len(self.numbers)) for c in category[:MAX_ITEM_CATEGORIES]]
        m[number] = -1
        m[number, : len(row)] = row


class LocalView:
    """The :class:`~pulse.state.items.ItemModels` of this process's model step.

    Co-visitation parts are the cached neighbour lists of the user's seed items (newest
    first, each step back counting ``seed_recency`` less); trending-like parts offer the
    best ``2k`` of their cached ranking (items the user must not get are dropped by the
    blend, so they still set their kind's scale). Kinds without weight are left out."""

    def __init__(self, models: "ItemModels") -> None:
        self.models = models
        self.lock = models.lock
        self.index = models.index
        self.categories = models.categories
        self.item_categories = models.item_categories
        self.scratch = Scratch()
        c = models.config
        self.seed_factors = [c.recs_seed_recency**k for k in range(c.recs_seed_items)]
        self._reasons: dict[str, str] = {}
        warm_up()

    @property
    def ids(self) -> list[str]:
        return self.index.ids

    def parts(self, seeds: Sequence[str], categories: Sequence[tuple[str, float]], segment: Optional[str],
              flagged: bool, now: int, blend: Optional[BlendConfig] = None) -> Candidates:
        models = self.models
        config = models.config
        blend = blend or config.blend
        weights = blend.weights
        depth = blend.k * 2
        cv = models.covisit
        c = Candidates(cv.lists)

        def head(t, kind: str, reason: str, f: float) -> None:
            nums, stored = t.head_arrays(depth)
            if len(nums):
                c.add(kind, reason, nums, stored, f * t.factor(now))

        if weights.get("trending", 0.0) > 0:
            head(models.trending, "trending", "trending", 1.0)
        if flagged:
            return c
        if weights.get("co_visit", 0.0) > 0 and seeds:
            get = self.index.numbers.get
            for seed, f in zip(seeds, self.seed_factors):
                i = get(seed)
                if i is not None and cv.fresh(i):
                    c.add_seed(i, cv.reasons[i], f)
        if weights.get("category", 0.0) > 0:
            for cat, affinity in categories[:3]:
                t = models.by_category.get(cat)
                if t is not None and affinity > 0:
                    reason = self._reasons.get(cat)
                    if reason is None:
                        reason = self._reasons[cat] = f"category:{cat}"
                    head(t, "category", reason, affinity)
        if segment is not None and weights.get("segment", 0.0) > 0:
            t = models.by_segment.get(segment)
            if t is not None:
                head(t, "segment", "segment", 1.0)
        return c


class RemoteView:
    """The models as the model step last wrote them to Redis (see the module docstring).

    :arg url: the Redis the flow writes to (a URL or a :class:`~pulse.state.store.RedisTarget`).
    :arg keys: its key schema.
    :arg config: the blend (list length, weights).
    :arg seed_recency: how much less each older seed counts.
    :arg refresh_s: how often the background thread fetches what blends asked for.
    :arg max_age_s: a list is fetched again when a blend asks for it this long after
        it was last fetched.
    """

    def __init__(self, url: RedisLike, keys: KeySchema, config: BlendConfig, seed_recency: float = 0.9,
                 seed_items: int = 8, refresh_s: float = 0.2, max_age_s: float = 1.0) -> None:
        self.redis_at = url
        self._client = None  # connected by the first refresh (Redis may be down now)
        self.keys = keys
        self.config = config
        self.seed_factors = [seed_recency**k for k in range(seed_items)]
        self.refresh_s = refresh_s
        self.max_age_s = max_age_s
        self.lock = threading.Lock()
        self.index = ItemIndex()
        self.categories = ItemCategories()
        self.item_categories: dict[str, tuple[str, ...]] = {}
        self._read_categories: dict[str, list[str]] = {}  # each item's categories as last read
        self.scratch = Scratch()
        warm_up()
        self.pool = ListPool()
        self.reasons: list[str] = []
        #: what blends asked for since the last refresh (items, categories, segments)
        self._wanted: tuple[set, set, set] = (set(), set(), set())
        self._heads: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        #: item number -> when its list was last fetched, and the hash of the document
        #: installed then
        self._fetched: dict[int, tuple[float, int]] = {}
        self._stop = threading.Event()
        try:  # the trending head at once: a first blend then has something to offer
            self.refresh()
        except Exception as err:
            log.warning("reading the model view from Redis failed (%s); retrying in the background", type(err).__name__)
        self._thread = threading.Thread(target=self._run, name="pulse-view-refresh", daemon=True)
        self._thread.start()

    @property
    def ids(self) -> list[str]:
        return self.index.ids

    def close(self) -> None:
        self._stop.set()

    def _number(self, item: str) -> int:
        n = self.index.add(item)
        if n >= len(self.reasons):
            ids = self.index.ids
            self.reasons.extend(f"co_visit:{ids[i]}" for i in range(len(self.reasons), len(ids)))
            self.pool.grow(len(ids))
        return n

    def parts(self, seeds: Sequence[str], categories: Sequence[tuple[str, float]], segment: Optional[str],
              flagged: bool, now: int, blend: Optional[BlendConfig] = None) -> Candidates:
        weights = (blend or self.config).weights
        c = Candidates(self.pool)
        items, cats, segs = self._wanted
        heads = self._heads

        def head(kind: str, name: str, reason: str, f: float) -> None:
            h = heads.get((kind, name))
            if h is not None and len(h[0]):
                c.add(kind, reason, h[0], h[1], f)

        if weights.get("trending", 0.0) > 0:
            head("trending", "", "trending", 1.0)
        if flagged:
            return c
        if weights.get("co_visit", 0.0) > 0:
            numbers = self.index.numbers
            length = self.pool.length
            for seed, f in zip(seeds, self.seed_factors):
                items.add(seed)
                i = numbers.get(seed)
                if i is not None and i < len(length) and length[i]:
                    c.add_seed(i, self.reasons[i], f)
        if weights.get("category", 0.0) > 0:
            for cat, affinity in categories[:3]:
                if affinity > 0:
                    if ("category", cat) not in heads:
                        cats.add(cat)
                    head("category", cat, f"category:{cat}", affinity)
        if segment is not None and weights.get("segment", 0.0) > 0:
            if ("segment", segment) not in heads:
                segs.add(segment)
            head("segment", segment, "segment", 1.0)
        return c

    def _categorise(self, item: str, number: int, category: list[str]) -> None:
        cats = tuple(category)
        self._read_categories[item] = category
        self.item_categories[item] = cats
        self.categories.set(number, cats)

    # -- the background refresh ------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception as err:  # Redis down: the views stay as they are, and say so
                log.warning("refreshing the model view from Redis failed (%s); retrying", type(err).__name__)

    def refresh(self) -> None:
        """Fetch the lists blends asked for that are missing or older than ``max_age_s``,
        and the heads."""
        with self.lock:
            items, cats, segs = self._wanted
            self._wanted = (set(), set(), set())
            now = time.monotonic()
            numbers, last = self.index.numbers, self._fetched
            # what blends asked for that is missing or older than max_age_s
            names = sorted(i for i in items if now - last.get(numbers.get(i, -1), _NEVER)[0] >= self.max_age_s)
            cats |= {n for k, n in self._heads if k == "category"}
            segs |= {n for k, n in self._heads if k == "segment"}
        depth = 2 * self.config.k
        keys = self.keys
        if self._client is None:
            self._client = connect(self.redis_at, socket_timeout=10, socket_connect_timeout=5)
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.get(keys.nbrs(name))
        heads = [("trending", "", keys.trending)]
        heads += [("category", c, keys.category_trending(c)) for c in sorted(cats)]
        heads += [("segment", s, keys.segment_trending(s)) for s in sorted(segs)]
        for _, _, key in heads:
            pipe.zrevrange(key, 0, depth - 1, withscores=True)
        replies = pipe.execute()
        fetched = time.monotonic()
        # Only lists whose documents changed are parsed and installed (lists change at
        # the model step's rounds, and are read again every max_age_s). Blends wait for
        # the lock: parse outside it, and install a few lists at a time (a refresh of
        # 2,000 lists of 40 neighbours held it for 90 ms at once here; in chunks, for at
        # most 5 ms at a time). Only this thread numbers items and writes _fetched, so it
        # reads both unlocked.
        changed = []
        for name, raw in zip(names, replies):
            version = hash(raw)
            i = numbers.get(name)
            if i is not None and last.get(i, _NEVER)[1] == version:
                last[i] = (fetched, version)
            else:
                changed.append((name, raw, version))
        for start in range(0, len(changed), _INSTALL_AT_ONCE):
            docs = [(name, orjson.loads(raw) if raw is not None else None, version)
                    for name, raw, version in changed[start:start + _INSTALL_AT_ONCE]]
            with self.lock:
                for name, doc, version in docs:
                    self._install(name, doc, (fetched, version))
        with self.lock:
            for (kind, name, _), members in zip(heads, replies[len(names):]):
                nums = np.fromiter((self._number(m.decode()) for m, _ in members), dtype=np.int64, count=len(members))
                self._heads[(kind, name)] = (nums, np.array([s for _, s in members], dtype=np.float64))

    def _install(self, name: str, doc: Optional[dict], fetched: tuple[float, int]) -> None:
        """Put item ``name``'s neighbour list (its ``nbrs`` document, None: none) in
        the pool (under the lock); ``fetched``: when, and the document's hash."""
        i = self._number(name)
        self._fetched[i] = fetched
        if doc is None:
            self.pool.put(i, _NO_NUMBERS, _NO_SCORES)
            return
        ids, read = doc["n"], self._read_categories
        numbers = list(map(self.index.numbers.get, ids))
        if None in numbers:
            numbers = [self._number(j) for j in ids]
        # (a refresh sees the same neighbours again and again, and their categories
        # rarely change: compare them with the lists last read before making anything)
        for j, jn, jc in [(name, i, doc["c"]), *zip(ids, numbers, doc["k"])]:
            if jc and read.get(j) != jc:
                self._categorise(j, jn, jc)
        self.pool.put(i, np.array(numbers, dtype=np.int64), np.array(doc["s"], dtype=np.float64))


#: lists a refresh installs per hold of the view's lock
_INSTALL_AT_ONCE = 64
#: (when fetched, document hash) of a list never fetched
_NEVER = (-1e9, None)
_NO_NUMBERS = np.zeros(0, dtype=np.int64)
_NO_SCORES = np.zeros(0)
