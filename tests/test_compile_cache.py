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


def test_a_second_identical_run_compiles_nothing_new(tmp_path):
    cache = tmp_path / "cache"
    first = _train(tmp_path / "a", cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first run wrote no compiled program"
    second = _train(tmp_path / "b", cache)
    assert sorted(p.name for p in cache.iterdir()) == entries  # every program was a hit
    assert second["final"] == first["final"]  # and a hit is the program a miss builds


def test_a_run_with_other_hyper_parameters_compiles_nothing_new(tmp_path):
    """Lane fields (meigm.lanes) are data of the program: another learning rate, ε schedule
    and discount reuse every compiled program of the first run."""
    cache = tmp_path / "cache"
    first = _train(tmp_path / "a", cache)
    entries = sorted(p.name for p in cache.iterdir())
    second = _train(tmp_path / "b", cache, "lr=0.003", "epsilon_anneal_steps=50", "gamma=0.9")
    assert sorted(p.name for p in cache.iterdir()) == entries
    del first, second
    rows = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("a", "b")]
    assert [r.get("train/loss_q") for r in rows[0]] != [r.get("train/loss_q") for r in rows[1]]
