"""The event contract: what one behavioural event is, and how raw input becomes one.

Every source (a recorded log, a Kafka topic, a public data set's adapter) hands the
dataflow :class:`Raw` records: the original bytes plus where they came from. ``parse``
turns a record into either a validated :class:`Event` or a :class:`DeadLetter` that
carries the original payload and a machine-readable reason, so bad input never crashes
the flow and never vanishes.

Example:

>>> from pulse.operators.events import Raw, parse
>>> ev = parse(Raw("log.jsonl", 1, b'{"user_id": "u1", "type": "view", "ts": 1700000000000}'))
>>> ev.user_id, ev.type, ev.ts
('u1', 'view', 1700000000000)
>>> bad = parse(Raw("log.jsonl", 2, b'{"user_id": "u1", "type": "view"}'))
>>> bad.reason, bad.field
('missing_field', 'ts')
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Literal, NamedTuple, Optional, Union, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from pulse.state.keys import MAX_CATEGORY, MAX_ITEM_ID, MAX_USER_ID, clean_id

EventType = Literal[
    "view",
    "click",
    "scroll",
    "dwell",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "search",
    "share",
    "bookmark",
    "rate",
    "forget",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

MAX_PAYLOAD_BYTES = 64 * 1024
#: Event time may not be older than this (epoch ms of 2000-01-01T00:00:00Z) ...
MIN_TS_MS = 946_684_800_000
#: ... nor more than this far ahead of the wall clock.
MAX_FUTURE_MS = 24 * 3600 * 1000


class Raw(NamedTuple):
    """One record as a source read it: ``source`` (file or topic/partition), its
    position there (line number or offset), the untouched payload, and ``seq``, its
    index among the records the source emitted from that partition (0, 1, 2, ...; -1
    when the source does not number records, e.g. live Kafka)."""

    source: str
    position: int
    payload: bytes
    seq: int = -1


class PartitionEnd(NamedTuple):
    """Sent by a replay source after the last record of a partition: ``count`` records
    were numbered 0 .. count-1. Lets the model step apply updates in a canonical order."""

    source: str
    count: int


def _numeric_id(value: Any) -> Any:
    # Numeric ids are common in real logs; accept them as their decimal string.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _key_id(value: str, max_len: int) -> str:
    value = value.strip()
    # Most ids follow the rule of clean_id as they come: checked here in line, without
    # its two calls (three ids an event), and clean_id says why when one does not.
    if 0 < len(value) <= max_len and value.isprintable() and "{" not in value and "}" not in value:
        return value
    try:
        return clean_id(value, max_len)
    except ValueError as err:
        # its own error type: a refused id is an invalid value even inside a list
        raise PydanticCustomError("invalid_id", "{problem}", {"problem": str(err)}) from None


class Event(BaseModel):
    """One validated behavioural event. Unknown extra fields are ignored.

    ``user_id``, ``item_id`` and every ``category`` follow the id rule of
    :mod:`pulse.state.keys` (trimmed; printable; no braces): one that does not is
    dead-lettered as ``invalid_value`` with the field named.

    ``ts`` is event time in epoch milliseconds (ISO-8601 strings with a zone are
    accepted and converted). ``category`` may be one string or a list of strings
    (a film has several genres); it is normalised to a tuple.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    user_id: str = Field(min_length=1, max_length=MAX_USER_ID)
    type: EventType
    ts: int
    item_id: Optional[str] = Field(default=None, min_length=1, max_length=MAX_ITEM_ID)
    category: tuple[str, ...] = ()
    session_id: Optional[str] = Field(default=None, max_length=256)
    event_id: Optional[str] = Field(default=None, min_length=1, max_length=256)
    dwell_ms: Optional[int] = Field(default=None, ge=0, le=24 * 3600 * 1000)
    scroll_pct: Optional[float] = Field(default=None, ge=0, le=100)
    price: Optional[float] = Field(default=None, ge=0, le=1e9)
    rating: Optional[float] = Field(default=None, ge=0, le=10)
    device: Optional[str] = Field(default=None, max_length=64)
    user_agent: Optional[str] = Field(default=None, max_length=1024)
    consent: bool = True
    # Where the event came from (partition and its record index); set by the source,
    # not part of the payload contract.
    src: str = ""
    seq: int = 0
    line: int = 0

    @field_validator("ts", mode="before")
    @classmethod
    def _event_time(cls, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("ts must be epoch milliseconds or an ISO-8601 string with a zone")
        if isinstance(value, (int, float)):
            return int(value)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"ts {value!r} is not ISO-8601") from None
            if parsed.tzinfo is None:
                raise ValueError(f"ts {value!r} has no zone; add 'Z' or an offset like '+02:00'")
            return int(parsed.timestamp() * 1000)
        raise ValueError("ts must be epoch milliseconds or an ISO-8601 string with a zone")

    @field_validator("category", mode="before")
    @classmethod
    def _categories(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):  # (the usual case: one category)
            return (_key_id(value, MAX_CATEGORY),) if value.strip() else ()
        if isinstance(value, (list, tuple)) and all(isinstance(c, str) for c in value):
            if len(value) > 16:
                raise ValueError("at most 16 categories")
            # Category names become key parts too (pulse:trending:category:{<c>}).
            return tuple(_key_id(c, MAX_CATEGORY) for c in value if c.strip())
        raise ValueError("category must be a string or a list of strings")

    @field_validator("user_id", "item_id", mode="before")
    @classmethod
    def _key_ids(cls, value: Any, info: ValidationInfo) -> Any:
        # These become parts of Redis keys: trimmed, then held to the id rule of the
        # key schema (printable, no braces), so no id can escape its key.
        value = _numeric_id(value)
        if isinstance(value, str):
            return _key_id(value, MAX_USER_ID if info.field_name == "user_id" else MAX_ITEM_ID)
        return value

    @field_validator("event_id", "session_id", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        return _numeric_id(value)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(exclude_defaults=True, exclude={"src", "seq", "line"}))

    # Bytewax pickles every item it sends to another process, one at a time, and there
    # an instance of a class costs many times the tuple of its values: a probe flow
    # sending 48,000 events between 2 processes spent ~50 µs of the sender's CPU and
    # ~20 µs of the receiver's on each pydantic event, and almost nothing on the
    # tuples. So the steps send events between processes as :meth:`to_wire`.
    def to_wire(self) -> tuple:
        """This event as a tuple of built-in values (the fields in order, then which
        of them were set), for :meth:`from_wire` in another process.

        >>> ev = Event(user_id="u1", type="view", ts=1_700_000_000_000, item_id="a")
        >>> Event.from_wire(ev.to_wire()) == ev
        True
        """
        return (*_field_values(self.__dict__), _fields_mask(frozenset(self.__pydantic_fields_set__)))

    @classmethod
    def from_wire(cls, values: tuple) -> "Event":
        """The event :meth:`to_wire` gave ``values`` for (already validated: not again)."""
        ev = _new_object(cls)
        _set_attribute(ev, "__dict__", dict(zip(_FIELDS, values)))
        _set_attribute(ev, "__pydantic_fields_set__", set(_fields_of_mask(values[-1])))
        _set_attribute(ev, "__pydantic_extra__", None)
        _set_attribute(ev, "__pydantic_private__", None)
        return ev


