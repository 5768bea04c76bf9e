"""``benchmarks/throughput.py --memory``: XLA's account of a program, read without running."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conftest import TINY

_spec = importlib.util.spec_from_file_location(
    "throughput", Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py")
throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(throughput)


def test_the_working_set_follows_the_batch_and_the_chunk_holds_the_whole_state():
    base = [*TINY, "buffer_size=64", "env_args.steps=12", "length_buckets=1"]
    small, big = (throughput.compiled_account("me_qmix", "matrix:table1", [*base, f"batch_size={b}"])
                  for b in (8, 64))
    # The update's arguments are the learner state and the batch: 8x the batch, more of both.
    assert 0 < small["update_args_gb"] < big["update_args_gb"]
    assert 0 < small["update_temp_gb"] < big["update_temp_gb"]
    # The chunk takes the whole training state, whose buffer (64 episodes) does not change
    # with the batch, and which holds more than one learner state and batch of 8.
    assert small["chunk_args_gb"] == big["chunk_args_gb"] > small["update_args_gb"]


def test_the_chunk_costs_what_its_update_costs_when_the_loop_adds_no_work():
    """QMIX on the matrix game: the chunk's loop body is one roll-out step and one update,
    and the update dominates, so XLA's flop count of the chunk is the update's (a loop
    body counts once); a batch 8x larger costs more."""
    base = [*TINY, "buffer_size=64", "env_args.steps=12", "length_buckets=1"]
    small, big = (throughput.compiled_account("qmix", "matrix:table1", [*base, f"batch_size={b}"])
                  for b in (8, 64))
    assert 0 < small["update_gflop"] < big["update_gflop"]
    assert 0 < small["update_gb_accessed"] < big["update_gb_accessed"]
    for m in (small, big):
        assert m["chunk_gflop"] >= m["update_gflop"] * 0.99
