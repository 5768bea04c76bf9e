"""The persistent compilation cache (issue 43 item 5): where it lives, how it is switched
off, and that a second identical run compiles nothing new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import meigm


def test_the_cache_directory_follows_the_users_settings(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert meigm.compilation_cache(env) == str(tmp_path / ".cache" / "meigm" / "jax")
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / ".cache" / "meigm" / "jax")
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert meigm.compilation_cache(env) == str(tmp_path / "xdg" / "meigm" / "jax")
    env = {"MEIGM_COMPILATION_CACHE": str(tmp_path / "mine"), "XDG_CACHE_HOME": "/elsewhere"}
    assert meigm.compilation_cache(env) == str(tmp_path / "mine")
    for off in ("off", "OFF", "0"):
        env = {"MEIGM_COMPILATION_CACHE": off}
        assert meigm.compilation_cache(env) is None and "JAX_COMPILATION_CACHE_DIR" not in env
    env = {"JAX_COMPILATION_CACHE_DIR": "/theirs", "MEIGM_COMPILATION_CACHE": str(tmp_path)}
    assert meigm.compilation_cache(env) == "/theirs"  # a user's own JAX setting wins


def _train(out: Path, cache: Path, *extra: str) -> dict:
    env = {**os.environ, "MEIGM_COMPILATION_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    subprocess.run([sys.executable, "-m", "meigm.experiments.cli", "train", "--alg", "qmix",
                    "--seeds", "2", "t_max=200", "test_interval=100", "hidden_dim=8",
                    "batch_size=4", "buffer_size=8", "test_episodes=2", *extra, "--out", str(out),
                    "--no-progress"], env=env, check=True, capture_output=True, timeout=600)
    return json.loads((out / "results.json").read_text())


def test_a_second_identical_run_and_one_with_other_lane_fields_compile_nothing_new(tmp_path):
    """A second identical run hits the cache for every program, and a hit is the program a
    miss builds (same numbers). Lane fields (meigm.lanes) are data of the program: a run
    with another learning rate, ε schedule and discount also reuses every compiled
    program, and trains differently."""
    cache = tmp_path / "cache"
    first = _train(tmp_path / "a", cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first run wrote no compiled program"
    second = _train(tmp_path / "b", cache)
    assert sorted(p.name for p in cache.iterdir()) == entries  # every program was a hit
    assert second["final"] == first["final"]
    _train(tmp_path / "c", cache, "lr=0.003", "epsilon_anneal_steps=50", "gamma=0.9")
    assert sorted(p.name for p in cache.iterdir()) == entries
    rows = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("a", "c")]
    assert [r.get("train/loss_q") for r in rows[0]] != [r.get("train/loss_q") for r in rows[1]]


def test_the_chunk_and_the_evaluation_compile_once_ahead_of_the_first_step(caplog):
    """``compile_seconds`` is compile alone: the training chunk and the evaluation are
    compiled before the first chunk runs (it used to time the first call, compile plus an
    interval of training), and their jitted calls reuse those executables: one compile each
    for a run of three evaluation points. ``startup_seconds`` (start to the first training
    step) holds the compile and sits inside the run's wall time."""
    import logging

    import jax
    values = {"alg": "qmix", "env": "matrix:table1", "seeds": 2, "t_max": 900,
              "test_interval": 300, "batch_size": 4, "buffer_size": 8, "hidden_dim": 8,
              "mixing_embed": 4, "hypernet_embed": 8, "length_buckets": 1}
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        res = meigm.train(values, progress=False)
    compiles = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling jit(")]
    assert sum(m.startswith("Compiling jit(run)") for m in compiles) == 1, compiles
    assert sum(m.startswith("Compiling jit(evaluate)") for m in compiles) == 1, compiles
    assert 0 < res["compile_seconds"] <= res["startup_seconds"] <= res["wall_seconds"]
