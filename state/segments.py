"""Online segmentation: River's incremental k-means over standardized window features.

Each closed window of a user (by default the session) becomes a feature vector of how
the user engaged: how much, how broadly, how deeply (dwell, scroll), how often views turn
into clicks, carts and purchases. A :class:`river.preprocessing.StandardScaler` feeds a
:class:`river.cluster.KMeans`; both learn one window at a time, and the user's segment is
the cluster their latest window falls in. There is one model per engine shard, never one
per user (a River model is far too large to snapshot per key).

A segment's *traits* are the features on which its centroid stands out (more than
``trait_z`` standard deviations from the mean), in words, e.g. ``["buys", "long dwell"]``.
:meth:`Segmenter.summary` reports sizes, centroids and how far each centroid moved since
the previous summary (drift).

Example:

>>> from pulse.operators.windows import WindowAgg
>>> seg = Segmenter(SegmentConfig(n_clusters=2, seed=1))
>>> w = WindowAgg("session", 0, 60_000, events=3, counts={"view": 2, "click": 1}).summary()
>>> seg.learn_one(w) in {"s0", "s1"}
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from pulse.operators.windows import WindowSummary

#: feature name -> (words when high, words when low)
TRAITS = {
    "activity": ("very active", "light activity"),
    "breadth": ("browses widely", "focused"),
    "ctr": ("clicks through", "rarely clicks"),
    "cart": ("adds to cart", None),
    "purchase": ("buys", None),
    "dwell": ("long dwell", "quick exits"),
    "scroll": ("scrolls deep", "shallow scroll"),
    "length": ("long sessions", "short sessions"),
}


@dataclass(frozen=True)
class SegmentConfig:
    n_clusters: int = 5
    halflife: float = 0.1
    seed: int = 42
    window: str = "session"
    trait_z: float = 0.5


def window_features(w: WindowSummary) -> dict[str, float]:
    """The segmentation features of one window."""
    events = max(w.events, 1)
    return {
        "activity": math.log1p(w.events),
        "breadth": w.distinct_items / events,
        "ctr": min(w.ctr, 2.0),
        "cart": w.cart_rate,
        "purchase": w.purchase_rate,
        "dwell": math.log1p(w.dwell_mean_ms / 1000),
        "scroll": w.scroll_mean / 100,
        "length": math.log1p(w.length_s),
    }


FEATURE_NAMES = ("activity", "breadth", "ctr", "cart", "purchase", "dwell", "scroll", "length")


class Segmenter:
    """Online k-means segments of users (see the module docstring)."""

    def __init__(self, config: SegmentConfig = SegmentConfig()) -> None:
        self.config = config
        # (imported here: River pulls in scipy, most of a second of start-up that the
        # commands which learn no model would pay)
        from river import cluster, preprocessing
        self.scaler = preprocessing.StandardScaler()
        self.model = cluster.KMeans(n_clusters=config.n_clusters, halflife=config.halflife, sigma=1.0, seed=config.seed)
        # River draws a centre's coordinates lazily, in the order the features are first
        # met, which follows set iteration and so the process's string hash seed: draw
        # them all now, in a fixed order, so every process (and every resume) agrees.
        for center in self.model.centers.values():
            for name in FEATURE_NAMES:
                center[name]
        self.assigned: dict[str, int] = {}  # segment -> windows assigned since start
        self.learned = 0
        self._last_centers: dict[int, dict[str, float]] = {}

    def learn_one(self, window: WindowSummary) -> str:
        """Learn from one window and return the id of its segment (whose traits
        :meth:`summary` reports)."""
        x = window_features(window)
        self.scaler.learn_one(x)
        z = self.scaler.transform_one(x)
        self.model.learn_one(z)
        self.learned += 1
        k = self.model.predict_one(z)
        segment = f"s{k}"
        self.assigned[segment] = self.assigned.get(segment, 0) + 1
        return segment

    def traits(self, k: int) -> list[str]:
        center = self.model.centers.get(k, {})
        out = []
        for name, z in sorted(center.items(), key=lambda kv: -abs(kv[1])):
            high, low = TRAITS.get(name, (None, None))
            words = high if z > self.config.trait_z else low if z < -self.config.trait_z else None
            if words:
                out.append(words)
        return out[:3]

    def summary(self) -> dict:
        """Sizes, centroids (in standard deviations), traits and drift per segment.

        Drift is how far each centroid moved since the previous summary that followed
        some learning; asking twice without learning in between gives the same answer
        (a resumed run may ask once more at the end of its input)."""
        cached = getattr(self, "_summary", None)
        if cached is not None and cached[0] == self.learned:
            return cached[1]
        segments = {}
        for k, center in sorted(self.model.centers.items()):
            before: Optional[dict] = self._last_centers.get(k)
            drift = 0.0 if before is None else math.sqrt(sum((center.get(f, 0.0) - before.get(f, 0.0)) ** 2 for f in center))
            segments[f"s{k}"] = {
                "windows": self.assigned.get(f"s{k}", 0),
                "traits": self.traits(k),
                "centroid": {f: round(v, 4) for f, v in sorted(center.items())},
                "drift": round(drift, 6),
            }
        self._last_centers = {k: dict(c) for k, c in self.model.centers.items()}
        doc = {"model": "river.cluster.KMeans", "window": self.config.window, "learned": self.learned, "segments": segments}
        self._summary = (self.learned, doc)
        return doc
