"""Privacy: forgetting a user, and pseudonymous user ids.

**Forgetting.** A user is forgotten when an event of theirs says ``consent: false``,
when a ``forget`` event of theirs comes (``{"user_id", "type": "forget", "ts"}``: what
``pulse forget --brokers`` produces for a live run), or by ``pulse forget USER_ID...
--redis URL`` (:func:`forget_users`, Redis only). The flow then drops what its steps
hold of the user (windows, profile, dedup ring, bot rules, recent items, exclusions,
flags) and deletes the user's keys (:meth:`~pulse.state.keys.KeySchema.user_keys`) and
their entries of ``pulse:anomalies`` and ``pulse:updates`` (:func:`forget_writes`).
Each step writes the deletes of what it wrote itself, through the same store, so no
write of the user that was still waiting can land after them. Forgetting again changes
nothing. A later event of the same user starts afresh.

What remains are aggregates: co-visitation counts, trending, segment centroids and the
anomaly model's trees hold sums over many users' events, no user id, and decay with
event time; taking one user's share out exactly would need each user's history, which
is what forgetting deletes.

**Pseudonyms.** With a key (``PULSE_PSEUDONYMIZE_KEY``) every user id is replaced by
its :func:`pseudonym` as the flow parses it, before anything is stored or written: keys,
values, streams and dead letters hold the pseudonym only. A dead letter's payload (the
record as it came) gets the same treatment (:func:`pseudonymous_payload`): in a JSON
object ``user_id`` and ``anonymous_id`` become pseudonyms; a payload that is not a JSON
object is not kept at all (an id in it cannot be found to be replaced), the dead letter
keeping its reason and position. A frontend derives the same pseudonym to find the
user's keys (:class:`pulse.client.PulseClient` takes the key).

>>> pseudonym("u42", "k3y")
'76fda38416142edf66d6753cfb5a94f2'
>>> pseudonymous_payload(b'{"user_id": " u42 ", "type": "teleport"}', "k3y")
b'{"user_id":"76fda38416142edf66d6753cfb5a94f2","type":"teleport"}'
>>> pseudonymous_payload(b'{"user_id": "u42", "type": ', "k3y") is None
True
>>> [type(w).__name__ for w in forget_writes(KeySchema(), "u42")]
['Delete', 'Delete', 'Delete', 'Delete', 'StreamPurge', 'StreamPurge']
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Iterable, Optional, Union

import orjson

from pulse.state.keys import KeySchema
from pulse.state.store import _PURGE_SCRIPT, Delete, RedisLike, StreamPurge, Write, connect

#: hex digits of a pseudonym (128 bits: no collision among any realistic number of users)
PSEUDONYM_HEX = 32


def pseudonym(user_id: str, key: Union[str, bytes]) -> str:
    """The pseudonym of ``user_id`` under ``key``: HMAC-SHA256 of its UTF-8 bytes, the
    first :data:`PSEUDONYM_HEX` hex digits. In JavaScript (Node.js):
    ``createHmac("sha256", key).update(userId).digest("hex").slice(0, 32)``."""
    secret = key.encode() if isinstance(key, str) else key
    return hmac.new(secret, user_id.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


#: the fields of a payload that identify a user (``anonymous_id``: the tracker's)
ID_FIELDS = ("user_id", "anonymous_id")


def pseudonymous_payload(payload: bytes, key: Union[str, bytes]) -> Optional[bytes]:
    """A refused record's payload with its user ids (:data:`ID_FIELDS`) replaced by their
    pseudonyms under ``key``, as the flow would have derived them (trimmed; a number as
    its decimal digits; any other JSON value by its JSON text); None when the payload is
    not a JSON object, so its ids cannot be found: it must not be kept. An empty payload
    (an opt-out's) stays empty."""
    if not payload:
        return payload
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    for name in ID_FIELDS:
        value = doc.get(name)
        if value is not None:
            doc[name] = pseudonym(_id_text(value), key)
    return orjson.dumps(doc)


def _id_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()  # (as the validator trims ids)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return orjson.dumps(value).decode()


def forget_writes(keys: KeySchema, user_id: str) -> list[Write]:
    """The writes that delete what Redis holds of ``user_id``."""
    return [*(Delete(k) for k in keys.user_keys(user_id)),
            StreamPurge(keys.anomalies, "user_id", user_id), StreamPurge(keys.updates, "user_id", user_id)]


def forget_users(redis_at: RedisLike, keys: KeySchema, user_ids: Iterable[str]) -> dict:
    """Delete every key and stream entry of ``user_ids`` in the Redis at ``redis_at``
    (ids as stored: pseudonyms where the flow pseudonymizes). Returns counts of what was
    deleted; forgetting again deletes nothing more."""
    client = connect(redis_at)
    users = deleted = entries = 0
    try:
        for user_id in user_ids:
            users += 1
            for w in forget_writes(keys, user_id):
                if type(w) is Delete:
                    deleted += client.delete(w.key)
                else:
                    entries += client.eval(_PURGE_SCRIPT, 1, w.key, w.name, w.value)
    finally:
        client.close()
    return {"users": users, "keys_deleted": deleted, "stream_entries_deleted": entries}
