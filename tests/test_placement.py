"""Where the single-key steps run: off the worker that reads a one-file log.

Bytewax runs a key on worker hash(key) mod workers and hands a source's partitions to
workers round-robin, so a one-file replay reads (and parses) on worker 0; the names of
the model step's and the River step's keys are chosen to land elsewhere (see
:data:`pulse.operators.steps.MODELS_KEY`). These tests run them through Bytewax itself.
"""

from __future__ import annotations

import threading

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import cluster_main

from pulse.flows.sources import RecordedLogSource
from pulse.operators.formats import Format
from pulse.operators.steps import MODELS_KEY, RIVER_KEY


def _workers_of(tmp_path, workers: int) -> dict[str, int]:
    log = tmp_path / "one.jsonl"
    log.write_bytes(b'{"user_id": "u1", "type": "view", "ts": 1, "item_id": "a"}\n')
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def note(name: str):
        def inspector(_step, _item, _epoch, worker: int) -> None:
            with lock:
                seen[name] = worker
        return inspector

    flow = Dataflow("placement")
    raw = op.input("in", flow, RecordedLogSource(log, Format.native()))
    op.inspect_debug("reader", raw, note("reader"))
    for name, key in (("models", MODELS_KEY), ("river", RIVER_KEY)):
        keyed = op.key_on(f"{name}_key", raw, lambda _x, key=key: key)
        ran = op.stateful_map(f"{name}_step", keyed, lambda state, x: (state, x))
        op.inspect_debug(f"{name}_at", ran, note(name))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return seen


def test_a_one_file_log_is_read_on_worker_0(tmp_path):
    assert _workers_of(tmp_path, 3)["reader"] == 0


@pytest.mark.parametrize("workers", [2, 3, 4, 8])
def test_the_model_step_runs_off_the_reading_worker(tmp_path, workers):
    seen = _workers_of(tmp_path, workers)
    assert seen["models"] != seen["reader"]


@pytest.mark.parametrize("workers", [3, 4, 8])
def test_the_river_step_runs_off_the_model_steps_worker(tmp_path, workers):
    seen = _workers_of(tmp_path, workers)
    assert seen["river"] != seen["models"]
