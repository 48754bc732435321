r"""The Redis key schema: the one place that names what frontends read.

Every key starts with a configurable prefix (default ``pulse``) so several deployments
can share one Redis. Per-user and per-item keys put the id in braces, a Redis Cluster
hash tag, so all of one user's keys land in the same slot.

An id cannot escape its key. The rule for every id that becomes part of a key (user
ids, item ids, category names), applied by the event validator and again here:

* whitespace around it is trimmed (``" u1 "`` is ``u1``);
* what is left is 1 to ``max_len`` characters (128 for users and categories, 256 for items);
* every character is printable (Python's ``str.isprintable``): no control characters
  (newline, NUL, ESC, ...), no format characters (the bidi overrides and isolates
  U+202A-U+202E and U+2066-U+2069, zero-width spaces, the BOM), no line or paragraph
  separators, no space other than the ASCII space, no surrogates, private-use or
  unassigned code points;
* it holds no ``{`` or ``}``: refused, not escaped, so a key has exactly one hash tag
  and the id in it reads back unchanged.

``:``, ``*``, ``?``, spaces inside and any other printable character are fine: the id
sits between the braces, where only the closing brace could end it. The prefix is
stricter (letters, digits, ``_``, ``-``, ``.``, ``:``), since it also goes into the SCAN
pattern of :meth:`KeySchema.pattern`, where ``*`` or ``[`` would match other
deployments' keys.

=====================================  ===========  ==========================================
key                                    type         value
=====================================  ===========  ==========================================
``pulse:user:{<user_id>}:recs``        string/JSON  ``{"recomm_id", "generated_at", "segment",
                                                    "items": [{"item_id", "score", "reason"}]}``
``pulse:user:{<user_id>}:profile``     string/JSON  counts per type, first/last_seen, engagement,
                                                    decayed affinities, rule segments
``pulse:user:{<user_id>}:segment``     string/JSON  ``{"segment", "anomaly"}``: the River models'
                                                    verdicts
``pulse:user:{<user_id>}:events``      sorted set   the user's latest events (``recent_events``
                                                    of them; off by default)
``pulse:item:{<item_id>}:similar``     string/JSON  ``[{"item_id", "score"}]`` co-visitation
``pulse:trending``                     sorted set   item -> decayed popularity
``pulse:trending:category:{<c>}``      sorted set   item -> decayed popularity in category c
``pulse:trending:segment:{<s>}``       sorted set   item -> decayed popularity in segment s
``pulse:item:{<item_id>}:nbrs``        string/JSON  internal: the co-visitation list the blend
                                                    reads in other processes
``pulse:segments``                     string/JSON  segment sizes, centroids, drift, traits
``pulse:anomalies``                    stream       one entry per flagged user
``pulse:meta``                         hash         schema_version, events_processed, ...
``pulse:updates``                      stream       one entry per user whose list changed (also
                                                    published on the Pub/Sub channel of the name)
``pulse:stats:{<process>}``            hash         a run's counters, rates and monitor alerts
=====================================  ===========  ==========================================

Example:

>>> keys = KeySchema("shop1")
>>> keys.recs("42")
'shop1:user:{42}:recs'
>>> clean_id("  a:b*c ")
'a:b*c'
>>> id_problem("evil}:recs")
"holds '}' at 4; ids may not hold braces (they delimit the key's hash tag)"
>>> keys.recs("a\nb")
Traceback (most recent call last):
...
ValueError: id 'a\nb' cannot be part of a key: holds U+000A (a control character) at 1; ids must be printable
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Optional

#: Bumped when a key or a value's layout changes in a way frontends would notice
#: (3: the per-user documents laid out for size; 4: an item's ``nbrs`` list as flat
#: arrays; see :mod:`pulse.state.schema`). A run
#: or a reader refuses keys that ``pulse:meta`` says are of another version
#: (:func:`pulse.state.store.schema_problem`).
SCHEMA_VERSION = 4

#: The longest user id, item id and category name (after trimming).
MAX_USER_ID = 128
MAX_ITEM_ID = 256
MAX_CATEGORY = 128

_PREFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")


def id_problem(value: str, max_len: int = MAX_ITEM_ID) -> Optional[str]:
    r"""Why ``value`` (already trimmed) cannot be an id, in words; None when it can.

    >>> id_problem("u-42"), id_problem("")
    (None, 'is empty')
    >>> id_problem("a\u202eb")
    'holds U+202E (a format character) at 1; ids must be printable'
    """
    if not value:
        return "is empty"
    if len(value) > max_len:
        return f"is {len(value)} characters long; the limit is {max_len}"
    if not value.isprintable():
        at, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        kind = _CATEGORY_NAMES.get(unicodedata.category(char), "not printable")
        return f"holds U+{ord(char):04X} ({kind}) at {at}; ids must be printable"
    for brace in "{}":
        at = value.find(brace)
        if at >= 0:
            return f"holds {brace!r} at {at}; ids may not hold braces (they delimit the key's hash tag)"
    return None


_CATEGORY_NAMES = {
    "Cc": "a control character",
    "Cf": "a format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Zs": "a space other than the ASCII space",
}


def clean_id(value: str, max_len: int = MAX_ITEM_ID) -> str:
    """``value`` trimmed, when it follows the id rule; else :class:`ValueError` saying why."""
    value = value.strip()
    problem = id_problem(value, max_len)
    if problem is not None:
        raise ValueError(problem)
    return value


def _tag(value: str) -> str:
    # Ids reach here validated; this guards the rule against a path that skipped it,
    # at the cost of one pass over a short string.
    if not value.isprintable() or "{" in value or "}" in value or not value:
        raise ValueError(f"id {value!r} cannot be part of a key: {id_problem(value, len(value) or 1)}")
    return value


@dataclass(frozen=True)
class KeySchema:
    """Every key name Pulse writes. ``prefix``: letters, digits and ``_.:-``, at most 64."""

    prefix: str = "pulse"

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise ValueError(
                f"key prefix {self.prefix!r} is not allowed: use 1-64 letters, digits, '_', '.', ':' or '-', "
                "starting with a letter, digit or '_' (it also goes into SCAN patterns, where '*' or '[' would match "
                "other deployments' keys)"
            )

    def recs(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{_tag(user_id)}}}:recs"

    def profile(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{_tag(user_id)}}}:profile"

    def verdict(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{_tag(user_id)}}}:segment"

    def recent_events(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{_tag(user_id)}}}:events"

    def user_of(self, key: str) -> str:
        """The user id in one of this schema's per-user keys (the documents do not repeat it).

        >>> KeySchema("shop1").user_of("shop1:user:{a:b}:recs")
        'a:b'
        """
        head = f"{self.prefix}:user:{{"
        if not key.startswith(head) or "}" not in key[len(head):]:
            raise ValueError(f"{key!r} is not a per-user key under the prefix {self.prefix!r}")
        return key[len(head):key.rindex("}")]

    def user_keys(self, user_id: str) -> tuple[str, ...]:
        """Every key Pulse keeps of one user (what forgetting the user deletes)."""
        return (self.recs(user_id), self.profile(user_id), self.verdict(user_id), self.recent_events(user_id))

    def similar(self, item_id: str) -> str:
        return f"{self.prefix}:item:{{{_tag(item_id)}}}:similar"

    def nbrs(self, item_id: str) -> str:
        return f"{self.prefix}:item:{{{_tag(item_id)}}}:nbrs"

    def segment_trending(self, segment: str) -> str:
        return f"{self.prefix}:trending:segment:{{{_tag(segment)}}}"

    def category_trending(self, category: str) -> str:
        return f"{self.prefix}:trending:category:{{{_tag(category)}}}"

    @property
    def trending(self) -> str:
        return f"{self.prefix}:trending"

    @property
    def segments(self) -> str:
        return f"{self.prefix}:segments"

    @property
    def anomalies(self) -> str:
        return f"{self.prefix}:anomalies"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def updates(self) -> str:
        """The stream of users whose list changed, and the Pub/Sub channel of the same name."""
        return f"{self.prefix}:updates"

    def stats(self, process: int = 0) -> str:
        return f"{self.prefix}:stats:{{{process}}}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this deployment."""
        return f"{self.prefix}:*"
