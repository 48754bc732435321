"""The view of the models a process without the model step blends from (RemoteView):
filled from the lists the model step writes to Redis."""

from __future__ import annotations

import threading

import redis

from pulse.state.config import EngineConfig
from pulse.state.documents import item_list_writes
from pulse.state.view import RemoteView


class _CountingLock:
    """The view's lock, noting how many lists the pool held at each release."""

    def __init__(self, view: RemoteView) -> None:
        self.lock = threading.Lock()
        self.view = view
        self.filled: list[int] = []

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *_exc) -> None:
        self.filled.append(int((self.view.pool.length > 0).sum()))
        self.lock.release()


def _write_lists(url: str, keys, items: int) -> list[str]:
    client = redis.Redis.from_url(url)
    names = [f"i{n}" for n in range(items)]
    for n, name in enumerate(names):
        neighbours = [(f"i{(n + d) % items}", 1.0 / d) for d in range(1, 41)]
        nbrs = item_list_writes(keys, name, neighbours, {j: ("shoes",) for j in names}, 20)[1]
        client.set(nbrs.key, nbrs.value)
    return names


def test_a_refresh_reads_the_lists_blends_asked_for(redis_url):
    config = EngineConfig()
    names = _write_lists(redis_url, config.keys, 3)
    view = RemoteView(redis_url, config.keys, config.blend)
    view.close()
    view.parts(("i0",), (), None, False, 0)
    view.refresh()
    i0 = view.index.numbers["i0"]
    nums, scores = view.pool.get(i0)
    assert [view.ids[j] for j in nums.tolist()][:2] == [names[1], names[2]]
    assert scores.tolist()[:2] == [1.0, 0.5]


def test_a_large_refresh_holds_the_lock_a_few_lists_at_a_time(redis_url):
    config = EngineConfig()
    names = _write_lists(redis_url, config.keys, 300)
    view = RemoteView(redis_url, config.keys, config.blend)
    view.close()
    view.parts(tuple(names[:8]), (), None, False, 0)
    for start in range(8, 300, 8):
        view.parts(tuple(names[start:start + 8]), (), None, False, 0)
    view.lock = counting = _CountingLock(view)
    view.refresh()
    assert counting.filled[-1] == 300  # every list asked for is in
    steps = [b - a for a, b in zip([0] + counting.filled, counting.filled)]
    assert max(steps) <= 64 < 300  # no hold installed them all at once


def test_a_list_read_again_is_installed_again_only_when_it_changed(redis_url):
    config = EngineConfig()
    names = _write_lists(redis_url, config.keys, 100)
    view = RemoteView(redis_url, config.keys, config.blend, max_age_s=0.0)  # every list asked for is read again
    view.close()

    def ask_all() -> None:
        for start in range(0, 100, 8):
            view.parts(tuple(names[start:start + 8]), (), None, False, 0)

    ask_all()
    view.refresh()
    ask_all()
    view.lock = counting = _CountingLock(view)
    view.refresh()
    assert len(counting.filled) == 2  # what blends asked for, and the heads: no list installed
    nbrs = item_list_writes(config.keys, "i7", [("i9", 2.5)], {"i7": ("shoes",), "i9": ("bags",)}, 20)[1]
    redis.Redis.from_url(redis_url).set(nbrs.key, nbrs.value)
    ask_all()
    counting.filled.clear()
    view.refresh()
    assert len(counting.filled) == 3
    nums, scores = view.pool.get(view.index.numbers["i7"])
    assert [view.ids[j] for j in nums.tolist()] == ["i9"] and scores.tolist() == [2.5]
    assert view.item_categories["i9"] == ("bags",)


def test_a_neighbours_new_categories_replace_the_ones_read_before(redis_url):
    config = EngineConfig()
    client = redis.Redis.from_url(redis_url)
    view = RemoteView(redis_url, config.keys, config.blend, max_age_s=0.0)
    view.close()
    for category in ("bags", "shoes", "shoes"):
        nbrs = item_list_writes(config.keys, "i1", [("i2", 1.0)], {"i1": ("home",), "i2": (category,)}, 20)[1]
        client.set(nbrs.key, nbrs.value)
        view.parts(("i1",), (), None, False, 0)
        view.refresh()
        assert view.item_categories["i2"] == (category,)
        i2 = view.index.numbers["i2"]
        assert view.categories.matrix[i2, 0] == view.categories.numbers[category]
