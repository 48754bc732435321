"""Event-time windows of one user's engagement: tumbling windows and sessions.

Bytewax's own windowing clocks advance with the wall clock too, which makes replays of
historical logs crawl, and they can emit a window twice when a key's clock state is
discarded (see ../shared/notes/bytewax-0.21.md). Pulse therefore keeps its own small
per-user window state with a per-user watermark: the largest event time the user has
sent, minus the allowed lateness. A window closes once the watermark passes its end and
is emitted exactly once; the state remembers up to where each window kind has been
emitted, so an event that would reopen an emitted window is *late*: it is counted and
handed back to the caller (which routes it to a side output), never silently dropped.

Every window reports the same engagement features (:class:`WindowAgg`): events per type,
distinct items and categories, total and mean dwell, mean scroll depth, click-through
(clicks / views), cart and purchase rates, and its length in event time.

The state is kept per user, for every user, so it is laid out for size. A user's open
windows (one per tumbling size, sometimes two across a boundary, and the session)
mostly hold the same few events, so the state keeps the *events* rather than one
aggregate per window: a log of the accepted events in arrival order, a few 64-bit
integers each (event time; type, dwell and flags in one; a hash of the item and of each
category; the scroll depth's bits), in one ``array('q')`` after a few clock fields. A
window is aggregated from the log when it closes, in arrival order, so sums come out as
if it had been aggregated event by event. An event leaves the log once every window it
belongs to has closed. When a busy user's log outgrows :data:`LOG_SLOTS`, it is folded
into one aggregate per open window (:class:`WindowAgg`), and the user's events go
straight into those until they have all closed, then into a log again: the state stays
bounded whatever the rate, and a busy user costs one aggregate update per window and
event.

Distinct items and categories are counted by a stable 64-bit hash of their ids
(:func:`stable_hash`), not by the ids: two distinct ids count as one only if their hashes
collide, about one chance in 10^11 for a window of 10,000 items.

Example:

>>> from pulse.operators.events import Event
>>> w = UserWindows(tumbling_s=(60,), session_gap_s=1800, allowed_lateness_s=0)
>>> e = lambda t, kind="view": Event(user_id="u", type=kind, ts=t * 1000, item_id="i")
>>> w.learn_one(e(10)), w.learn_one(e(20, "click"))
(([], []), ([], []))
>>> closed = w.learn_one(e(70))[0]   # the watermark passed 60 s: [0, 60) closes
>>> closed[0].kind, closed[0].events, closed[0].ctr
('tumbling:60', 2, 1.0)
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple, Optional
from zlib import crc32

from pulse.operators.events import EVENT_TYPES, Event

#: distinct items and categories counted per window, at most (as many are kept)
MAX_ITEMS = 10_000
MAX_CATEGORIES = 1_000
#: a user's event log is folded into per-window aggregates beyond this many 64-bit slots
LOG_SLOTS = 256


def stable_hash(key: str) -> int:
    """A signed 64-bit hash of an id, the same in every process and run (unlike ``hash``).

    Two CRC-32s, of the UTF-8 bytes and of the bytes reversed: a third of the cost of
    ``blake2b``, and together a 64-bit code (their combined map has full rank over GF(2)
    from 12-byte ids on, 62 bits at 8 bytes, and the differences that collide there are
    never between two ASCII ids), so distinct ids collide about once in 2^62 pairs.

    >>> stable_hash("item-1") == stable_hash("item-1") != stable_hash("item-2")
    True
    """
    b = key.encode()
    return (crc32(b) - (1 << 31)) << 32 | crc32(b[::-1])


@dataclass(slots=True)
class WindowAgg:
    """Engagement features of one window of one user.

    ``items`` and ``categories`` hold the hashes of the distinct ids (only their number
    is a feature)."""

    kind: str  # "tumbling:<seconds>" or "session"
    start_ms: int
    end_ms: int
    events: int = 0
    counts: dict = field(default_factory=dict)
    items: set = field(default_factory=set)
    categories: set = field(default_factory=set)
    dwell_total_ms: int = 0
    dwell_n: int = 0
    scroll_total: float = 0.0
    scroll_n: int = 0
    first_ms: Optional[int] = None
    last_ms: Optional[int] = None

    def count(self, kind: str, item: Optional[int], categories: tuple, dwell: Optional[int],
             scroll: Optional[float], ts: int) -> None:
        """Count one event (``item`` and ``categories`` as hashes)."""
        self.events += 1
        counts = self.counts
        counts[kind] = counts.get(kind, 0) + 1
        if item is not None and len(self.items) < MAX_ITEMS:
            self.items.add(item)
        if categories and len(self.categories) < MAX_CATEGORIES:  # (an event's categories all count)
            self.categories.update(categories)
        if dwell is not None:
            self.dwell_total_ms += dwell
            self.dwell_n += 1
        if scroll is not None:
            self.scroll_total += scroll
            self.scroll_n += 1
        first = self.first_ms
        if first is None or ts < first:
            self.first_ms = ts
        last = self.last_ms
        if last is None or ts > last:
            self.last_ms = ts

    # -- features ------------------------------------------------------------------
    @property
    def views(self) -> int:
        return self.counts.get("view", 0)

    @property
    def ctr(self) -> float:
        """Clicks per view (0 when there was no view)."""
        return self.counts.get("click", 0) / self.views if self.views else 0.0

    @property
    def cart_rate(self) -> float:
        return self.counts.get("add_to_cart", 0) / self.events if self.events else 0.0

    @property
    def purchase_rate(self) -> float:
        return self.counts.get("purchase", 0) / self.events if self.events else 0.0

    @property
    def dwell_mean_ms(self) -> float:
        return self.dwell_total_ms / self.dwell_n if self.dwell_n else 0.0

    @property
    def scroll_mean(self) -> float:
        return self.scroll_total / self.scroll_n if self.scroll_n else 0.0

    @property
    def length_s(self) -> float:
        if self.first_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.first_ms) / 1000

    def features(self) -> dict:
        """The window's features as plain numbers (what models and Redis see)."""
        return {
            "events": self.events,
            "distinct_items": len(self.items),
            "distinct_categories": len(self.categories),
            "dwell_total_ms": self.dwell_total_ms,
            "dwell_mean_ms": round(self.dwell_mean_ms, 3),
            "scroll_mean": round(self.scroll_mean, 3),
            "ctr": round(self.ctr, 6),
            "cart_rate": round(self.cart_rate, 6),
            "purchase_rate": round(self.purchase_rate, 6),
            "length_s": self.length_s,
            "counts": dict(sorted(self.counts.items())),
        }

    def summary(self) -> "WindowSummary":
        """What the models need of the window, as one small immutable tuple (it crosses
        processes: a tuple of numbers pickles in a fraction of the aggregate's time and
        space, and drops the distinct-id sets)."""
        c = self.counts
        return WindowSummary(self.kind, self.start_ms, self.end_ms, self.events, len(self.items), c.get("view", 0),
                             c.get("click", 0), c.get("add_to_cart", 0), c.get("purchase", 0), self.dwell_mean_ms,
                             self.scroll_mean, self.length_s)


