"""Re-evaluate a saved run (``meigm eval RUN_DIR``) and optionally render one episode.

The run is rebuilt from its resolved ``config.yaml``, the checkpoint is restored into
the structure of a freshly initialised learner state (names and shapes checked, see
:mod:`meigm.experiments.checkpoint`), and the *same* greedy evaluation program as
training — ``jit(vmap(trainer.evaluate))`` over seeds — runs with the *same* keys,
derived by :func:`meigm.experiments.run.evaluation_keys` from the checkpoint's recorded
evaluation index.

Reproduction guarantee: with a checkpoint written by training and the run's
``test_episodes`` (the default), the test metrics equal those logged in
``metrics.jsonl`` at that checkpoint's env steps bit for bit, on the same machine and
jax/jaxlib version — same parameters, same keys, same compiled program. A different
``--episodes`` count, another backend (CPU vs GPU) or another XLA version may change
the last bits or, through argmax ties, whole episodes. ``eval.json`` records whether the
numbers reproduce the log (``reproduces_log``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from meigm import config as config_mod
from meigm.config import Config
from meigm.envs import Env
from meigm.errors import MeigmError
from meigm.experiments.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from meigm.learners import Learner
from meigm.program import Trainer, compiled, make_program, seed_keys
from meigm.types import LearnerState

if TYPE_CHECKING:
    from meigm.experiments.render import Renderer


@dataclass
class LoadedRun:
    """A run directory rebuilt for evaluation: config, program and restored state."""

    run_dir: Path
    cfg: Config
    env: Env
    learner: Learner
    trainer: Trainer
    state: LearnerState  # leaves [seeds, ...], numpy
    checkpoint: Path
    meta: dict[str, Any]


def load_config(run_dir: Path) -> Config:
    """The resolved config a run recorded; user errors for missing or broken files."""
    if not run_dir.is_dir():
        raise MeigmError(f"run directory not found: {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise MeigmError(f"{run_dir} is not a run directory (no config.yaml)")
    values = config_mod.load_yaml(path, what="run config")
    # Keys added after a run was recorded take the value it ran with, not today's default.
    for key, value in config_mod.RECORDED_BEFORE.items():
        values.setdefault(key, value)
    return config_mod.from_dict(values)


def resolve_checkpoint(run_dir: Path, checkpoint: str | Path | None) -> Path:
    """``--checkpoint`` as given, else relative to ``<run_dir>/checkpoints``, else the newest
    (shared by ``meigm eval`` and ``meigm export``)."""
    if checkpoint is None:
        return latest_checkpoint(run_dir)
    path = Path(checkpoint)
    if not path.exists() and (run_dir / "checkpoints" / path).exists():
        return run_dir / "checkpoints" / path
    if not path.is_file():
        raise MeigmError(f"checkpoint not found: {path}")
    return path


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None,
             episodes: int | None = None,
             warn: Callable[[str], None] | None = None) -> LoadedRun:
    """Rebuild a run's program and restore a checkpoint (default: the newest).

    ``episodes`` overrides ``test_episodes`` (and then the numbers no longer match the log).
    Without ``checkpoint``, an unreadable newest checkpoint (truncated, bit-flipped) is
    skipped with ``warn(message)`` and the one before it is used, as ``--resume`` does;
    a named ``checkpoint`` that cannot be read is an error.
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if episodes is not None:
        if episodes <= 0:
            raise MeigmError(f"--episodes must be positive, got {episodes}")
        cfg = dataclasses.replace(cfg, test_episodes=episodes)
    candidates = ([resolve_checkpoint(run_dir, checkpoint)] if checkpoint is not None
                  else list(reversed(list_checkpoints(run_dir))))
    if not candidates:
        latest_checkpoint(run_dir)  # raises the "no checkpoint" error
    program = make_program(cfg)  # the config is resolved already: resolving is a no-op
    cfg, env, learner, trainer = program.cfg, program.env, program.learner, program.trainer
    # Shapes only: the structure of a freshly initialised state without computing it.
    template = jax.eval_shape(jax.vmap(trainer.init), seed_keys(cfg)).learner
    for i, path in enumerate(candidates):
        try:
            state, meta = load_checkpoint(path, template)
            break
        except MeigmError as exc:
            if i + 1 == len(candidates):
                raise
            (warn or (lambda m: warnings.warn(m, stacklevel=2)))(
                f"skipping checkpoint {path}: {exc}; using {candidates[i + 1].name}")
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    if meta["seeds"] != seeds or meta["alg"] != cfg.alg or meta["env"] != cfg.env:
        raise MeigmError(
            f"checkpoint {path} belongs to another run ({meta['alg']} on {meta['env']}, seeds "
            f"{meta['seeds']}); this run is {cfg.alg} on {cfg.env}, seeds {seeds}"
        )
    return LoadedRun(run_dir, cfg, env, learner, trainer, state, path, meta)


