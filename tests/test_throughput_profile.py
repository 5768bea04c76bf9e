"""``benchmarks/throughput.py --profile``: XLA CPU thunk times read from a profiler trace."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

_spec = importlib.util.spec_from_file_location(
    "throughput", Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py")
throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(throughput)


def _thunk(tid: int, ts: float, dur: float, name: str) -> dict:
    return {"ph": "X", "tid": tid, "ts": ts, "dur": dur, "name": name,
            "args": {"hlo_module": "jit_f", "device_ordinal": "0"}}


def test_self_times_by_hand(tmp_path):
    """A while (0-100 us) holding two body thunks (10-30, 40-90) on thread 1, a fusion on
    thread 2 (20-60), and runtime markers without an HLO module, which do not count."""
    events = [
        _thunk(1, 0.0, 100.0, "while.5"),
        _thunk(1, 10.0, 20.0, "fusion.3"),
        _thunk(1, 40.0, 50.0, "dot.1"),
        _thunk(2, 20.0, 40.0, "fusion.12"),
        {"ph": "X", "tid": 1, "ts": 95.0, "dur": 1.0, "name": "end: while.5", "args": {}},
        {"ph": "X", "tid": 3, "ts": 0.0, "dur": 500.0, "name": "ThunkExecutor::Execute", "args": {}},
        {"ph": "M", "tid": 1, "name": "thread_name", "args": {"name": "python"}},
    ]
    d = tmp_path / "plugins" / "profile" / "run"
    d.mkdir(parents=True)
    trace = gzip.compress(json.dumps({"traceEvents": events}).encode())
    (d / "host.perfetto_trace.json.gz").write_bytes(trace)
    kinds, wall = throughput.thunk_seconds(tmp_path)
    assert kinds == pytest.approx({"while": 30e-6, "fusion": 60e-6, "dot": 50e-6})
    assert wall == pytest.approx(100e-6)  # the span of the thunks, not of the runtime's markers
    names, _ = throughput.thunk_seconds(tmp_path, by_name=True)
    assert names == pytest.approx({"while.5": 30e-6, "fusion.3": 20e-6, "fusion.12": 40e-6, "dot.1": 50e-6})
    assert list(throughput.heaviest(tmp_path, n=2, per=2)) == ["dot.1", "fusion.12"]
    assert throughput.heaviest(tmp_path, n=1, per=2) == pytest.approx({"dot.1": 25e-6})


def test_a_traced_program_accounts_for_its_kernels(tmp_path):
    @jax.jit
    def f(x, w):
        x, _ = jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=3)
        return x.sum()

    x, w = jnp.ones((128, 128)), jnp.full((128, 128), 0.01)
    f(x, w).block_until_ready()
    result, kinds, wall = throughput.profiled(tmp_path, f, x, w)
    assert float(result) == pytest.approx(float(f(x, w)))
    assert wall > 0 and all(v >= 0 for v in kinds.values())
    assert not any(k[-1].isdigit() and "." in k for k in kinds)  # suffixes dropped
    # Nested thunks are not counted twice, and none is lost: the program is one chain of
    # dependent kernels, so the threads are busy for about its whole span.
    assert 0.5 * wall <= sum(kinds.values()) <= 1.5 * wall
