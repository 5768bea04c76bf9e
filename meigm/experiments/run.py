"""One training run on disk: compile, train all seeds together, evaluate, write the run directory.

A run directory holds

* ``config.yaml`` — the resolved config (every default filled in), enough to re-run it;
* ``metrics.jsonl`` — one JSON object per (evaluation point, seed): env steps, training
  metrics averaged since the previous point, greedy test metrics;
* ``results.json`` — final per-seed results, the run's wall time and throughput, and for
  games small enough to enumerate the Table 1 view (learned ``Q_tot``, policies, greedy
  joint action, misalignment);
* ``checkpoints/final.safetensors`` — online and target parameters of every seed
  (leading axis = seed), in a format that loads without executing code.

The directory is written incrementally (config first, metrics as they come), and an
existing run is never overwritten.
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
from safetensors.numpy import save_file
from tqdm import tqdm

from meigm.config import Config
from meigm.envs import make_env
from meigm.errors import MeigmError
from meigm.experiments.diagnostics import action_names, first_step_view, summarise_views
from meigm.learners import make_learner
from meigm.train import init_seeds, make_train, seed_keys

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


def flatten_params(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    """Pytree of arrays -> ``{"prefix/a/b": array}`` (safetensors wants a flat dict)."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        flat[f"{prefix}/{name}"] = np.ascontiguousarray(np.asarray(leaf))
    return flat


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
    env = make_env(cfg.env, cfg.env_args)
    cfg = cfg.resolve(env.spec.default_t_max, dict(env.spec.config_defaults))
    spec = env.spec
    learner = make_learner(cfg, spec)
    trainer = make_train(cfg, env, learner)

    run_dir = prepare_run_dir(Path(out)) if out is not None else None
    if run_dir is not None:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    run = jax.jit(jax.vmap(trainer.run))
    evaluate = jax.jit(jax.vmap(trainer.evaluate))
    keys = seed_keys(cfg)  # [seeds, 2]
    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0x7E57))(keys)

    t_start = time.perf_counter()
    state = init_seeds(trainer.init, keys)
    metrics_file = (run_dir / "metrics.jsonl").open("a") if run_dir is not None else None
    bar = tqdm(total=cfg.t_max, unit="step", unit_scale=True, disable=not progress,
               desc=f"{cfg.alg} {cfg.env} x{cfg.seeds}", dynamic_ncols=True)
    history: list[dict[str, Any]] = []
    compile_s = None
    evaluation = 0
    try:
        while True:
            t0 = time.perf_counter()
            state, train_metrics = run(state)
            jax.block_until_ready(train_metrics)
            if compile_s is None:
                compile_s = time.perf_counter() - t0
            t_env = np.asarray(state.t_env)  # [seeds]
            ek = jax.vmap(lambda k, i=evaluation: jax.random.fold_in(k, i))(eval_keys)
            test_metrics = jax.device_get(evaluate(state.learner.params, ek))
            evaluation += 1
            row = {k: np.asarray(v) for k, v in {**train_metrics, **test_metrics}.items()}
            for s in range(cfg.seeds):
                record = {"seed": cfg.seed + s, **{k: _to_python(v[s]) for k, v in row.items()}}
                history.append(record)
                if metrics_file is not None:
                    metrics_file.write(json.dumps(record) + "\n")
            if metrics_file is not None:
                metrics_file.flush()
            done_steps = int(t_env.min())
            bar.update(min(done_steps, cfg.t_max) - bar.n)
            bar.set_postfix({"test/return": f"{float(np.mean(row['test/return'])):.2f}"})
            if done_steps >= cfg.t_max:
                break
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    wall = time.perf_counter() - t_start

    params = jax.device_get(state.learner.params)
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
    if math.prod([spec.n_actions] * spec.n_agents) <= MAX_VIEW_JOINTS:
        view_fn = jax.jit(jax.vmap(lambda p: first_step_view(learner, env, p, jax.random.PRNGKey(0))))
        views = jax.device_get(view_fn(state.learner.params))
        results["first_step"] = summarise_views(views, env, action_names(spec.n_actions))
        results["first_step"]["has_policy"] = bool(learner.has_policy)

    if run_dir is not None:
        ckpt = run_dir / "checkpoints"
        ckpt.mkdir(exist_ok=True)
        tensors = {**flatten_params(params, "params"),
                   **flatten_params(jax.device_get(state.learner.target_params), "target_params")}
        save_file(tensors, str(ckpt / "final.safetensors"),
                  metadata={"alg": cfg.alg, "env": cfg.env, "seeds": str(cfg.seeds)})
        (run_dir / "results.json").write_text(json.dumps(results, indent=1))
        results["run_dir"] = str(run_dir)
    results["config"] = cfg
    results["history"] = history
    results["final_params"] = state.learner.params  # [seeds, ...] leaves
    return results


def final_metric(results: dict[str, Any], key: str = "test/return") -> np.ndarray:
    """Per-seed final value of a test metric."""
    return np.array([rec[key] for rec in results["final"]], dtype=np.float64)