_FIELDS: tuple[str, ...] = tuple(Event.model_fields)
_field_values = operator.itemgetter(*_FIELDS)
_FIELD_BITS = {name: 1 << n for n, name in enumerate(_FIELDS)}
_new_object = object.__new__
_set_attribute = object.__setattr__


@lru_cache(maxsize=1024)
def _fields_mask(names: frozenset[str]) -> int:
    return sum(_FIELD_BITS[n] for n in names)


@lru_cache(maxsize=1024)
def _fields_of_mask(mask: int) -> frozenset[str]:
    return frozenset(name for name, bit in _FIELD_BITS.items() if mask & bit)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the flow refused, with why. ``reason`` is a stable machine-readable
    code (see :data:`REASONS`); ``field`` names the offending field where there is
    one; ``detail`` says what was wrong in words a person can act on."""

    reason: str
    source: str
    position: int
    payload: bytes
    field: Optional[str] = None
    detail: str = ""
    user_id: Optional[str] = dc_field(default=None, compare=False)
    seq: int = -1
    #: the payload was not kept: user ids are pseudonymized and it is not a JSON object
    #: whose ids could be replaced (:func:`pulse.state.privacy.pseudonymous_payload`)
    payload_withheld: bool = False

    def to_json(self) -> bytes:
        try:
            payload: Any = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            payload = self.payload.decode("latin-1")
        doc = {
            "reason": self.reason,
            "field": self.field,
            "detail": self.detail,
            "source": self.source,
            "position": self.position,
            "payload": payload,
        }
        if self.payload_withheld:
            doc["payload_withheld"] = True
        return orjson.dumps(doc)


#: Every dead-letter reason, with what it means (the README's table is built from this).
REASONS = {
    "payload_too_large": "payload over 64 KiB",
    "invalid_json": "not parseable as JSON (or not UTF-8)",
    "not_an_object": "valid JSON but not an object",
    "missing_field": "a required field (user_id, type, ts) is absent",
    "invalid_type": "a field has the wrong type",
    "invalid_value": "a field's value is out of range (negative dwell, scroll over 100, ...)",
    "unknown_event_type": "type is not one of the documented event types",
    "ts_out_of_range": "event time before the minimum (2000-01-01) or over a day in the future",
    "duplicate_event": "an event_id this user already sent",
    "bot_user_agent": "the user agent declares a crawler or headless browser",
    "no_consent": "consent is false: the event is not used and the payload is not kept",
    "invalid_record": "a line of an adapter format (movielens, taobao) that does not parse",
}

_TYPE_ERRORS = {
    "string_type",
    "int_type",
    "int_parsing",
    "float_type",
    "float_parsing",
    "bool_type",
    "bool_parsing",
    "tuple_type",
    "int_from_float",
}


def _dead(raw: Raw, reason: str, field_name: Optional[str] = None, detail: str = "") -> DeadLetter:
    return DeadLetter(reason, raw.source, raw.position, raw.payload, field_name, detail, seq=raw.seq)


def _wrong_type(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, (str, int, float))


def _from_validation_error(raw: Raw, err: ValidationError) -> DeadLetter:
    first = err.errors(include_url=False)[0]
    name = ".".join(str(p) for p in first["loc"]) or None
    kind = first["type"]
    msg = first["msg"]
    if kind == "missing":
        return _dead(raw, "missing_field", name, f"required field '{name}' is missing")
    if name == "type" and kind == "literal_error":
        return _dead(raw, "unknown_event_type", name, f"type must be one of {', '.join(EVENT_TYPES)}")
    if kind in _TYPE_ERRORS or (kind == "value_error" and _wrong_type(first.get("input"))):
        return _dead(raw, "invalid_type", name, f"{name}: {msg}")
    return _dead(raw, "invalid_value", name, f"{name}: {msg}")


_validate_event = Event.__pydantic_validator__.validate_python

_BOT_MARKERS = ("bot", "crawler", "spider", "headless", "scrapy", "python-requests", "curl/")


@lru_cache(maxsize=1024)
def _bot_agent(agent: str) -> bool:
    """Whether a user agent declares a crawler or headless browser. Cached: traffic
    comes from a few agents again and again, and one lookup costs a fraction of the
    seven scans of the lowered agent."""
    agent = agent.lower()
    return any(marker in agent for marker in _BOT_MARKERS)


@dataclass(frozen=True)
class Validation:
    """Limits applied to every event. Adapters of historical data sets (MovieLens is
    from 1997) lower ``min_ts_ms``; ``now_ms`` is the wall clock unless a test pins it."""

    min_ts_ms: int = MIN_TS_MS
    max_future_ms: int = MAX_FUTURE_MS
    filter_bots: bool = True
    now_ms: Optional[int] = None

    def max_ts_ms(self) -> int:
        now = self.now_ms if self.now_ms is not None else int(time.time() * 1000)
        return now + self.max_future_ms


DEFAULT_VALIDATION = Validation()


def validate(raw: Raw, obj: Any, limits: Validation = DEFAULT_VALIDATION) -> Union[Event, DeadLetter]:
    """Validate one decoded JSON value against the contract."""
    if not isinstance(obj, dict):
        return _dead(raw, "not_an_object", None, f"expected a JSON object, got {type(obj).__name__}")
    # set by the source; a payload's own "src"/"seq" are ignored
    obj["src"] = raw.source
    obj["seq"] = raw.seq if raw.seq >= 0 else raw.position
    obj["line"] = raw.position
    try:
        # (what Event.model_validate calls, without its keyword handling: 7% of this)
        event = _validate_event(obj)
    except ValidationError as err:
        return _from_validation_error(raw, err)
    if event.ts < limits.min_ts_ms or event.ts > limits.max_ts_ms():
        when = datetime.fromtimestamp(event.ts / 1000, tz=timezone.utc).isoformat() if abs(event.ts) < 1e14 else str(event.ts)
        return _dead(
            raw,
            "ts_out_of_range",
            "ts",
            f"event time {when} is before {datetime.fromtimestamp(limits.min_ts_ms / 1000, tz=timezone.utc).date()} "
            "or more than a day in the future (ts is epoch milliseconds, not seconds)",
        )
    if not event.consent:
        # The user opted out: keep neither the event nor its payload.
        return DeadLetter("no_consent", raw.source, raw.position, b"", None, "consent is false", event.user_id, raw.seq)
    if limits.filter_bots and event.user_agent and _bot_agent(event.user_agent):
        return _dead(raw, "bot_user_agent", "user_agent", f"user agent {event.user_agent[:80]!r} is a bot")
    return event


def decode(raw: Raw) -> Any:
    """The JSON value of one record's payload, or a :class:`DeadLetter` when the payload is
    over :data:`MAX_PAYLOAD_BYTES` or not JSON. The first half of :func:`parse`; the
    collector (``pulse collect``) uses it for each line of an NDJSON body.

    >>> decode(Raw("http", 0, b'{"user_id": "u1"}'))
    {'user_id': 'u1'}
    >>> decode(Raw("http", 1, b'{"user_id": ')).reason
    'invalid_json'
    """
    if len(raw.payload) > MAX_PAYLOAD_BYTES:
        return _dead(raw, "payload_too_large", None, f"payload is {len(raw.payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    try:
        return orjson.loads(raw.payload)
    except orjson.JSONDecodeError as err:
        return _dead(raw, "invalid_json", None, f"not valid JSON: {err}")


def parse(raw: Raw, limits: Validation = DEFAULT_VALIDATION) -> Union[Event, DeadLetter]:
    """Parse one native JSON record into an :class:`Event` or a :class:`DeadLetter`:
    :func:`decode`, then :func:`validate`."""
    obj = decode(raw)
    if isinstance(obj, DeadLetter):
        return obj
    return validate(raw, obj, limits)
