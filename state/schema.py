"""The versioned key contract: what every key Pulse writes holds, as JSON Schema.

:mod:`pulse.state.keys` names the keys; this module says what is in them, next to it,
so a frontend (or a test) can check a value against the contract of its key. Each entry
has the key's pattern as the README's key table writes it (ids in ``<...>``, inside the
braces of a Redis Cluster hash tag), its Redis type and, for a JSON string, the JSON
Schema of the value; other types have ``schema`` null and their members described.
``pulse schema`` prints the whole document; :data:`SCHEMA_VERSION` is bumped when a
value changes in a way frontends would notice.

The per-user documents are laid out for size (a site keeps them for every user it has,
for weeks): no field repeats the key's user id, none holds what another field gives
(an event total beside the counts per type, a segment's traits beside its id), and
scores carry :data:`DOC_DIGITS` significant digits (:func:`doc_number`), enough to show
and to compare; the lists are in rank order already.

Example:

>>> doc = contract()
>>> doc["schema_version"] == SCHEMA_VERSION
True
>>> [k["redis_type"] for k in doc["keys"] if k["pattern"] == "pulse:user:{<user_id>}:recs"]
['string']
>>> import jsonschema
>>> jsonschema.validate({"item_id": "a", "score": 1.0}, schema_of("pulse:item:{<item_id>}:similar")["items"])
>>> contract("shop1")["keys"][0]["pattern"]
'shop1:user:{<user_id>}:recs'
"""

from __future__ import annotations

from typing import Optional

from pulse.state.keys import SCHEMA_VERSION

_DRAFT = "https://json-schema.org/draft/2020-12/schema"

#: significant digits of the scores in per-user documents
DOC_DIGITS = 4
_DOC_FORMAT = f".{DOC_DIGITS}g"  # (built once: a spec built per call cost a third of the call)


def doc_number(x: float) -> float:
    """``x`` to :data:`DOC_DIGITS` significant digits, as per-user documents carry it.

    >>> doc_number(1.088063), doc_number(0.000123456), doc_number(12345.6)
    (1.088, 0.0001235, 12350.0)
    """
    return float(format(x, _DOC_FORMAT))


_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_ISO = {"type": "string", "format": "date-time", "description": "ISO-8601 UTC, milliseconds, event time"}
_SCORES = {"type": "object", "additionalProperties": _NUM}


def _object(props: dict, required: Optional[list] = None, **extra) -> dict:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": False, **extra}


_RECS = _object(
    {
        "recomm_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16}$",
                      "description": "a fresh id per list (16 base64url characters), the same on every replay"},
        "generated_at": _ISO,
        "segment": {"type": ["string", "null"], "description": "the segment the list was blended for"},
        "items": {
            "type": "array",
            "items": _object({
                "item_id": _STR,
                "score": {**_NUM, "description": "the blend's score, 4 significant digits"},
                "reason": {"type": "string", "pattern": "^(co_visit:.+|category:.+|segment|trending)$",
                           "description": "co_visit:<the user's item it goes with>, category:<c>, segment or trending"},
            }),
        },
    },
    description="the user's recommendations, best first (the user id is the key's)",
)
_PROFILE = _object(
    {
        "counts": {"type": "object", "additionalProperties": _INT,
                   "description": "events per event type (their sum is the user's events)"},
        "first_seen": {"type": ["integer", "null"], "description": "epoch ms"},
        "last_seen": {"type": ["integer", "null"], "description": "epoch ms"},
        "engagement": {"type": "number", "minimum": 0, "maximum": 1,
                       "description": "1 - e^(-decayed activity / 50), 4 significant digits"},
        "dwell_mean_ms": {"type": ["integer", "null"]},
        "categories": {**_SCORES, "description": "decayed category affinities, strongest first, 4 significant digits"},
        "items": {**_SCORES, "description": "decayed item affinities, strongest first, 4 significant digits"},
        "rule_segments": {"type": "array", "items": _STR, "description": "e.g. enthusiast:shoes"},
    },
    description="the user's profile (the user id is the key's)",
)
_CALM = _object({"score": _NUM, "flagged": {"const": False}})
_FLAGGED = _object({
    "score": _NUM,
    "flagged": {"const": True},
    "reason": {**_STR, "description": "why (the bot rules' reasons start with 'rules: ')"},
    "clear_in": {"type": "integer", "description": "calm windows until the flag clears"},
})
_VERDICT = _object(
    {
        "segment": {"type": ["string", "null"], "description": "its traits are in pulse:segments"},
        "anomaly": {"oneOf": [_CALM, _FLAGGED], "description": "reason and clear_in only while flagged"},
    },
    description="the River models' verdicts on the user (the anomaly flag also from the bot rules; the user id is the key's)",
)
_SIMILAR = {"type": "array", "items": _object({"item_id": _STR, "score": _NUM}),
            "description": "co-visitation neighbours, scores relative to the best"}
