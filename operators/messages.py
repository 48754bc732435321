"""What the stateful steps send each other: plain values, since they cross processes.

* :class:`ModelUpdate` — the user step's output for every accepted event (and for a
  user's last windows, a forgetting, an eviction), read by the River step and the list
  step;
* :class:`ItemUpdate` — the list step's output for every update, read by the model
  step (:mod:`pulse.state.items`).

Example:

>>> up = ModelUpdate("u1", True, "a", ("shoes",), 1_000, 1.0, ())
>>> up.needs_verdict
False
>>> ItemUpdate("u1", True, "a", ("shoes",), 1_000, 1.0, (), None, False).recent
()
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

from pulse.operators.events import Event
from pulse.operators.windows import WindowSummary


class ModelUpdate(NamedTuple):
    """What the user step sends on for one accepted event: its item, categories, event
    time, weight and position (partition ``src``, index ``seq``), summaries of the user's
    windows that closed, of the kinds a model learns from (:attr:`EngineConfig.model_windows`),
    the user's strongest categories when the profile changed (else None), and the bot
    rules' verdict when it changed at this event (:mod:`pulse.state.bots`: the reason, or
    "" when cleared; else None). ``event`` is False when only windows closed (end of
    input, an idle user), and for a ``consent: false`` record; ``forget`` says the user
    is forgotten here (:meth:`forgetting`). Plain values, not the :class:`Event`: it
    crosses processes."""

    user_id: str
    event: bool
    item_id: Optional[str]
    category: tuple[str, ...]
    ts: int
    weight: float
    windows: Sequence[WindowSummary]
    src: str = ""
    seq: int = -1
    purchase: bool = False
    affinities: Optional[tuple[tuple[str, float], ...]] = None
    bot: Optional[str] = None
    forget: bool = False
    #: a live run freed the user's state (idle for ``live_idle_s``): the River step
    #: lets go of the user too
    evicted: bool = False

    @classmethod
    def of(cls, ev: Event, weight: float, windows: Sequence[WindowSummary],
           affinities: Optional[tuple[tuple[str, float], ...]] = None, bot: Optional[str] = None) -> "ModelUpdate":
        return cls(ev.user_id, True, ev.item_id, ev.category, ev.ts, weight, windows, ev.src, ev.seq,
                   ev.type == "purchase", affinities, bot)

    @classmethod
    def closing(cls, user_id: str, windows: Sequence[WindowSummary], bot: Optional[str] = None,
                evicted: bool = False) -> "ModelUpdate":
        return cls(user_id, False, None, (), 0, 0.0, windows, bot=bot, evicted=evicted)

    @classmethod
    def forgetting(cls, ev: Event) -> "ModelUpdate":
        """The user is to be forgotten at ``ev`` (:mod:`pulse.state.privacy`): a ``forget``
        event (an accepted event), or a ``consent: false`` one (``ev.consent`` False:
        accounted for as its dead letter)."""
        return cls(ev.user_id, ev.consent, None, (), ev.ts, 0.0, (), ev.src, ev.seq, forget=True)

    @property
    def needs_verdict(self) -> bool:
        """Whether the River step has a say on this update (and the list step waits for
        it): windows closed, the bot rules' verdict changed, the user is forgotten or evicted."""
        return bool(self.windows) or self.bot is not None or self.forget or self.evicted


class ItemUpdate(NamedTuple):
    """What the model step learns from one accepted event: the item, its categories,
    event time and weight, and of its user the recent distinct items before this one
    (oldest first), the segment, and whether the user is flagged (a flagged user's
    events do not feed the models). ``new_flag`` counts a user flagged at this update,
    ``new_user`` a user's first update. ``event`` is False for an update without an
    event (a user's last windows closed: only ``new_flag`` may count)."""

    user_id: str
    event: bool
    item_id: Optional[str]
    category: tuple[str, ...]
    ts: int
    weight: float
    recent: tuple[str, ...]
    segment: Optional[str]
    flagged: bool
    new_flag: bool = False
    new_user: bool = False
    src: str = ""
    seq: int = -1