def _logged(run_dir: Path, seeds: list[int], t_env: list[int]) -> list[dict[str, Any] | None]:
    """The ``metrics.jsonl`` record of each seed at its checkpoint's env steps, if any."""
    path = run_dir / "metrics.jsonl"
    found: dict[tuple[int, int], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                found[(int(rec["seed"]), int(rec["t_env"]))] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a torn last line of an interrupted run
    return [found.get((s, t)) for s, t in zip(seeds, t_env, strict=True)]


def evaluate_run(run: LoadedRun) -> dict[str, Any]:
    """Greedy test metrics of every seed; the dict written to ``eval.json``."""
    from meigm.experiments.run import evaluation_keys

    cfg = run.cfg
    index = int(run.meta["eval_index"])
    keys = evaluation_keys(seed_keys(cfg), index)  # [seeds, 2]
    _, evaluate = compiled(run.trainer)
    try:
        metrics = jax.device_get(evaluate(run.state.params, keys))  # each [seeds]
    finally:
        run.trainer.close()
    headline = [k for k in ("test/return", "test/won") if k in metrics]
    metrics = {k: metrics[k] for k in [*headline, *sorted(set(metrics) - set(headline))]}
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    t_env = [int(t) for t in run.meta["t_env"]]
    per_seed = [
        {"seed": s, "t_env": t, **{k: float(np.asarray(v)[i]) for k, v in metrics.items()}}
        for i, (s, t) in enumerate(zip(seeds, t_env, strict=True))
    ]
    logged = _logged(run.run_dir, seeds, t_env)
    reproduces: bool | None = None  # None: nothing logged to compare with, or other episodes
    same_episodes = run.meta["config"].get("test_episodes") == cfg.test_episodes
    if same_episodes and all(rec is not None for rec in logged):
        reproduces = all(
            rec[k] == row[k] for rec, row in zip(logged, per_seed, strict=True) for k in metrics
            if k in rec
        )
    return {
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "alg": cfg.alg,
        "env": cfg.env,
        "eval_index": index,
        "test_episodes": cfg.test_episodes,
        "per_seed": per_seed,
        "mean": {k: float(np.mean(np.asarray(v))) for k, v in metrics.items()},
        "reproduces_log": reproduces,
    }


def format_table(result: dict[str, Any]) -> str:
    """Per-seed rows of the test metrics and their mean, for the terminal."""
    keys = list(result["mean"])
    head = f"{'seed':>6}{'t_env':>10}" + "".join(f"{k:>16}" for k in keys)
    rows = [head]
    for rec in result["per_seed"]:
        rows.append(f"{rec['seed']:>6}{rec['t_env']:>10}" + "".join(f"{rec[k]:>16.4f}" for k in keys))
    rows.append(f"{'mean':>6}{'':>10}" + "".join(f"{result['mean'][k]:>16.4f}" for k in keys))
    return "\n".join(rows)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON via a temporary file and a rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only run directory, a full disk: one line naming the file
        raise MeigmError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def check_render(run: LoadedRun, out: str | Path, seed_index: int) -> Renderer:
    """Validate ``--render``/``--seed-index`` up front; returns the family's renderer."""
    from meigm.experiments.render import check_gif_path, renderer_for

    renderer = renderer_for(run.cfg.env)
    check_gif_path(out)
    if not 0 <= seed_index < run.cfg.seeds:
        raise MeigmError(f"--seed-index must be in [0, {run.cfg.seeds - 1}] for this run, got {seed_index}")
    return renderer


def render_run(run: LoadedRun, out: str | Path, seed_index: int = 0, fps: float = 5.0) -> dict[str, Any]:
    """Animate the first greedy evaluation episode of one seed to a GIF.

    The roll-out is the evaluation's (same key, same ``test_episodes`` parallel
    episodes) with environment states kept, so the animated episode is the first of
    those the evaluation averaged (up to floating-point differences between the vmapped
    and the single-seed program, which can only matter at exact argmax ties).
    """
    from meigm.experiments.render import write_gif
    from meigm.experiments.run import evaluation_keys
    from meigm.rollout import greedy_act, rollout

    cfg, env, learner = run.cfg, run.env, run.learner
    renderer = check_render(run, out, seed_index)
    key = evaluation_keys(seed_keys(cfg), int(run.meta["eval_index"]))[seed_index]  # [2]
    params = jax.tree.map(lambda x: x[seed_index], run.state.params)

    @jax.jit
    def play(params: dict, key: jax.Array):
        episodes, stats = rollout(env, learner.agent.apply, params["agent"], greedy_act, params,
                                  learner.hidden_dim, key, cfg.test_episodes, keep_states=True)
        first = jax.tree.map(lambda x: x[0], stats.env_states)  # leaves [T+1, ...]
        return first, episodes.reward[0], stats.lengths[0], stats.returns[0]

    states, rewards, length, ret = jax.device_get(play(params, key))
    frames = renderer(env, states, np.asarray(rewards), int(length))
    path = write_gif(frames, out, fps=fps)
    return {"path": str(path), "seed": cfg.seed + seed_index, "frames": len(frames),
            "length": int(length), "return": float(ret)}
