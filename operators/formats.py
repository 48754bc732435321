"""Record formats: the native JSON contract and adapters for public behaviour logs.

A format turns one :class:`~pulse.operators.events.Raw` record into an ``Event`` or a
``DeadLetter``. Adapters map their fields onto the native contract and then go through
the very same validation, so every format obeys one set of rules.

* ``native``: one JSON object per line (the contract in the README).
* ``movielens``: MovieLens ``u.data`` lines ``user<TAB>item<TAB>rating<TAB>unix_seconds``.
  A rating becomes a ``rate`` event whose ``rating`` (1–5) scales its action weight; the
  item's genres from ``u.item`` become its categories.
* ``taobao``: Taobao UserBehavior lines ``user,item,category,behavior,unix_seconds`` with
  behaviours pv/cart/fav/buy mapped to view/add_to_cart/bookmark/purchase.

Example:

>>> from pulse.operators.events import Raw
>>> fmt = Format.taobao()
>>> ev = fmt.parse(Raw("UserBehavior.csv", 1, b"1,2268318,2520377,pv,1511544070"))
>>> ev.type, ev.item_id, ev.category, ev.ts
('view', '2268318', ('2520377',), 1511544070000)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Union

from pulse.operators.events import DEFAULT_VALIDATION, DeadLetter, Event, Raw, Validation, parse, validate

FORMATS = ("native", "movielens", "taobao")

#: MovieLens 100K was collected 1997-1998; its events are valid from 1995 on.
MOVIELENS_MIN_TS_MS = 788_918_400_000
#: Taobao UserBehavior covers late 2017.
TAOBAO_MIN_TS_MS = 1_483_228_800_000

TAOBAO_BEHAVIOURS = {"pv": "view", "cart": "add_to_cart", "fav": "bookmark", "buy": "purchase"}

Parsed = Union[Event, DeadLetter]


def _invalid(raw: Raw, detail: str) -> DeadLetter:
    return DeadLetter("invalid_record", raw.source, raw.position, raw.payload, None, detail, seq=raw.seq)


@dataclass(frozen=True)
class Format:
    """A named record format with its validation limits.

    ``sort_by_time`` asks the source to order a file's records by (event time, line)
    before replaying them: MovieLens is not in time order, and its ratings tie on
    timestamps, so the line number breaks ties deterministically.
    """

    name: str
    limits: Validation = DEFAULT_VALIDATION
    sort_by_time: bool = False
    genres: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @staticmethod
    def native(limits: Validation = DEFAULT_VALIDATION) -> "Format":
        return Format("native", limits)

    @staticmethod
    def movielens(genres: Optional[Mapping[str, tuple[str, ...]]] = None) -> "Format":
        return Format("movielens", Validation(min_ts_ms=MOVIELENS_MIN_TS_MS), True, genres or {})

    @staticmethod
    def taobao(sort_by_time: bool = False) -> "Format":
        return Format("taobao", Validation(min_ts_ms=TAOBAO_MIN_TS_MS), sort_by_time)

    def parse(self, raw: Raw) -> Parsed:
        return _PARSERS[self.name](self, raw)

    def sort_key(self, raw: Raw) -> tuple[int, int]:
        """(event time in ms, line) of a record, for formats replayed in time order."""
        try:
            if self.name == "movielens":
                return int(raw.payload.split(b"\t")[3]) * 1000, raw.position
            if self.name == "taobao":
                return int(raw.payload.split(b",")[4]) * 1000, raw.position
        except (IndexError, ValueError):
            pass
        return -1, raw.position  # unparseable lines go first; they end in the DLQ anyway


def _parse_native(fmt: Format, raw: Raw) -> Parsed:
    return parse(raw, fmt.limits)


def _parse_movielens(fmt: Format, raw: Raw) -> Parsed:
    parts = raw.payload.rstrip(b"\r\n").split(b"\t")
    if len(parts) != 4:
        return _invalid(raw, f"expected 4 tab-separated fields (user, item, rating, unix seconds), got {len(parts)}")
    user, item, rating, seconds = (p.decode("utf-8", "replace") for p in parts)
    try:
        rating_value = float(rating)
        ts_ms = int(seconds) * 1000
    except ValueError:
        return _invalid(raw, "rating and timestamp must be numbers")
    obj = {
        "user_id": user,
        "item_id": item,
        "type": "rate",
        "rating": rating_value,
        "ts": ts_ms,
        "category": list(fmt.genres.get(item, ())),
        "event_id": f"ml:{user}:{item}",
    }
    return validate(raw, obj, fmt.limits)


def _parse_taobao(fmt: Format, raw: Raw) -> Parsed:
    parts = raw.payload.rstrip(b"\r\n").split(b",")
    if len(parts) != 5:
        return _invalid(raw, f"expected 5 comma-separated fields (user, item, category, behavior, unix seconds), got {len(parts)}")
    user, item, category, behaviour, seconds = (p.decode("utf-8", "replace").strip() for p in parts)
    kind = TAOBAO_BEHAVIOURS.get(behaviour)
    if kind is None:
        return _invalid(raw, f"behavior {behaviour!r} is not one of {', '.join(TAOBAO_BEHAVIOURS)}")
    try:
        ts_ms = int(seconds) * 1000
    except ValueError:
        return _invalid(raw, f"timestamp {seconds!r} is not unix seconds")
    obj = {"user_id": user, "item_id": item, "category": category, "type": kind, "ts": ts_ms}
    return validate(raw, obj, fmt.limits)


_PARSERS: dict[str, Callable[[Format, Raw], Parsed]] = {
    "native": _parse_native,
    "movielens": _parse_movielens,
    "taobao": _parse_taobao,
}


def movielens_genres(u_item: bytes, u_genre: Optional[bytes] = None) -> dict[str, tuple[str, ...]]:
    """Map MovieLens item ids to genre names from the contents of ``u.item`` (latin-1,
    '|'-separated, the last 19 fields are genre flags) and ``u.genre``."""
    names = [
        "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
        "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
        "Romance", "Sci-Fi", "Thriller", "War", "Western",
    ]  # fmt: skip
    if u_genre:
        listed = [line.split("|")[0] for line in u_genre.decode("latin-1").splitlines() if "|" in line]
        names = listed or names
    genres: dict[str, tuple[str, ...]] = {}
    for line in u_item.decode("latin-1").splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        flags = parts[-len(names):]
        genres[parts[0]] = tuple(n for n, f in zip(names, flags) if f.strip() == "1")
    return genres
