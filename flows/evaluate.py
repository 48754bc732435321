"""Prequential evaluation of the pipeline's own operators against simple baselines.

Events are read by the replay source (so MovieLens is in (time, line) order), parsed by
the same format, deduplicated and profiled by the same :class:`~pulse.state.user.UserState`,
judged by the same :class:`~pulse.state.river_models.RiverModels`, kept and blended by
the same :class:`~pulse.state.recs.Recommender`, learned by the same
:class:`~pulse.state.items.ItemModels` over a :class:`~pulse.state.view.LocalView` as in a
replay in one process. For every event, *before* learning from it, the user's current
top-K (excluding items the user already interacted with) is checked for the event's item: a hit counts 1 for
HR@K and 1/log2(rank + 2) for NDCG@K. The baselines see the same stream in the same run:

* ``random``: K random items seen so far (seeded);
* ``popularity``: all-time interaction counts;
* ``decayed_popularity``: counts with a half-life of 5,000 events.

Results are given overall, by how many events the user had before (0, 1–4, 5+) and, when
users revisit items (clickstreams, not MovieLens), for new and repeated items; a repeated
item is checked against a list that does not exclude seen items (only purchases).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Callable, Optional

from sortedcontainers import SortedList

from pulse.flows.config import Settings
from pulse.flows.replay import make_format
from pulse.flows.sources import RecordedLogSource
from pulse.operators.events import Event, Raw
from pulse.operators.windows import summarize
from pulse.operators.messages import ModelUpdate
from pulse.state.items import ItemModels
from pulse.state.recs import Recommender, UserRecs
from pulse.state.river_models import RiverModels
from pulse.state.user import UserState
from pulse.state.view import LocalView


class _Score:
    __slots__ = ("n", "hits", "ndcg")

    def __init__(self) -> None:
        self.n = 0
        self.hits = 0
        self.ndcg = 0.0

    def add(self, item: str, recs: list[str]) -> None:
        self.n += 1
        try:
            rank = recs.index(item)
        except ValueError:
            return
        self.hits += 1
        self.ndcg += 1.0 / math.log2(rank + 2)

    def doc(self) -> dict:
        return {
            "events": self.n,
            "hr": round(self.hits / self.n, 4) if self.n else None,
            "ndcg": round(self.ndcg / self.n, 4) if self.n else None,
        }


def _bucket(prior: int) -> str:
    return "0" if prior == 0 else "1-4" if prior < 5 else "5+"


class _Ranked:
    """Counts kept in rank order (a sorted list), so the best items not yet seen by a
    heavy user are found without ranking the whole table. ``half_life`` is in events."""

    def __init__(self, half_life: float = math.inf) -> None:
        self.growth = 1.0 if math.isinf(half_life) else 2 ** (1 / half_life)
        self.scale = 1.0
        self.counts: dict[str, float] = {}
        self.ranked = SortedList()  # (-count, item)

    def learn_one(self, item: str) -> None:
        # forward decay in event counts: each new event weighs `growth` times the last
        self.scale *= self.growth
        if self.scale > 1e200:
            self.counts = {i: c / self.scale for i, c in self.counts.items()}
            self.ranked = SortedList((-c, i) for i, c in self.counts.items())
            self.scale = 1.0
        old = self.counts.get(item)
        if old is not None:
            self.ranked.remove((-old, item))
        new = self.counts[item] = (old or 0.0) + self.scale
        self.ranked.add((-new, item))

    def top(self, k: int, exclude) -> list[str]:
        out = []
        for _, item in self.ranked:
            if item not in exclude:
                out.append(item)
                if len(out) >= k:
                    break
        return out


class _Baselines:
    """Random, popularity and decayed popularity, fed the same stream."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.catalogue: list[str] = []
        self.known: set[str] = set()
        self.popularity = _Ranked()
        self.decayed = _Ranked(half_life=5000)

    def recommend(self, k: int, exclude) -> dict[str, list[str]]:
        out: list[str] = []
        if self.catalogue:
            tries = 0
            while len(out) < k and tries < 20 * k:
                tries += 1
                item = self.catalogue[self.rng.randrange(len(self.catalogue))]
                if item not in exclude and item not in out:
                    out.append(item)
        return {
            "random": out,
            "popularity": self.popularity.top(k, exclude),
            "decayed_popularity": self.decayed.top(k, exclude),
        }

    def learn_one(self, item: str) -> None:
        if item not in self.known:
            self.known.add(item)
            self.catalogue.append(item)
        self.popularity.learn_one(item)
        self.decayed.learn_one(item)


