"""One training run on disk: compile, train all seeds together, evaluate, write the run directory.

Run directory layout::

    <run_dir>/
      config.yaml                   resolved config (every default filled in): enough to re-run
                                    it, and what ``meigm eval`` rebuilds the program from
      metrics.jsonl                 one JSON object per (evaluation point, seed): env steps,
                                    training metrics averaged since the previous point, greedy
                                    test metrics
      tb/seed_<n>/events.out.tfevents.*
                                    the same scalars for TensorBoard, one directory (= one
                                    TensorBoard run) per seed, step = that seed's env steps
      checkpoints/step_<t>.safetensors
                                    learner state of every seed (parameters, target parameters,
                                    optimiser state, α; leading axis = seed) at the first
                                    evaluation point at or after each multiple of
                                    ``checkpoint_interval``; ``t`` = the fewest env steps of
                                    any seed there (see :mod:`meigm.experiments.checkpoint`)
      checkpoints/final.safetensors the same at the end of training
      results.json                  final per-seed results, wall time and throughput, and for
                                    games small enough to enumerate the Table 1 view (learned
                                    ``Q_tot``, policies, greedy joint action, misalignment)
      eval.json                     written by ``meigm eval``: per-seed test metrics of a
                                    checkpoint re-evaluated
      wandb/                        only with ``wandb=true``

The directory is written incrementally (config first, metrics and checkpoints as they
come), and an existing run is never overwritten. Checkpoints are written to a temporary
file and renamed, so an interrupted run leaves only complete checkpoints.

Evaluation ``k`` (0-based, one per chunk of ``chunk_iters`` iterations) of seed ``i`` uses
:func:`evaluation_keys` — ``fold_in(fold_in(PRNGKey(seed + i), 0x7E57), k)`` — and every
checkpoint records its ``k``; ``meigm eval`` re-derives the same keys, so re-evaluating a
checkpoint with the run's ``test_episodes`` replays exactly the logged episodes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml
from tqdm import tqdm

from meigm.config import Config
from meigm.envs import make_env
from meigm.envs.host import HostEnv
from meigm.errors import MeigmError
from meigm.experiments.checkpoint import checkpoint_path, save_checkpoint
from meigm.experiments.diagnostics import action_names, first_step_view, summarise_views
from meigm.experiments.logging import MetricsLogger, headline_metric, require_wandb
from meigm.learners import make_learner
from meigm.train import compiled, init_seeds, make_train, seed_keys

#: Enumerate joint actions for the Table 1 view only up to this many.
MAX_VIEW_JOINTS = 4096


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    """``runs/<alg>_<family>-<scenario>_<UTC time>``; unique per second and config."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    env = cfg.env.replace(":", "-")
    return Path(root) / f"{cfg.alg}_{env}_{stamp}"