class WindowSummary(NamedTuple):
    """A closed window's features as the models read them (see :meth:`WindowAgg.summary`);
    the rates are worked out exactly as the aggregate's.

    >>> w = WindowAgg("session", 0, 60_000, events=4, counts={"view": 2, "click": 1, "purchase": 1})
    >>> s = w.summary()
    >>> (s.events, s.ctr, s.purchase_rate) == (w.events, w.ctr, w.purchase_rate)
    True
    """

    kind: str
    start_ms: int
    end_ms: int
    events: int
    distinct_items: int
    views: int
    clicks: int
    carts: int
    purchases: int
    dwell_mean_ms: float
    scroll_mean: float
    length_s: float

    @property
    def ctr(self) -> float:
        """Clicks per view (0 when there was no view)."""
        return self.clicks / self.views if self.views else 0.0

    @property
    def cart_rate(self) -> float:
        return self.carts / self.events if self.events else 0.0

    @property
    def purchase_rate(self) -> float:
        return self.purchases / self.events if self.events else 0.0


def summarize(closed: list[WindowAgg], kinds: frozenset) -> tuple[WindowSummary, ...]:
    """The summaries of the closed windows whose kind is in ``kinds`` (the ones a model
    learns from), in order."""
    return tuple(w.summary() for w in closed if w.kind in kinds)


