"""Change notifications: who got a new list, announced as it is written.

A frontend that shows recommendations learns that a user's list changed from the
capped stream ``pulse:updates`` (read with XREAD or a consumer group, from where it
left off) or the Pub/Sub channel of the same name (fire and forget), instead of polling
every user's key. Each entry carries the user's id and the new list's ``recomm_id`` and
``generated_at``; the list itself stays in ``pulse:user:{<user_id>}:recs``.

:class:`UpdateNotifier` is a :class:`~pulse.state.store.RedisStore` ``on_add`` hook: for
every list written through the store it adds a :class:`~pulse.state.store.Publish`. In a
run of one worker (a replay's determinism guarantee), entry ids come from event time
like ``pulse:anomalies``'s, ``<ms>-<seq>``, never decreasing: replaying the same log gives
the same stream, and Redis refuses the entries a repeated replay sends again. With
several workers or processes, which write to the one stream at once, and in a resumed
run (whose numbering would restart within a millisecond another list already took), the
server numbers the entries (``*``).

Example:

>>> from pulse.state.store import Put
>>> notify = UpdateNotifier(KeySchema(), deterministic=True)
>>> doc = b'{"recomm_id":"NHm-5r0aFowEMaJK","generated_at":"2026-01-05T00:00:00.000Z","segment":null,"items":[]}'
>>> [(w.key, w.entry_id, w.fields) for w in notify([Put("pulse:user:{u1}:recs", doc)])]
[('pulse:updates', '1767571200000-0', (('user_id', 'u1'), ('recomm_id', 'NHm-5r0aFowEMaJK'), ('generated_at', '2026-01-05T00:00:00.000Z')))]
>>> [w.entry_id for w in notify([Put("pulse:user:{u2}:recs", doc)])]
['1767571200000-1']
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Iterable

import orjson

from pulse.state.keys import KeySchema
from pulse.state.store import Publish, Put, Write


class UpdateNotifier:
    """Announces every list written (see the module docstring); one per store, so one
    per worker.

    :arg keys: the key schema (the stream's name and how lists' keys end).
    :arg deterministic: ids from event time (one worker); else the server's.
    :arg maxlen: the stream is capped at about this many entries (``MAXLEN ~``).
    """

    def __init__(self, keys: KeySchema, deterministic: bool, maxlen: int = 10_000) -> None:
        self.stream = keys.updates
        self.prefix = f"{keys.prefix}:user:{{"
        self.deterministic = deterministic
        self.maxlen = maxlen
        self._last = (0, -1)  # the last entry id given, (ms, seq)

    def __call__(self, writes: Iterable[Write]) -> list[Write]:
        out: list[Write] = []
        for w in writes:
            if type(w) is Put and w.key.endswith("}:recs") and w.key.startswith(self.prefix):
                out.append(self._announce(w.key[len(self.prefix):-6], w.value))
        return out

    def _announce(self, user_id: str, value: bytes) -> Publish:
        # A list is written as {"recomm_id":"<16 characters>","generated_at":"<ISO ms>",..}
        # (pulse.state.recs): the two are read at their places, which spares the
        # dataflow's thread a parse of the whole list (this runs for every list
        # written). Anything else is parsed.
        if value[:14] == b'{"recomm_id":"' and value[30:48] == b'","generated_at":"' and value[72:73] == b'"':
            recomm, generated_at = value[14:30].decode(), value[48:72].decode()
        else:
            doc = orjson.loads(value)
            recomm, generated_at = doc["recomm_id"], doc["generated_at"]
        message = orjson.dumps({"user_id": user_id, "recomm_id": recomm, "generated_at": generated_at})
        fields = (("user_id", user_id), ("recomm_id", recomm), ("generated_at", generated_at))
        return Publish(self.stream, self._next_id(generated_at), fields, self.stream, message, self.maxlen)

    def _next_id(self, generated_at: str) -> str:
        if not self.deterministic:
            return "*"
        ms = _epoch_ms(generated_at)
        last_ms, seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return f"{self._last[0]}-{self._last[1]}"


@lru_cache(maxsize=4096)
def _epoch_second(head: str) -> int:
    return int(datetime.fromisoformat(head + "Z").timestamp())


def _epoch_ms(iso: str) -> int:
    """``2026-01-05T00:00:00.123Z`` as epoch ms (the second's part cached: lists come in
    time order, many a second)."""
    if len(iso) == 24 and iso[19] == ".":
        return _epoch_second(iso[:19]) * 1000 + int(iso[20:23])
    return int(datetime.fromisoformat(iso).timestamp() * 1000)