def prepare_run_dir(out: Path) -> Path:
    """Create ``out`` for a new run; refuse to touch one that already holds a run."""
    if out.exists() and not out.is_dir():
        raise MeigmError(f"run directory {out} exists and is not a directory")
    if (out / "config.yaml").exists():
        raise MeigmError(
            f"run directory {out} already holds a run; choose another --out (nothing was changed)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MeigmError(f"cannot create run directory {out}: {exc.strerror}") from None
    return out


def evaluation_keys(keys: jax.Array, index: int) -> jax.Array:
    """Keys of evaluation point ``index`` (0-based), one per seed: keys [seeds, 2] -> [seeds, 2].

    The one place the derivation lives: training and ``meigm eval`` both call it, so a
    checkpoint re-evaluated with its recorded index plays the very episodes that were
    logged at that point.
    """
    base = jax.vmap(lambda k: jax.random.fold_in(k, 0x7E57))(keys)
    return jax.vmap(lambda k: jax.random.fold_in(k, index))(base)


def _to_python(x: Any) -> Any:
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()


def train_run(
    cfg: Config,
    out: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``cfg.seeds`` seeds of one configuration in one compiled program.

    Returns the results dict that is also written to ``results.json``; with
    ``out=None`` nothing is written (used by tests and benchmarks).
    """
    if cfg.wandb:
        require_wandb()  # before the run directory exists: a failed start leaves nothing
    env = make_env(cfg.env, cfg.env_args)
    cfg = cfg.resolve(env.spec.default_t_max, dict(env.spec.config_defaults))
    spec = env.spec
    learner = make_learner(cfg, spec)
    trainer = make_train(cfg, env, learner)

    run_dir = prepare_run_dir(Path(out)) if out is not None else None
    if run_dir is not None:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    run, evaluate = compiled(trainer)
    keys = seed_keys(cfg)  # [seeds, 2]
    interval = cfg.checkpoint_interval or 0
    next_checkpoint = interval if interval > 0 else None

    t_start = time.perf_counter()
    state = init_seeds(trainer.init, keys)
    # Progress counts the slowest seed's env steps, so its rate is env steps/s per seed
    # (x seeds for the whole program) and its ETA is the time to t_max.
    bar = tqdm(total=cfg.t_max, unit="step", unit_scale=True, disable=not progress,
               desc=f"{cfg.alg} {cfg.env} x{cfg.seeds}", dynamic_ncols=True)
    history: list[dict[str, Any]] = []
    compile_s = None
    evaluation = 0
    with MetricsLogger(cfg, run_dir) as logger:
        try:
            while True:
                t0 = time.perf_counter()
                state, train_metrics = run(state)
                jax.block_until_ready(train_metrics)
                if compile_s is None:
                    compile_s = time.perf_counter() - t0
                t_env = np.asarray(state.t_env)  # [seeds]
                test_metrics = jax.device_get(
                    evaluate(state.learner.params, evaluation_keys(keys, evaluation)))
                row = {k: np.asarray(v) for k, v in {**train_metrics, **test_metrics}.items()}
                records = [{"seed": cfg.seed + s, **{k: _to_python(v[s]) for k, v in row.items()}}
                           for s in range(cfg.seeds)]
                history.extend(records)
                logger.log(records)
                done_steps = int(t_env.min())
                finished = done_steps >= cfg.t_max
                if run_dir is not None and next_checkpoint is not None and not finished \
                        and done_steps >= next_checkpoint:
                    save_checkpoint(checkpoint_path(run_dir, done_steps), state.learner, cfg,
                                    t_env, evaluation)
                    next_checkpoint = (done_steps // interval + 1) * interval
                if run_dir is not None and finished:
                    save_checkpoint(checkpoint_path(run_dir, None), state.learner, cfg, t_env, evaluation)
                evaluation += 1
                bar.update(min(done_steps, cfg.t_max) - bar.n)
                label, value = headline_metric(test_metrics)
                bar.set_postfix({label: value})
                if finished:
                    break
        finally:
            bar.close()
            trainer.close()
    wall = time.perf_counter() - t_start

    results: dict[str, Any] = {
        "alg": cfg.alg,
        "env": cfg.env,
        "seeds": [cfg.seed + s for s in range(cfg.seeds)],
        "t_env": [int(x) for x in np.asarray(state.t_env)],
        "wall_seconds": round(wall, 3),
        "compile_seconds": round(compile_s or 0.0, 3),
        "env_steps_per_second": round(float(np.sum(np.asarray(state.t_env))) / wall, 1),
        "final": [
            {k: v for k, v in rec.items() if k.startswith("test/") or k == "seed"}
            for rec in history[-cfg.seeds:]
        ],
    }
    if not isinstance(env, HostEnv) and math.prod([spec.n_actions] * spec.n_agents) <= MAX_VIEW_JOINTS:
        view_fn = jax.jit(jax.vmap(lambda p: first_step_view(learner, env, p, jax.random.PRNGKey(0))))
        views = jax.device_get(view_fn(state.learner.params))
        results["first_step"] = summarise_views(views, env, action_names(spec.n_actions))
        results["first_step"]["has_policy"] = bool(learner.has_policy)

    if run_dir is not None:
        (run_dir / "results.json").write_text(json.dumps(results, indent=1))
        results["run_dir"] = str(run_dir)
    results["config"] = cfg
    results["history"] = history
    results["final_params"] = state.learner.params  # [seeds, ...] leaves
    return results


def final_metric(results: dict[str, Any], key: str = "test/return") -> np.ndarray:
    """Per-seed final value of a test metric."""
    return np.array([rec[key] for rec in results["final"]], dtype=np.float64)

