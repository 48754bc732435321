"""Intake: what the HTTP collector (``pulse collect``) does with one request body, as
pure steps with no I/O.

A body is one event, a JSON array of events, or NDJSON (one event per line), possibly
gzip-compressed. :func:`inflate` undoes the compression within a size limit,
:func:`split` cuts the body into candidate events, and :func:`admit` stamps each
candidate with what the server saw (receive time, optionally the user agent and the IP
or a keyed hash of it), serializes it, and runs :func:`pulse.operators.events.parse`,
the flow's own parser, on exactly the bytes that will go to Kafka. So an event the
collector accepts is one the flow accepts too, with the same reasons for the ones it
refuses; only ``duplicate_event`` needs per-user state and is left to the flow.

An event with ``consent: false`` is a user's opt-out: the flow must see it to act on
it, so it is forwarded, stripped to the ids, type and time (:data:`CONSENT_FIELDS`).

A ``forget`` event deletes everything Pulse holds of the user it names, and nothing
proves that a browser sending one is that user: from a browser it would let anyone
delete anyone. It is refused (:data:`FORGET_REFUSED`) unless the request is an
operator's (``operator=True``: it carried the collector's operator token).

Example:

>>> body = b'[{"user_id": "u1", "type": "view", "ts": 1767571200000}, {"user_id": "u1", "type": "teleport", "ts": 1767571200000}]'
>>> out = admit(split(inflate(body, None, 1 << 20), 500), Stamps(received_at=1767571200123))
>>> [a.key for a in out.accepted], out.accepted[0].value
([b'u1'], b'{"user_id":"u1","type":"view","ts":1767571200000,"received_at":1767571200123}')
>>> out.rejected[0].to_json()
{'index': 1, 'reason': 'unknown_event_type', 'field': 'type', 'detail': 'type must be one of view, click, scroll, dwell, add_to_cart, remove_from_cart, purchase, search, share, bookmark, rate, forget'}
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Union

import orjson

from pulse.operators.events import DEFAULT_VALIDATION, DeadLetter, Raw, Validation, decode, parse

#: The source name dead letters and events of the collector carry.
SOURCE = "http"

#: What a forwarded opt-out keeps of its event (the rest of the payload is not kept).
CONSENT_FIELDS = ("user_id", "anonymous_id", "type", "ts", "received_at")

#: The collector's own rejection reason (the flow's are :data:`~pulse.operators.events.REASONS`).
FORGET_REFUSED = "forget_refused"


class BodyError(ValueError):
    """The body as a whole cannot be taken: ``status`` is the HTTP status to answer
    (400, 413, 415), ``reason`` a stable code, ``detail`` what to do about it."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail

    def to_json(self) -> dict:
        return {"error": self.reason, "detail": self.detail}


