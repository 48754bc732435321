"""The River models' step: segments and anomaly flags, learned from closed windows only.

The user step sends this step only what it needs: the summaries of the windows that
closed at an accepted event (:attr:`~pulse.state.config.EngineConfig.model_windows`
kinds), at the event's position in the log, and :class:`~pulse.operators.order.Coverage`
counts of every record. That is a small share of the events, so one key holds both
models without bounding the flow. Windows are learned in the canonical block order of
:class:`~pulse.operators.order.BlockOrder`, so the models (and every verdict) are a
function of the log alone, whatever the cluster's shape.

For each update it returns a :class:`Verdict`: the segment the user's segment window
fell in, and the anomaly detector's verdict of each anomaly window. The step that keeps
users' lists (:mod:`pulse.state.recs`) applies it to the user at that same update; a
newly flagged user is also an entry of ``pulse:anomalies``, written here with ids from
the windows' event time (so a replay writes the same ids). Per user, only
the users flagged now are remembered here (a flag clears after ``clear_after`` calm
windows); segments need no memory per user.

The behavioural bot rules (:mod:`pulse.state.bots`, worked out in the user step) join
the flag here: an update whose rules' verdict changed comes to this step like one that
closed windows, and a user is flagged while the model or the rules say so (the model's
verdict first, else the rules' with their reason, ``"rules: ..."``). This step is the
one writer of ``pulse:anomalies`` because its entries' ids must grow: Redis refuses an id
below the stream's top, and writers in other steps would refuse each other's entries.

Example:

>>> from pulse.operators.windows import WindowSummary
>>> models = RiverModels(RiverConfig())
>>> w = WindowSummary("session", 0, 60_000, 4, 3, 3, 1, 0, 0, 12_000.0, 40.0, 60.0)
>>> v = models.learn_one("u1", "log", 7, [w])
>>> v.segment.startswith("s"), v.anomalies
(True, ())
>>> models.learn_one("u1", "log", 8, [], rules="rate: 130 item events in one minute", ts=61_000).anomalies
(({'score': 1.0, 'flagged': True, 'reason': 'rules: rate: 130 item events in one minute', 'clear_in': 0}, 61000, True),)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

from pulse.operators.windows import WindowSummary
from pulse.state.anomaly import AnomalyConfig, AnomalyDetector
from pulse.state.segments import SegmentConfig, Segmenter


class Verdict(NamedTuple):
    """What the River models made of one update's windows: the segment of its segment
    window (``segment`` None when it closed none; its traits are in the segments'
    summary), and ``(verdict, window
    end, newly flagged)`` for each anomaly window, in order, then for a change of the
    bot rules' verdict (its time being the event's). ``seq`` is -1 for the windows a user
    closes without an event (end of input, idle)."""

    user_id: str
    src: str
    seq: int
    segment: Optional[str]
    anomalies: tuple[tuple[dict, int, bool], ...]


#: the verdict of a user neither the model nor the rules flag
CALM = {"score": 0.0, "flagged": False, "reason": "", "clear_in": 0}


def rule_verdict(reason: str) -> dict:
    """The anomaly verdict of a user the bot rules flag (``clear_in`` 0: the rules clear
    by sessions, not windows)."""
    return {"score": 1.0, "flagged": True, "reason": f"rules: {reason}", "clear_in": 0}


@dataclass(frozen=True)
class RiverConfig:
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    #: ``pulse:segments`` is rewritten after this much event time of learning
    summary_interval_s: float = 5.0


class RiverModels:
    """The segmenter and the anomaly detector, and the users flagged now."""

    def __init__(self, config: RiverConfig = RiverConfig()) -> None:
        self.config = config
        self.segmenter = Segmenter(config.segments)
        self.detector = AnomalyDetector(config.anomaly)
        self.flagged: dict[str, dict] = {}  # user -> verdict, while flagged
        self.ruled: dict[str, str] = {}  # user -> the bot rules' reason, while they hold
        self.clock = 0  # the latest window end learned
        self._summary_at: Optional[int] = None
        self._entry_last = (0, 0)

    def learn_one(self, user_id: str, src: str, seq: int, windows: Sequence[WindowSummary],
                  rules: Optional[str] = None, ts: int = 0) -> Verdict:
        """Learn from one update's closed windows, and the bot rules' verdict when it
        changed at the update (``rules``: the reason, or "" when cleared; ``ts`` the
        event's time); returns the user's :class:`Verdict`."""
        segment: Optional[str] = None
        anomalies = []
        ruled = self.ruled.get(user_id)
        for window in windows:
            if window.end_ms > self.clock:
                self.clock = window.end_ms
            if window.kind == self.config.anomaly.window:
                was = self.flagged.get(user_id)
                verdict = self.detector.learn_one(window, was)
                if verdict["flagged"]:
                    self.flagged[user_id] = verdict
                else:
                    self.flagged.pop(user_id, None)
                shown = verdict if verdict["flagged"] or ruled is None else rule_verdict(ruled)
                anomalies.append((shown, window.end_ms, verdict["flagged"] and was is None and ruled is None))
            if window.kind == self.config.segments.window:
                segment = self.segmenter.learn_one(window)
        if rules is not None:
            if rules:
                self.ruled[user_id] = rules
            else:
                self.ruled.pop(user_id, None)
            model = self.flagged.get(user_id)
            shown = model if model is not None else rule_verdict(rules) if rules else CALM
            anomalies.append((shown, ts, bool(rules) and ruled is None and model is None))
        return Verdict(user_id, src, seq, segment, tuple(anomalies))

    def forget(self, user_id: str, src: str, seq: int) -> Verdict:
        """Drop what is kept of ``user_id`` (:mod:`pulse.state.privacy`); the models keep
        what they learned (aggregates, no user id)."""
        self.flagged.pop(user_id, None)
        self.ruled.pop(user_id, None)
        return Verdict(user_id, src, seq, None, ())

    def release(self, user_id: str) -> None:
        """Let go of ``user_id``, whose state a live run freed: the user starts afresh
        when they come back, and the users flagged here stay bounded by the users held."""
        self.flagged.pop(user_id, None)
        self.ruled.pop(user_id, None)

    def entry_id(self) -> str:
        """A fresh ``pulse:anomalies`` entry id: ids must grow, and derived from window
        time a replay reuses them (Redis then refuses the duplicates)."""
        ms, seq = self._entry_last
        self._entry_last = (self.clock, 0) if self.clock > ms else (ms, seq + 1)
        return f"{self._entry_last[0]}-{self._entry_last[1]}"

    def summary_due(self) -> bool:
        """Whether ``pulse:segments`` is due: first learning, then every
        ``summary_interval_s`` of window time (a function of the canonical order)."""
        if not self.segmenter.learned:
            return False
        return self._summary_at is None or self.clock - self._summary_at >= self.config.summary_interval_s * 1000

    def summary(self) -> dict:
        """The segments' summary (``pulse:segments``) as of now."""
        self._summary_at = self.clock
        return self.segmenter.summary()
