"""Anomaly detection: River's Half-Space Trees over per-minute window features.

Bots, scrapers and click floods look unlike people within a minute: too many events,
too many distinct items, clicks without views, no dwell. Each closed one-minute window of
a user becomes a feature vector; a :class:`river.preprocessing.MinMaxScaler` feeds a
:class:`river.anomaly.HalfSpaceTrees`, and a window is flagged when its score is above
the running ``quantile`` of scores (:class:`river.stats.Quantile`) *and* it has at least
``min_events`` events (a quiet minute is never a flood). The detector scores each window
before learning from it; windows of fewer than ``learn_min_events`` events (most minutes of
most users) are neither scored nor learned, so the trees and the threshold describe the
busier minutes, where floods are told apart. A flagged user stays flagged until
``clear_after`` consecutive normal windows.

The reason names the feature furthest above its own running mean, e.g.
``"events=240/min (typical 3)"``.

One detector per engine shard; never one per user (a HalfSpaceTrees costs ~40 ms to
deep-copy).

Example:

>>> from pulse.operators.windows import WindowAgg
>>> det = AnomalyDetector(AnomalyConfig(warmup=0, min_events=1, learn_min_events=1))
>>> v = det.learn_one(WindowAgg("tumbling:60", 0, 60_000, events=2, counts={"view": 2}).summary())
>>> sorted(v)
['clear_in', 'flagged', 'reason', 'score']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from pulse.operators.windows import WindowSummary


@dataclass(frozen=True)
class AnomalyConfig:
    window: str = "tumbling:60"
    n_trees: int = 10
    height: int = 8
    window_size: int = 250
    quantile: float = 0.98
    min_events: int = 30
    warmup: int = 200
    clear_after: int = 3
    seed: int = 42
    #: windows with fewer events are neither scored nor learned (score 0): they are
    #: never anomalous, and skipping them spares the trees most of the windows
    learn_min_events: int = 5


def minute_features(w: WindowSummary) -> dict[str, float]:
    """The anomaly features of one window."""
    clicks = w.clicks
    return {
        "events": math.log1p(w.events),
        "items": math.log1p(w.distinct_items),
        "clicks": math.log1p(clicks),
        "clicks_per_view": min(clicks / max(w.views, 1), 5.0),
        "no_dwell": 1.0 / (1.0 + w.dwell_mean_ms / 1000),
    }


_RAW = {
    "events": lambda w: w.events,
    "items": lambda w: w.distinct_items,
    "clicks": lambda w: w.clicks,
}


class AnomalyDetector:
    """Flags anomalous users from their one-minute windows (see the module docstring)."""

    def __init__(self, config: AnomalyConfig = AnomalyConfig()) -> None:
        self.config = config
        # (imported here: River pulls in scipy, most of a second of start-up that the
        # commands which learn no model would pay)
        from river import anomaly, preprocessing, stats
        self.scaler = preprocessing.MinMaxScaler()
        self.model = anomaly.HalfSpaceTrees(n_trees=config.n_trees, height=config.height,
                                            window_size=config.window_size, seed=config.seed)
        self.threshold = stats.Quantile(config.quantile)
        self.means = {name: stats.Mean() for name in _RAW}
        self.seen = 0
        self.flags = 0

    def score_one(self, w: WindowSummary) -> float:
        return self.model.score_one(self.scaler.transform_one(minute_features(w)))

    def learn_one(self, w: WindowSummary, previous: Optional[dict] = None) -> dict:
        """Score one window, then learn from it; returns the user's verdict."""
        if w.events < self.config.learn_min_events:
            score = 0.0
            anomalous = False
        else:
            x = minute_features(w)
            self.scaler.learn_one(x)
            xs = self.scaler.transform_one(x)
            score = self.model.score_one(xs)
            self.model.learn_one(xs)
            threshold = self.threshold.get()
            self.threshold.update(score)
            self.seen += 1
            anomalous = (
                self.seen > self.config.warmup
                and threshold is not None
                and score > threshold
                and w.events >= self.config.min_events
            )
        reason = self._reason(w) if anomalous else ""
        for name, fn in _RAW.items():
            self.means[name].update(fn(w))
        was = bool(previous and previous.get("flagged"))
        if anomalous:
            if not was:
                self.flags += 1
            return {"score": round(score, 6), "flagged": True, "reason": reason, "clear_in": self.config.clear_after}
        if was:
            left = previous.get("clear_in", self.config.clear_after) - 1
            if left > 0:
                return {**previous, "score": round(score, 6), "clear_in": left}
        return {"score": round(score, 6), "flagged": False, "reason": "", "clear_in": 0}

    def _reason(self, w: WindowSummary) -> str:
        best, ratio = "events", -1.0
        for name, fn in _RAW.items():
            r = fn(w) / max(self.means[name].get(), 1.0)
            if r > ratio:
                best, ratio = name, r
        minutes = max((w.end_ms - w.start_ms) / 60_000, 1e-9)
        return f"{best}={_RAW[best](w) / minutes:.0f}/min (typical {self.means[best].get():.0f})"
