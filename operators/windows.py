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

from dataclasses import dataclass, field
from typing import Optional

from pulse.operators.events import Event


@dataclass(slots=True)
class WindowAgg:
    """Engagement features of one closed window of one user."""

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

    def add(self, ev: Event) -> None:
        self._add(ev.type, ev.item_id, ev.category, ev.dwell_ms, ev.scroll_pct, ev.ts)

    def _add(self, kind: str, item: Optional[str], category: tuple, dwell: Optional[int],
             scroll: Optional[float], ts: int) -> None:
        self.events += 1
        counts = self.counts
        counts[kind] = counts.get(kind, 0) + 1
        if item is not None and len(self.items) < 10_000:
            self.items.add(item)
        if category and len(self.categories) < 1_000:
            self.categories.update(category)
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


class UserWindows:
    """One user's open windows in event time.

    :arg tumbling_s: sizes of the tumbling windows, in seconds (e.g. 60 and 3600).
    :arg session_gap_s: a session ends after this long without events.
    :arg allowed_lateness_s: how far behind the user's newest event time an event may
        arrive and still be counted in its window.

    :meth:`learn_one` returns ``(closed windows, [])`` or ``([], [the late event])``
    (a late event is also counted in :attr:`late`).
    """

    def __init__(self, tumbling_s=(60, 3600), session_gap_s: int = 1800, allowed_lateness_s: int = 5) -> None:
        self.tumbling_ms = tuple(int(s * 1000) for s in tumbling_s)
        self.gap_ms = int(session_gap_s * 1000)
        self.lateness_ms = int(allowed_lateness_s * 1000)
        self.max_ts: Optional[int] = None
        self.open: dict[tuple[int, int], WindowAgg] = {}  # (size_ms, start_ms) -> agg
        self.emitted_until: dict[int, int] = {}  # size_ms -> end of the last emitted window
        self.session: Optional[WindowAgg] = None
        self.session_emitted_until: int = -1
        self.late = 0
        self._names = {size: f"tumbling:{size // 1000}" for size in self.tumbling_ms}
        self._next_end: Optional[int] = None  # the earliest end of an open tumbling window

    @property
    def watermark(self) -> Optional[int]:
        return None if self.max_ts is None else self.max_ts - self.lateness_ms

    def learn_one(self, ev: Event) -> tuple[list[WindowAgg], list[Event]]:
        ts = ev.ts
        late = ts < self.session_emitted_until
        if not late:
            emitted = self.emitted_until
            for size in self.tumbling_ms:
                if ts < emitted.get(size, -1):
                    late = True
                    break
        max_ts = self.max_ts
        if late or (max_ts is not None and ts < max_ts - self.lateness_ms):
            self.late += 1
            return [], [ev]
        fields = (ev.type, ev.item_id, ev.category, ev.dwell_ms, ev.scroll_pct, ts)
        open_ = self.open
        for size in self.tumbling_ms:
            start = ts - ts % size
            agg = open_.get((size, start))
            if agg is None:
                end = start + size
                agg = open_[(size, start)] = WindowAgg(self._names[size], start, end)
                if self._next_end is None or end < self._next_end:
                    self._next_end = end
            agg._add(*fields)
        closed: list[WindowAgg] = []
        s = self.session
        if s is not None and s.last_ms is not None and ts > s.last_ms + self.gap_ms:
            closed.append(self._close_session())
            s = None
        if s is None:
            s = self.session = WindowAgg("session", ts, ts)
        s._add(*fields)
        s.start_ms, s.end_ms = s.first_ms, s.last_ms
        if max_ts is None or ts > max_ts:
            self.max_ts = max_ts = ts
        watermark = max_ts - self.lateness_ms
        if (self._next_end is not None and self._next_end <= watermark) or s.last_ms + self.gap_ms <= watermark:
            closed.extend(self.advance(watermark))
        return closed, []

    def advance(self, watermark: Optional[int]) -> list[WindowAgg]:
        """Close every window that ends at or before ``watermark`` (event time, ms)."""
        if watermark is None:
            return []
        closed = []
        if self._next_end is not None and self._next_end <= watermark:
            done = [k for k, agg in self.open.items() if agg.end_ms <= watermark]
            for key in sorted(done):
                agg = self.open.pop(key)
                self.emitted_until[key[0]] = max(self.emitted_until.get(key[0], -1), agg.end_ms)
                closed.append(agg)
            self._next_end = min((agg.end_ms for agg in self.open.values()), default=None)
        if self.session is not None and self.session.last_ms + self.gap_ms <= watermark:
            closed.append(self._close_session())
        return closed

    def close_all(self) -> list[WindowAgg]:
        """Close every open window (end of a replay, or an idle user's eviction)."""
        closed = self.advance(float("inf"))  # type: ignore[arg-type]
        return closed

    def _close_session(self) -> WindowAgg:
        s = self.session
        assert s is not None
        self.session = None
        self.session_emitted_until = s.last_ms + 1
        s.end_ms = s.last_ms
        return s
