"""The trimming bound report (benchmarks/trim_bound.py) on hand-made buffers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import meigm
from meigm.errors import MeigmError
from meigm.experiments.checkpoint import FORMAT, read_tensors, tensor_digest

_spec = importlib.util.spec_from_file_location(
    "trim_bound", Path(__file__).resolve().parent.parent / "benchmarks" / "trim_bound.py")
trim_bound = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trim_bound)


def _checkpoint(path: Path, lengths: list[list[int]], capacity: int = 6, limit: int = 100) -> Path:
    """A step checkpoint whose buffer holds, per seed, episodes of the given lengths."""
    mask = np.zeros((len(lengths), capacity, limit), dtype=bool)
    for s, seed_lengths in enumerate(lengths):
        for c, n in enumerate(seed_lengths):
            mask[s, c, :n] = True
    tensors = {trim_bound.MASK: mask, trim_bound.SIZE: np.array([len(x) for x in lengths], np.int32)}
    meta = {"format": FORMAT, "meigm_version": meigm.__version__, "alg": "qmix", "env": "smax:x",
            "seeds": json.dumps(list(range(len(lengths)))), "t_env": json.dumps([1000] * len(lengths)),
            "eval_index": "1", "config": "{}",
            "sha256": json.dumps({k: tensor_digest(v) for k, v in tensors.items()})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def test_fractions_by_hand():
    # One batch, sorted: [10, 10, 100, 100] of a 100-step limit.
    batches = np.array([[10, 10, 100, 100]])
    assert trim_bound.unroll_fraction(batches, 100, 4) == 1.0  # the longest is 100
    # Two groups: [10, 10] -> bucket 25, [100, 100] -> 100: (25 + 100) / 200.
    assert trim_bound.unroll_fraction(batches, 100, 4, groups=2) == pytest.approx(0.625)
    # Four groups, 8 buckets (13, 25, 38, 50, 63, 75, 88, 100): 13, 13, 100, 100.
    assert trim_bound.unroll_fraction(batches, 100, 8, groups=4) == pytest.approx(226 / 400)
    # A length on a bucket's edge stays in that bucket.
    assert trim_bound.unroll_fraction(np.array([[25, 50]]), 100, 4) == 0.5
    with pytest.raises(MeigmError, match="equal groups"):
        trim_bound.unroll_fraction(batches, 100, 4, groups=3)


def test_report_reads_each_seeds_buffer(tmp_path):
    run = tmp_path / "run"
    _checkpoint(run / "checkpoints" / "step_1000.safetensors", [[10, 10, 100, 100], [30, 30, 30, 30, 30]])
    (run / "checkpoints" / "final.safetensors").write_bytes(b"")  # newest, but holds no buffer
    # The batch is the whole of seed 0's buffer: sampled without replacement, every draw
    # is the same sorted batch.
    result = trim_bound.measure(trim_bound.checkpoint_of(run), batch_size=4, draws=50, seed=0)
    s0, s1 = result["seeds"]
    assert result["episode_limit"] == 100
    assert s0["episodes"] == 4 and s0["mean_length"] == 55.0
    assert s0["timeouts"] == 0.5 and s0["batch_holds_timeout"] == 1.0
    assert s0["longest, 4 buckets"] == 1.0
    assert s0["2 sorted groups, 8 buckets"] == pytest.approx((13 + 100) / 200)
    assert s0["exact per episode"] == pytest.approx(0.55)
    # Seed 1: every episode is 30 steps, so any 4 of its 5 hold 30 -> bucket 50 of 4, 38 of 8.
    assert s1["longest, 1 buckets"] == 1.0
    assert s1["longest, 4 buckets"] == 0.5
    assert s1["longest, 8 buckets"] == pytest.approx(0.38)
    assert s1["exact per episode"] == pytest.approx(0.3)


def test_bad_input_is_one_line(tmp_path, capsys):
    path = _checkpoint(tmp_path / "c.safetensors", [[10, 20]])
    assert trim_bound.main([str(path), "--batch-size", "3"]) == 2
    assert "more than the 2 episodes stored" in capsys.readouterr().err
    assert trim_bound.main([str(tmp_path / "nothing")]) == 2
    assert "no interval checkpoint" in capsys.readouterr().err


def test_read_tensors_checks_names_and_digests(tmp_path):
    path = _checkpoint(tmp_path / "c.safetensors", [[10, 20]])
    assert read_tensors(path, [trim_bound.SIZE])[trim_bound.SIZE].tolist() == [2]
    with pytest.raises(MeigmError, match="no tensor 'train/buffer/data/obs'"):
        read_tensors(path, ["train/buffer/data/obs"])
    # Flip the stored size: the file still parses, its checksum no longer holds.
    tensors = {trim_bound.SIZE: np.array([3], np.int32)}
    digest = tensor_digest(np.array([2], np.int32))
    meta = {"format": FORMAT, "meigm_version": meigm.__version__, "seeds": "[0]", "t_env": "[1]",
            "eval_index": "1", "config": "{}", "sha256": json.dumps({trim_bound.SIZE: digest})}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(MeigmError, match="corrupt"):
        read_tensors(path, [trim_bound.SIZE])