# An event in the log: [ts, code, item hash?, category hashes..., scroll bits?], where
# code = type index | categories << 4 | flags | dwell << 12.
_TYPE_INDEX = {t: i for i, t in enumerate(EVENT_TYPES)}
_HAS_ITEM, _HAS_DWELL, _HAS_SCROLL = 1 << 9, 1 << 10, 1 << 11
_DOUBLE, _INT64 = struct.Struct("<d"), struct.Struct("<q")

# The clock fields before the log. Event times fit in int64, so its ends mark "none".
_NONE, _NEVER = -(1 << 63), (1 << 63) - 1
MAX_TS, LATE, LATE_BEFORE, SESSION_UNTIL, SESSION_LAST, NEXT_END, EMITTED = range(7)
_SESSION = "session"  # the session's key among the aggregates of a folded log


class _Spec:
    """What all users of one configuration share: window sizes, names, gap, lateness."""

    __slots__ = ("args", "sizes_ms", "names", "gap_ms", "lateness_ms", "log_start")

    def __init__(self, tumbling_s: tuple, session_gap_s: float, allowed_lateness_s: float) -> None:
        self.args = (tumbling_s, session_gap_s, allowed_lateness_s)
        self.sizes_ms = tuple(dict.fromkeys(int(s * 1000) for s in tumbling_s))
        self.names = tuple(f"tumbling:{size // 1000}" for size in self.sizes_ms)
        self.gap_ms = int(session_gap_s * 1000)
        self.lateness_ms = int(allowed_lateness_s * 1000)
        self.log_start = EMITTED + len(self.sizes_ms)  # after emitted-until per size

    def __reduce__(self):  # a snapshot names the configuration; a resumed user shares it again
        return _spec, self.args


@lru_cache(maxsize=None)
def _spec(tumbling_s: tuple, session_gap_s: float, allowed_lateness_s: float) -> _Spec:
    return _Spec(tumbling_s, session_gap_s, allowed_lateness_s)


