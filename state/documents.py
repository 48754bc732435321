"""How values in Pulse's documents are written: event times as ISO-8601 text, list ids,
and the global keys the model step writes (trending sorted sets, an item's similar and
neighbour lists, ``pulse:meta``). What each key holds is the contract of
:mod:`pulse.state.schema`; where each key is, :mod:`pulse.state.keys`.

Example:

>>> iso_ms(0)
'1970-01-01T00:00:00.000Z'
>>> trending_write("pulse:trending", [("a", 2.0000001), ("b", 1.0)])
ZReplace(key='pulse:trending', members=(('a', 2.0), ('b', 1.0)))
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from typing import Mapping, Optional, Sequence

import orjson

from pulse.state.keys import SCHEMA_VERSION, KeySchema
from pulse.state.store import HashSet, Put, Write, ZReplace


def recomm_id(user_id: str, ts: int, n: int) -> str:
    """A fresh id for every list, yet the same on every replay: 96 bits of a hash as 16
    base64url characters (a first collision is expected after about 2^48 lists; a UUID's text took
    36 characters in every user's list).

    >>> recomm_id("u1", 1_000, 1)
    'NHm-5r0aFowEMaJK'
    """
    return base64.urlsafe_b64encode(hashlib.blake2b(f"{user_id}\x00{ts}\x00{n}".encode(), digest_size=12).digest()).decode()


#: the last day :func:`iso_ms` formatted, and its date (documents of one day share it)
_iso_day: tuple[Optional[int], str] = (None, "")


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds.

    >>> iso_ms(1_767_571_200_123), iso_ms(1_767_657_599_999)
    ('2026-01-05T00:00:00.123Z', '2026-01-05T23:59:59.999Z')
    """
    global _iso_day
    day, rest = divmod(ms, 86_400_000)
    cached, date = _iso_day
    if day != cached:
        # (only the date needs the calendar; a UTC day is always 86,400 s: no leap seconds in epoch time)
        date = datetime.fromtimestamp(day * 86_400, tz=timezone.utc).strftime("%Y-%m-%dT")
        _iso_day = (day, date)
    seconds, milli = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{date}{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


def trending_write(key: str, top: Sequence[tuple[str, float]]) -> ZReplace:
    """A trending sorted set (scores to 6 decimals) replaced by ``top``."""
    return ZReplace(key, tuple((i, round(s, 6)) for i, s in top))


def item_list_writes(keys: KeySchema, item: str, ranked: Sequence[tuple[str, float]],
                     categories: Mapping[str, tuple[str, ...]], similar_size: int) -> list[Write]:
    """An item's public similar list (its best ``similar_size`` neighbours, scores
    relative to the best) and the list the blend reads in other processes (every ranked
    neighbour with its score and categories; see :class:`~pulse.state.view.RemoteView`)."""
    top = ranked[0][1] if ranked else 1.0
    similar = [{"item_id": j, "score": round(s / top, 6)} for j, s in ranked[:similar_size]]
    # (flat arrays: a third cheaper to write than a triple per neighbour, and to read)
    ids = [j for j, _ in ranked]
    nbrs = {"c": categories.get(item, ()), "n": ids, "s": [s for _, s in ranked], "k": [categories.get(j, ()) for j in ids]}
    return [Put(keys.similar(item), orjson.dumps(similar)), Put(keys.nbrs(item), orjson.dumps(nbrs))]


def meta_write(key: str, events: int, clock: int, users: int, items: int, flags: int) -> HashSet:
    """``pulse:meta``: the key schema's version and the run's counts as of its last round."""
    return HashSet(key, (
        ("schema_version", str(SCHEMA_VERSION)),
        ("events_processed", str(events)),
        ("last_event_time", iso_ms(clock) if clock else ""),
        ("last_event_ms", str(clock)),
        ("users", str(users)),
        ("items", str(items)),
        ("anomalies_flagged", str(flags)),
    ))
