"""A user's latest events, for the dashboard's user page: a pure step (no I/O).

Each accepted-by-the-parser event becomes a member of the user's sorted set
``pulse:user:{<user_id>}:events`` (score: event time), kept to the ``cap`` latest. The
member is the event's compact JSON without its position in the log, so a record seen
twice (a resend, a replay, a resume after a crash) is the same member and the set ends
the same; one write per user per batch.

Example:

>>> from pulse.operators.events import Event
>>> from pulse.state.keys import KeySchema
>>> evs = [Event(user_id="u1", type="view", ts=1_000, item_id="a"), Event(user_id="u1", type="click", ts=2_000, item_id="a")]
>>> (w,) = recent_event_writes(evs, KeySchema(), cap=10, ttl_s=60)
>>> w.key, w.members[1]
('pulse:user:{u1}:events', ('{"type":"click","ts":2000,"item_id":"a"}', 2000.0))
"""

from __future__ import annotations

from typing import Iterable

import orjson

from pulse.operators.events import Event
from pulse.state.keys import KeySchema
from pulse.state.store import ZAddCapped

#: the event's fields kept (those a person looking at the user would read)
FIELDS = ("type", "ts", "item_id", "category", "session_id", "event_id", "dwell_ms", "scroll_pct", "price", "rating")


def member(ev: Event) -> str:
    doc = {}
    for name in FIELDS:
        value = getattr(ev, name, None)
        if value is not None and value != ():
            doc[name] = list(value) if isinstance(value, tuple) else value
    return orjson.dumps(doc).decode()


def recent_event_writes(events: Iterable[Event], keys: KeySchema, cap: int, ttl_s: int) -> list[ZAddCapped]:
    """One :class:`~pulse.state.store.ZAddCapped` per user of ``events``."""
    by_user: dict[str, list] = {}
    for ev in events:
        by_user.setdefault(ev.user_id, []).append((member(ev), float(ev.ts)))
    return [ZAddCapped(keys.recent_events(user), tuple(members), cap, ttl_s) for user, members in by_user.items()]