class UserWindows:
    """One user's open windows in event time.

    :arg tumbling_s: sizes of the tumbling windows, in seconds (e.g. 60 and 3600).
    :arg session_gap_s: a session ends after this long without events.
    :arg allowed_lateness_s: how far behind the user's newest event time an event may
        arrive and still be counted in its window.

    :meth:`learn_one` returns ``(closed windows, [])`` or ``([], [the late event])``
    (a late event is also counted in :attr:`late`).
    """

    __slots__ = ("spec", "_data", "_aggregates")

    def __init__(self, tumbling_s=(60, 3600), session_gap_s: int = 1800, allowed_lateness_s: int = 5) -> None:
        self.spec = spec = _spec(tuple(tumbling_s), session_gap_s, allowed_lateness_s)
        # the clock fields (see MAX_TS ...: the largest event time, late events so far,
        # the time before which an event is late, i.e. the greatest of the session's and
        # each size's emitted-until, which start at -1; the session's last event time;
        # the earliest end of an open tumbling window), then the log
        self._data = array("q", [_NONE, 0, -1, -1, _NONE, _NEVER] + [-1] * len(spec.sizes_ms))
        #: (size_ms, start) or "session" -> the aggregate of an open window's events,
        #: while the log is folded (None otherwise)
        self._aggregates: Optional[dict] = None

    @property
    def watermark(self) -> Optional[int]:
        max_ts = self._data[MAX_TS]
        return None if max_ts == _NONE else max_ts - self.spec.lateness_ms

    @property
    def late(self) -> int:
        """Late events seen so far."""
        return self._data[LATE]

    def learn_one(self, ev: Event) -> tuple[list[WindowAgg], list[Event]]:
        ts = ev.ts
        d = self._data
        spec = self.spec
        max_ts = d[MAX_TS]
        if ts < d[LATE_BEFORE] or ts < max_ts - spec.lateness_ms:
            d[LATE] += 1
            return [], [ev]
        next_end = d[NEXT_END]
        for size in spec.sizes_ms:
            end = ts - ts % size + size
            if end < next_end:
                next_end = end
        d[NEXT_END] = next_end
        closed: list[WindowAgg] = []
        last = d[SESSION_LAST]
        if last == _NONE:
            last = ts
        elif ts > last + spec.gap_ms:  # (no tumbling window is due: the watermark did not move)
            closed.extend(self._close(_NONE, True))
            last = ts
        elif ts > last:
            last = ts
        d[SESSION_LAST] = last
        if self._aggregates:
            self._aggregate(_fields(ev))
        else:
            self._log(ev)
        if ts > max_ts:
            d[MAX_TS] = max_ts = ts
        watermark = max_ts - spec.lateness_ms
        if next_end <= watermark or last + spec.gap_ms <= watermark:
            closed.extend(self.advance(watermark))
        return closed, []

    def advance(self, watermark: Optional[int]) -> list[WindowAgg]:
        """Close every window that ends at or before ``watermark`` (event time, ms)."""
        if watermark is None:
            return []
        d = self._data
        due_session = d[SESSION_LAST] != _NONE and d[SESSION_LAST] + self.spec.gap_ms <= watermark
        if d[NEXT_END] > watermark and not due_session:
            return []
        return self._close(watermark, due_session)

    def close_all(self) -> list[WindowAgg]:
        """Close every open window (end of a replay, or an idle user's eviction)."""
        return self.advance(float("inf"))  # type: ignore[arg-type]

    # -- the log -----------------------------------------------------------------------
    def _log(self, ev: Event) -> None:
        categories, item, dwell, scroll = ev.category, ev.item_id, ev.dwell_ms, ev.scroll_pct
        code = _TYPE_INDEX[ev.type] | len(categories) << 4
        if dwell is not None:
            code |= _HAS_DWELL | dwell << 12
        entry = [ev.ts, code]
        if item is not None:
            entry[1] = code | _HAS_ITEM
            entry.append(stable_hash(item))
        entry.extend(map(stable_hash, categories))
        if scroll is not None:
            entry[1] |= _HAS_SCROLL
            entry.append(_INT64.unpack(_DOUBLE.pack(scroll))[0])
        d = self._data
        d.extend(entry)
        if len(d) - self.spec.log_start > LOG_SLOTS:  # fold the log into its windows' aggregates
            self._aggregates = {}
            values = d.tolist()
            i, n = self.spec.log_start, len(values)
            while i < n:
                self._aggregate(_fields_at(values, i))
                i += _length(values[i + 1])
            del d[self.spec.log_start:]

    def _close(self, watermark: int, session: bool) -> list[WindowAgg]:
        """Close the tumbling windows that end at or before ``watermark`` and, if
        ``session``, the session; then drop the logged events no open window holds. One
        pass over the log, in arrival order (after what a window's aggregate already
        holds: its earlier events)."""
        d = self._data
        spec = self.spec
        sizes = spec.sizes_ms
        aggregates = self._aggregates or {}
        values = d.tolist()  # (read at once: cheaper than slot by slot)
        emitted = values[EMITTED:spec.log_start]
        session_until = values[SESSION_UNTIL]
        due: dict = {}  # (size_ms, start) -> aggregate
        next_end = _NEVER
        for key in list(aggregates):
            if key != _SESSION:
                if key[0] + key[1] <= watermark:
                    due[key] = aggregates.pop(key)
                elif key[0] + key[1] < next_end:
                    next_end = key[0] + key[1]
        agg_session = None
        if session:
            agg_session = aggregates.pop(_SESSION, None) or WindowAgg("session", 0, 0)
        oldest = _NEVER  # the log is walked again to drop events only when some go (most closes drop none)
        sized = tuple(enumerate(sizes))
        i, n = spec.log_start, len(values)
        while i < n:
            ts, code = values[i], values[i + 1]
            if ts < oldest:
                oldest = ts
            fields = None
            for k, size in sized:
                if ts >= emitted[k]:
                    start = ts - ts % size
                    end = start + size
                    if end <= watermark:
                        agg = due.get((size, start))
                        if agg is None:
                            agg = due[size, start] = WindowAgg(spec.names[k], start, end)
                        fields = fields or _fields_at(values, i)
                        agg.count(*fields)
                    elif end < next_end:
                        next_end = end
            if agg_session is not None and ts >= session_until:
                agg_session.count(*(fields or _fields_at(values, i)))
            i += 2 + (code >> 9 & 1) + (code >> 4 & 31) + (code >> 11 & 1)  # (_length, in line)
        closed = [due[key] for key in sorted(due)]
        for agg in closed:
            k = sizes.index(agg.end_ms - agg.start_ms)
            d[EMITTED + k] = until = max(d[EMITTED + k], agg.end_ms)
            d[LATE_BEFORE] = max(d[LATE_BEFORE], until)
        if watermark != _NONE:
            d[NEXT_END] = next_end
        if agg_session is not None:
            agg_session.start_ms, agg_session.end_ms = agg_session.first_ms, agg_session.last_ms
            d[SESSION_UNTIL] = until = d[SESSION_LAST] + 1
            d[LATE_BEFORE] = max(d[LATE_BEFORE], until)
            d[SESSION_LAST] = _NONE
            closed.append(agg_session)
        if not aggregates:
            self._aggregates = None  # every window of the aggregates closed: the next events are logged
        # an event is in an open window iff its time is at or after some size's (or the
        # session's) emitted-up-to mark: iff it is at or after the least of them
        alive = min([d[SESSION_UNTIL], *d[EMITTED:spec.log_start]])
        if oldest < alive:
            kept = []
            i = spec.log_start
            while i < n:
                j = i + _length(values[i + 1])
                if values[i] >= alive:
                    kept.extend(values[i:j])
                i = j
            d[spec.log_start:] = array("q", kept)
        return closed

    def _aggregate(self, fields: tuple) -> None:
        """Count an event in the aggregates of its open windows."""
        aggregates = self._aggregates
        spec = self.spec
        d = self._data
        ts = fields[5]
        for k, size in enumerate(spec.sizes_ms):
            if ts >= d[EMITTED + k]:
                start = ts - ts % size
                agg = aggregates.get((size, start))
                if agg is None:
                    agg = aggregates[size, start] = WindowAgg(spec.names[k], start, start + size)
                agg.count(*fields)
        if ts >= d[SESSION_UNTIL]:
            agg = aggregates.get(_SESSION)
            if agg is None:
                agg = aggregates[_SESSION] = WindowAgg("session", ts, ts)
            agg.count(*fields)


def _length(code: int) -> int:
    """The slots of a logged event: time, code, then item, categories and scroll."""
    return 2 + (code >> 9 & 1) + (code >> 4 & 31) + (code >> 11 & 1)


def _fields_at(values: list, i: int) -> tuple:
    """The fields of WindowAgg.count of the event logged at ``values[i]``."""
    ts, code = values[i], values[i + 1]
    j = i + 2
    item = None
    if code & _HAS_ITEM:
        item = values[j]
        j += 1
    n_cats = code >> 4 & 31
    categories = tuple(values[j:j + n_cats])
    j += n_cats
    scroll = _DOUBLE.unpack(_INT64.pack(values[j]))[0] if code & _HAS_SCROLL else None
    dwell = code >> 12 if code & _HAS_DWELL else None
    return EVENT_TYPES[code & 15], item, categories, dwell, scroll, ts


def _fields(ev: Event) -> tuple:
    """The fields of WindowAgg.count of an event."""
    item = ev.item_id
    return (ev.type, None if item is None else stable_hash(item), tuple(map(stable_hash, ev.category)),
            ev.dwell_ms, ev.scroll_pct, ev.ts)
