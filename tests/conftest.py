"""Shared fixtures: tiny configs so end-to-end tests compile and run in seconds."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

# Tests run on the CPU even where a GPU build of jaxlib is installed.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs go to the session's cache (pytest_configure), never the user's; the
# CLI subprocesses tests start inherit it.
os.environ["MEIGM_COMPILATION_CACHE"] = os.environ.get("MEIGM_TEST_JAX_CACHE") or os.path.join(
    tempfile.gettempdir(), "meigm-test-jax-cache")


@pytest.fixture(scope="session", autouse=True)
def working_directory(tmp_path_factory):
    """Every test runs in an empty working directory of the session's, not wherever pytest
    was started (the repository), and must leave it empty: a test that writes relative to
    the working directory (a CLI default such as ``meigm table``'s ``.`` or ``runs/``)
    fails the session, naming the files. Issue 41: ``table.json``, ``table.md`` and
    ``table.tex`` were committed from a working directory they had been written to."""
    cwd = tmp_path_factory.mktemp("cwd")
    started_in = os.getcwd()
    os.chdir(cwd)
    try:
        yield cwd
    finally:
        os.chdir(started_in)
    left = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
    assert not left, (f"tests wrote {', '.join(left[:10])} into their working directory; "
                      "write under tmp_path (or a --out there) instead")


#: Small networks and batches: learning dynamics are the same code paths as the defaults.
TINY = [
    "hidden_dim=16", "mixing_embed=8", "hypernet_embed=16", "opt_hidden=8",
    "batch_size=16", "buffer_size=64", "test_episodes=8",
    # two buckets still take the bucketed path (lax.switch); each more compiles one more
    # copy of the update, which is most of a tiny test run's time
    "length_buckets=2",
    # and one group: SMAX's default 8 groups of 2 episodes would run 8 sequential tiny
    # unrolls per update, overhead-bound (the groups are tested in test_budgets.py)
    "length_groups=1",
]


#: A recurrent SMAX team, two seeds, trained just long enough to write a final checkpoint.
SMAX_RUN = [*TINY, "n_envs=2", "batch_size=4", "buffer_size=8", "test_episodes=2", "t_max=200",
            "test_interval=200"]


@pytest.fixture(scope="session")
def smax_run(tmp_path_factory) -> Path:
    """A finished ``me_qmix`` run on ``smax:3m`` (``SMAX_RUN``) for the tests that read run
    directories (export, the loss analysis); they must not change it."""
    from meigm import config
    from meigm.experiments.run import train_run

    out = tmp_path_factory.mktemp("runs") / "smax"
    cfg = config.build(None, SMAX_RUN, alg="me_qmix", env="smax:3m", seeds=2)
    train_run(cfg, out, progress=False, echo=lambda _: None)
    return out


def pytest_configure(config):
    """Share compiled programs between tests (and xdist workers) of one session: identical
    configs (e.g. a reproducibility re-run) then skip XLA compilation."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["MEIGM_COMPILATION_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def random_params(template, seed: int, scale: float):
    """Random parameters shaped like ``template`` (an ``eval_shape`` of ``init``), drawn
    with numpy so property tests compile each module once: kernels N(0, 1/fan_in),
    biases N(0, 0.5²), all times ``scale`` (large scales push hyper-network outputs far)."""
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)

    def leaf(path, x):
        if jax.tree_util.keystr(path).endswith("['kernel']"):
            w = rng.normal(size=x.shape) / np.sqrt(x.shape[0])
        else:
            w = rng.normal(size=x.shape) * 0.5
        return (w * scale).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, template)


def metrics_rows(run_dir: Path) -> list[dict]:
    """``metrics.jsonl``'s rows less the wall clock (``without_clock``): what two runs of one
    config and seed, or a run and its resumed copy, must share number for number."""
    from meigm.experiments.logging import without_clock

    text = (Path(run_dir) / "metrics.jsonl").read_text()
    return [without_clock(json.loads(line)) for line in text.splitlines()]


def error_line(capfd) -> str:
    """The one line a user error prints on stderr (no traceback, nothing else)."""
    err = capfd.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]