def evaluate(
    path: Path,
    fmt_name: str,
    settings: Settings,
    k: int = 10,
    seed: int = 0,
    limit: Optional[int] = None,
    on_progress: Optional[Callable[[int, int], None]] = None,
) -> dict:
    """Run the prequential evaluation; returns the report (see the module docstring)."""
    path = Path(path)
    fmt = make_format(fmt_name, path)
    source = RecordedLogSource(path, fmt)
    events: list[tuple[int, int, int, Event]] = []
    dead = 0
    for p_index, part in enumerate(source.list_parts()):
        partition = source.build_part("evaluate", part, None)
        while True:
            try:
                batch = partition.next_batch()
            except StopIteration:
                break
            for raw in batch:
                if type(raw) is not Raw:
                    continue  # the partition's end marker
                parsed = fmt.parse(raw)
                if isinstance(parsed, Event):
                    events.append((parsed.ts, p_index, raw.position, parsed))
                else:
                    dead += 1
    events.sort(key=lambda e: e[:3])
    if limit:
        events = events[:limit]

    user_config = settings.user_config()
    engine_config = settings.engine_config()
    blend = dataclasses.replace(engine_config.blend, k=k, exclude_seen=True)
    blend_repeat = dataclasses.replace(blend, exclude_seen=False)
    # Only the models matter here: no global writes, no debounced lists.
    engine_config = dataclasses.replace(engine_config, blend=blend)
    models = ItemModels(engine_config)
    river = RiverModels(engine_config.river)
    view = LocalView(models)
    recommender = Recommender(engine_config, write_recs=False)
    users: dict[str, UserState] = {}
    recs_states: dict[str, UserRecs] = {}
    baselines = _Baselines(seed)
    names = ("pulse", "random", "popularity", "decayed_popularity")
    overall = {n: _Score() for n in names}
    by_prior = {n: {b: _Score() for b in ("0", "1-4", "5+")} for n in names}
    by_novelty = {n: {"new": _Score(), "repeat": _Score()} for n in names}
    # Time in Pulse's own steps (recommend, learn), by the wall clock and as CPU time of
    # this thread: on a busy machine the second says what one core does.
    pulse_seconds = pulse_cpu = 0.0
    clock, cpu = time.perf_counter, time.thread_time
    duplicates = 0
    started = time.perf_counter()
    for n, (_, _, _, ev) in enumerate(events):
        user = ev.user_id
        if ev.type == "forget":  # as the flow does: the user starts afresh (the models keep what they learned)
            users.pop(user, None)
            recs_states.pop(user, None)
            river.forget(user, ev.src, ev.seq)
            continue
        st = users.get(user)
        if st is None:
            st = users[user] = UserState(user_config)
        item = ev.item_id
        if item is not None and not (ev.event_id is not None and ev.event_id in st.event_ids):
            prior = sum(st.profile.counts.values())
            rec_state = recs_states.get(user)
            if rec_state is None:
                rec_state = recs_states[user] = recommender.new_state()
            seen = rec_state.seen.ids
            repeat = item in seen
            t0, c0 = clock(), cpu()
            _, recs = recommender.recommend(rec_state, user, ev.ts, view, blend_repeat if repeat else blend)
            lists = {"pulse": [r.item_id for r in recs]}
            pulse_seconds += clock() - t0
            pulse_cpu += cpu() - c0
            exclude = rec_state.purchased.ids if repeat else seen
            lists.update(baselines.recommend(k, exclude))
            for name, recs in lists.items():
                overall[name].add(item, recs)
                by_prior[name][_bucket(prior)].add(item, recs)
                by_novelty[name]["repeat" if repeat else "new"].add(item, recs)
            baselines.learn_one(item)
        t0, c0 = clock(), cpu()
        learned = st.learn_one(ev)
        if learned.duplicate:
            duplicates += 1
        else:
            rec_state = recs_states.get(user)
            if rec_state is None:
                rec_state = recs_states[user] = recommender.new_state()
            affinities = tuple(st.profile_doc(ev.ts)["categories"].items())[:3] if st.profile_due(ev.ts) else None
            up = ModelUpdate.of(ev, learned.weight, summarize(learned.closed, engine_config.model_windows), affinities,
                                learned.bot)
            verdict = river.learn_one(up.user_id, up.src, up.seq, up.windows, up.bot, up.ts) if up.needs_verdict else None
            _, item_update = recommender.learn_update(rec_state, up, verdict, view)
            models.learn_one(item_update)
        pulse_seconds += clock() - t0
        pulse_cpu += cpu() - c0
        if on_progress is not None and n % 2000 == 0:
            on_progress(n, len(events))
    seconds = time.perf_counter() - started
    if on_progress is not None:
        on_progress(len(events), len(events))
    report = {
        "path": str(path),
        "format": fmt_name,
        "k": k,
        "events": len(events),
        "events_scored": overall["pulse"].n,
        "events_dlq": dead,
        "duplicates": duplicates,
    }
    for name in names:
        report[name] = {
            **overall[name].doc(),
            "by_prior_events": {b: s.doc() for b, s in by_prior[name].items()},
        }
        if by_novelty[name]["repeat"].n:
            report[name]["by_item"] = {b: s.doc() for b, s in by_novelty[name].items()}
    report["pulse_events_per_s"] = round(len(events) / pulse_seconds, 1) if pulse_seconds else None
    report["pulse_events_per_cpu_s"] = round(len(events) / pulse_cpu, 1) if pulse_cpu else None
    report["seconds"] = round(seconds, 3)
    return report
