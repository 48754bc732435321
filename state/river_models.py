"""The River models' step: segments and anomaly flags, learned from closed windows only.

The user step sends this step only what it needs: the summaries of the windows that
closed at an accepted event (:attr:`~pulse.state.engine.EngineConfig.model_windows`
kinds), at the event's position in the log, and :class:`~pulse.operators.order.Coverage`
counts of every record. That is a small share of the events, so one key holds both
models without bounding the flow. Windows are learned in the canonical block order of
:class:`~pulse.operators.order.BlockOrder`, so the models (and every verdict) are a
function of the log alone, whatever the cluster's shape.

For each update it returns a :class:`Verdict`: the segment the user's segment window
fell in, and the anomaly detector's verdict of each anomaly window. The model step
(:mod:`pulse.state.engine`) applies it to the user at that same update. Per user, only
the users flagged now are remembered here (a flag clears after ``clear_after`` calm
windows); segments need no memory per user.

Example:

>>> from pulse.operators.windows import WindowSummary
>>> models = RiverModels(RiverConfig())
>>> w = WindowSummary("session", 0, 60_000, 4, 3, 3, 1, 0, 0, 12_000.0, 40.0, 60.0)
>>> v = models.learn_one("u1", "log", 7, [w])
>>> v.segment.startswith("s"), v.anomalies
(True, ())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

from pulse.operators.windows import WindowSummary
from pulse.state.anomaly import AnomalyConfig, AnomalyDetector
from pulse.state.segments import SegmentConfig, Segmenter


class Verdict(NamedTuple):
    """What the River models made of one update's windows: the segment and traits of
    its segment window (``segment`` None when it closed none), and ``(verdict, window
    end)`` for each anomaly window, in order. ``seq`` is -1 for the windows a user
    closes without an event (end of input, idle)."""

    user_id: str
    src: str
    seq: int
    segment: Optional[str]
    traits: tuple[str, ...]
    anomalies: tuple[tuple[dict, int], ...]


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
        self.clock = 0  # the latest window end learned
        self._summary_at: Optional[int] = None

    def learn_one(self, user_id: str, src: str, seq: int, windows: Sequence[WindowSummary]) -> Verdict:
        """Learn from one update's closed windows; returns the user's :class:`Verdict`."""
        segment: Optional[str] = None
        traits: tuple[str, ...] = ()
        anomalies = []
        for window in windows:
            if window.end_ms > self.clock:
                self.clock = window.end_ms
            if window.kind == self.config.anomaly.window:
                verdict = self.detector.learn_one(window, self.flagged.get(user_id))
                if verdict["flagged"]:
                    self.flagged[user_id] = verdict
                else:
                    self.flagged.pop(user_id, None)
                anomalies.append((verdict, window.end_ms))
            if window.kind == self.config.segments.window:
                segment, found = self.segmenter.learn_one(window)
                traits = tuple(found)
        return Verdict(user_id, src, seq, segment, traits, tuple(anomalies))

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