_NBRS = _object(
    {
        "c": {"type": "array", "items": _STR, "description": "the item's categories"},
        "n": {"type": "array", "items": _STR, "description": "its neighbours, best first"},
        "s": {"type": "array", "items": _NUM, "description": "their co-visitation scores"},
        "k": {"type": "array", "items": {"type": "array", "items": _STR}, "description": "their categories"},
    },
    description="internal: the co-visitation list the blend reads in other processes",
)
_SEGMENTS = _object(
    {
        "model": _STR,
        "window": _STR,
        "learned": _INT,
        "segments": {"type": "object", "additionalProperties": _object({
            "windows": _INT,
            "traits": {"type": "array", "items": _STR},
            "centroid": {**_SCORES, "description": "standard deviations from the mean, per feature"},
            "drift": {"type": "number", "minimum": 0, "description": "how far the centroid moved since the last summary"},
        })},
    },
    description="segment sizes, centroids, traits and drift",
)

# (pattern without prefix, type, schema, members, TTL note)
_KEYS: tuple[tuple[str, str, Optional[dict], Optional[dict], str], ...] = (
    ("user:{<user_id>}:recs", "string", _RECS, None, "ttl_recs_s (default user_ttl_s)"),
    ("user:{<user_id>}:profile", "string", _PROFILE, None, "ttl_profile_s (default user_ttl_s)"),
    ("user:{<user_id>}:segment", "string", _VERDICT, None, "ttl_segment_s (default user_ttl_s)"),
    ("user:{<user_id>}:events", "zset", None, {"member": "an event's JSON: type, ts and those of item_id, category, session_id, "
                                                          "event_id, dwell_ms, scroll_pct, price, rating it has",
                                                "score": "its event time (epoch ms)",
                                                "kept": "the recent_events latest (setting; 0, the default, keeps none)"}, "ttl_events_s (default user_ttl_s)"),
    ("item:{<item_id>}:similar", "string", _SIMILAR, None, ""),
    ("item:{<item_id>}:nbrs", "string", _NBRS, None, ""),
    ("trending", "zset", None, {"member": "item id", "score": "decayed popularity"}, ""),
    ("trending:category:{<c>}", "zset", None, {"member": "item id", "score": "decayed popularity within category c"}, ""),
    ("trending:segment:{<s>}", "zset", None, {"member": "item id", "score": "decayed popularity among users of segment s"}, ""),
    ("segments", "string", _SEGMENTS, None, ""),
    ("anomalies", "stream", None, {"id": "event time ms-seq", "user_id": "a newly flagged user", "score": "anomaly score",
                                   "reason": "why (the bot rules' reasons start with 'rules: ')",
                                   "window_end": "ISO-8601 end of the window that flagged (the bot rules: the event's time)"}, ""),
    ("meta", "hash", None, {"schema_version": "this contract's version", "events_processed": "events the models learned",
                            "last_event_time": "ISO-8601", "last_event_ms": "epoch ms", "users": "users seen",
                            "items": "items seen", "anomalies_flagged": "users flagged so far"}, ""),
    ("updates", "stream", None, {"id": "event time ms-seq in a one-worker run, else the server's", "user_id": "whose list changed",
                                 "recomm_id": "the new list's id", "generated_at": "the new list's event time (ISO-8601)",
                                 "channel": "each entry is also published as JSON on the Pub/Sub channel of the same name"}, ""),
    ("stats:{<process>}", "hash", None, {
        "run": "the run's id (the processes of one cluster share it)", "process": "this process's index",
        "processes": "processes in the run", "mode": "replay or live", "running": "1 while the run lasts, then 0",
        "started_at": "epoch ms (wall clock)", "updated_at": "epoch ms (wall clock)", "events_in": "records read",
        "events_ok": "events accepted", "events_dlq": "records dead-lettered", "events_late": "late events",
        "dlq_by_reason": "JSON object: dead letters per reason", "events_per_s": "records/s over the monitor's window",
        "alerts": "JSON array of the data-quality alerts raised now: {check, value, threshold, message}",
        "history": "JSON array of the last samples: {t, events_in, events_ok, late, dlq, drift, sizes}",
        "consumer_lag": "live runs: records behind the topic's end",
        "freshness_p50_ms": "live runs: median time from an event until its user's list is in Redis",
        "freshness_p95_ms": "live runs: its 95th percentile"}, "7 days"),
)


def contract(prefix: str = "pulse") -> dict:
    """The whole contract for keys under ``prefix``: ``{"schema_version", "keys": [{"pattern",
    "redis_type", "schema", "members", "ttl"}]}``."""
    keys = []
    for pattern, kind, schema, members, ttl in _KEYS:
        entry: dict = {"pattern": f"{prefix}:{pattern}", "redis_type": kind,
                       "schema": None if schema is None else {"$schema": _DRAFT, **schema}}
        if members is not None:
            entry["members"] = members
        if ttl:
            entry["ttl"] = ttl
        keys.append(entry)
    return {"schema_version": SCHEMA_VERSION, "keys": keys}


def schema_of(pattern: str) -> Optional[dict]:
    """The JSON Schema of the values of ``pattern`` (as :func:`contract` writes it with
    the default prefix); None for a key that does not hold JSON. Raises KeyError, naming
    the known patterns, for one that is not in the contract."""
    for entry in contract()["keys"]:
        if entry["pattern"] == pattern:
            return entry["schema"]
    raise KeyError(f"no key pattern {pattern!r} in the contract; known: {', '.join(k['pattern'] for k in contract()['keys'])}")