def inflate(body: bytes, encoding: Optional[str], limit: int) -> bytes:
    """The body without its ``Content-Encoding`` (none or ``gzip``), at most ``limit``
    bytes once decompressed (a small gzip body may inflate to gigabytes).

    >>> import gzip
    >>> inflate(gzip.compress(b'{"a": 1}'), "gzip", 100)
    b'{"a": 1}'
    >>> inflate(b'not gzip', "gzip", 100)
    Traceback (most recent call last):
    ...
    pulse.operators.intake.BodyError: the body is not valid gzip (Error -3 while decompressing data: incorrect header check); send it uncompressed or compress it with gzip
    """
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise BodyError(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing only
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise BodyError(400, "invalid_gzip", f"the body is not valid gzip ({err}); send it uncompressed or compress it with gzip") from None
    if len(out) > limit:
        raise BodyError(413, "body_too_large", f"the body inflates to over {limit} bytes, the limit; send smaller batches")
    if not inflater.eof:
        raise BodyError(400, "invalid_gzip", "the gzip body is truncated; send the whole compressed body")
    return out


def split(body: bytes, max_events: int) -> list[Any]:
    """The candidate events of a body, in order: decoded JSON values, or a
    :class:`DeadLetter` for an NDJSON line that is too large or not JSON.

    A body that starts with ``[`` is one JSON array; one that parses as a JSON object is
    one event; anything else is NDJSON (blank lines skipped).

    >>> split(b'{"a": 1}', 10), split(b'[{"a": 1}, 2]', 10)
    ([{'a': 1}], [{'a': 1}, 2])
    >>> [getattr(c, "reason", c) for c in split(b'{"a": 1}\\n\\n{"b": \\n', 10)]
    [{'a': 1}, 'invalid_json']
    """
    text = body.strip()
    if not text:
        raise BodyError(400, "empty_body", "the body is empty; send one event, a JSON array of events or NDJSON")
    if text[:1] == b"[":
        try:
            candidates = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            raise BodyError(400, "invalid_json", f"the body starts like a JSON array but is not valid JSON: {err}") from None
    else:
        try:
            whole = orjson.loads(text)
        except orjson.JSONDecodeError:
            whole = None
        if isinstance(whole, dict):
            candidates = [whole]
        else:
            lines = [line for line in text.split(b"\n") if line.strip()]
            if len(lines) > max_events:
                raise _too_many(len(lines), max_events)
            candidates = [decode(Raw(SOURCE, i, line)) for i, line in enumerate(lines)]
    if len(candidates) > max_events:
        raise _too_many(len(candidates), max_events)
    return candidates


def _too_many(n: int, limit: int) -> BodyError:
    return BodyError(413, "too_many_events", f"the body holds {n} events; the limit is {limit} per request: send smaller batches")


@dataclass(frozen=True)
class Stamps:
    """What the server adds to every event: ``received_at`` (epoch ms), and when
    configured the client's ``user_agent`` (it replaces the event's own: the server saw
    it, so a crawler cannot hide), its ``ip`` or a keyed hash of it, ``ip_hash``."""

    received_at: int
    user_agent: Optional[str] = None
    ip: Optional[str] = None
    ip_hash: Optional[str] = None

    def apply(self, obj: dict) -> None:
        obj["received_at"] = self.received_at
        if self.user_agent is not None:
            obj["user_agent"] = self.user_agent
        if self.ip is not None:
            obj["ip"] = self.ip
        if self.ip_hash is not None:
            obj["ip_hash"] = self.ip_hash


def hash_ip(key: bytes, ip: str) -> str:
    """A keyed hash (HMAC-SHA-256, 128 bits in hex) of an IP address: the same client
    gets the same value, and without the key it cannot be turned back into the address
    (a plain hash of the 2^32 IPv4 addresses can).

    >>> hash_ip(b"secret", "203.0.113.7") == hash_ip(b"secret", "203.0.113.7") != hash_ip(b"other", "203.0.113.7")
    True
    """
    return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()[:32]


class Accepted(NamedTuple):
    """One event to produce: the Kafka key (its user id) and value."""

    key: bytes
    value: bytes


class Rejection(NamedTuple):
    """Why the event at ``index`` of a body was refused, as the flow's dead letter says."""

    index: int
    reason: str
    field: Optional[str]
    detail: str

    def to_json(self) -> dict:
        return {"index": self.index, "reason": self.reason, "field": self.field, "detail": self.detail}


@dataclass
class Admitted:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    #: how many of ``accepted`` are opt-outs (``consent: false``), forwarded stripped
    consent_withdrawals: int = 0


def admit(candidates: list[Any], stamps: Stamps, limits: Validation = DEFAULT_VALIDATION, operator: bool = False,
          token_given: bool = False) -> Admitted:
    """Stamp, serialize and validate every candidate of a body (see the module's
    docstring). ``forget`` events pass only when ``operator``; ``token_given`` says the
    request carried a token that was not the operator's (for the rejection's detail)."""
    out = Admitted()
    for index, obj in enumerate(candidates):
        if isinstance(obj, DeadLetter):
            out.rejected.append(Rejection(index, obj.reason, obj.field, obj.detail))
            continue
        if isinstance(obj, dict):
            stamps.apply(obj)
        verdict = _parse(index, obj, limits)
        if isinstance(verdict, DeadLetter):
            if verdict.reason != "no_consent":
                out.rejected.append(Rejection(index, verdict.reason, verdict.field, verdict.detail))
                continue
            stripped = {k: obj[k] for k in CONSENT_FIELDS if k in obj}
            stripped["consent"] = False
            out.accepted.append(Accepted(verdict.user_id.encode(), orjson.dumps(stripped)))
            out.consent_withdrawals += 1
            continue
        if verdict.type == "forget" and not operator:
            out.rejected.append(Rejection(index, FORGET_REFUSED, "type", _forget_refused(token_given)))
            continue
        out.accepted.append(Accepted(verdict.user_id.encode(), verdict.payload))
    return out


def _forget_refused(token_given: bool) -> str:
    why = "the request's Authorization is not the collector's operator token" if token_given else "the request carries no operator token"
    return (f"forget events are not taken from browsers ({why}): a forged one would delete another user's data; "
            "delete users with `pulse forget USER_ID --brokers HOST:PORT --topic TOPIC`, "
            "or send with Authorization: Bearer <PULSE_COLLECT_ADMIN_TOKEN>")


class _Parsed(NamedTuple):
    user_id: str
    type: str
    payload: bytes


def _parse(index: int, obj: Any, limits: Validation) -> Union[_Parsed, DeadLetter]:
    # orjson re-encodes whatever it decoded (numbers past 64 bits decode as floats)
    payload = orjson.dumps(obj)
    verdict = parse(Raw(SOURCE, index, payload), limits)
    if isinstance(verdict, DeadLetter):
        return verdict
    return _Parsed(verdict.user_id, verdict.type, payload)
