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

Evaluation ``k`` (0-based) of seed ``i`` is at the first iteration at or after
``(k + 1) · test_interval`` of that seed's own env steps (the last at ``t_max``; see
:mod:`meigm.train`), and uses
:func:`evaluation_keys` — ``fold_in(fold_in(PRNGKey(seed + i), 0x7E57), k)`` — and every
checkpoint records its ``k``; ``meigm eval`` re-derives the same keys, so re-evaluating a
checkpoint with the run's ``test_episodes`` replays exactly the logged episodes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
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
from meigm.experiments.checkpoint import (
    CheckpointWriteError,
    checkpoint_path,
    list_checkpoints,
    newest_resumable,
    prune_checkpoints,
    save_checkpoint,
)
from meigm.experiments.diagnostics import action_names, first_step_view, summarise_views
from meigm.experiments.logging import MetricsLogger, headline_metric, require_wandb
from meigm.learners import make_learner
from meigm.rollout import buffer_bytes
from meigm.train import compiled, eval_target, init_seeds, make_train, seed_keys, select_seeds

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


def memory_check(cfg: Config, spec: Any, available: int | None = None) -> None:
    """Refuse, before anything is allocated, a run whose replay buffers do not fit.

    The buffers are ``seeds × buffer_size`` padded episodes, the one large allocation of
    a run; they must fit in 80% of the memory available now (host RAM on the CPU, the
    device's limit on an accelerator) next to the networks and the compiled program.
    """
    need = buffer_bytes(spec, cfg.buffer_size) * cfg.seeds
    if available is None:
        available = available_memory()
    if available is None or need <= 0.8 * available:
        return
    per_episode = need / (cfg.seeds * cfg.buffer_size)
    fit_size = int(0.8 * available / (cfg.seeds * per_episode))
    fit_seeds = int(0.8 * available / (cfg.buffer_size * per_episode))
    hint = f"buffer_size={fit_size}" if fit_size >= cfg.batch_size else "a smaller scenario"
    raise MeigmError(
        f"the replay buffers need {need / 2**30:.1f} GiB ({cfg.seeds} seeds x {cfg.buffer_size} "
        f"episodes x {per_episode / 2**20:.2f} MiB) but only {available / 2**30:.1f} GiB of memory "
        f"is available; use {hint}" + (f" or seeds={fit_seeds}" if fit_seeds >= 1 else "")
        + " (nothing was allocated)")


def available_memory() -> int | None:
    """Bytes a new allocation can use: the accelerator's free memory, else the host's
    ``MemAvailable`` (Linux); None where neither can be read."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _first_nonfinite(train_metrics: dict[str, np.ndarray], finite_params: np.ndarray,
                     seed_index: int) -> str | None:
    """Name of the first non-finite quantity of one seed after a chunk, or None:
    training losses, then Q-values and targets, then any other logged number, then the
    parameters themselves."""
    keys = sorted(train_metrics, key=lambda k: (not k.startswith("train/loss"),
                                               "q" not in k and "target" not in k, k))
    for k in keys:
        v = np.asarray(train_metrics[k])[seed_index]
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v):
            return k
    if not bool(np.asarray(finite_params)[seed_index]):
        return "parameters"
    return None


def _truncate_metrics(path: Path, keep_points: int, seeds: int) -> None:
    """Keep the first ``keep_points`` evaluation points of ``metrics.jsonl`` (what a
    checkpoint covers), atomically; drops a torn last line of a killed run too."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = []
    for line in lines[: keep_points * seeds]:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            break
        kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(f"{ln}\n" for ln in kept))
    os.replace(tmp, path)


def train_run(
    cfg: Config,
    out: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``cfg.seeds`` seeds of one configuration in one compiled program.

    Returns the results dict that is also written to ``results.json``; with
    ``out=None`` nothing is written (used by tests and benchmarks). With ``resume``,
    ``out`` is an existing run directory (its ``config.yaml`` is the config) and training
    continues from its newest complete interval checkpoint — exactly: the metrics after
    the resume point equal those of an uninterrupted run on the same machine.

    Divergence: after every chunk each seed's losses, Q-values and parameters are
    checked; a non-finite one stops the run (``on_divergence=stop``) with a message
    naming the quantity, the env step and the seed, leaving the last good checkpoint, or
    (``on_divergence=mask``) freezes that seed at its last finite state, reports it and
    lets the other seeds finish.
    """
    if cfg.wandb:
        require_wandb()  # before the run directory exists: a failed start leaves nothing
    env = make_env(cfg.env, cfg.env_args)
    cfg = cfg.resolve(env.spec.default_t_max, dict(env.spec.config_defaults))
    spec = env.spec
    memory_check(cfg, spec)
    learner = make_learner(cfg, spec)
    trainer = make_train(cfg, env, learner)
    keys = seed_keys(cfg)  # [seeds, 2]
    interval = cfg.checkpoint_interval or 0
    next_checkpoint = interval if interval > 0 else None

    run_dir: Path | None = None
    restored = None
    if resume:
        run_dir = Path(out)
        if (run_dir / "results.json").is_file():
            raise MeigmError(f"{run_dir} has finished (results.json exists); nothing to resume")
        for stray in (run_dir / "checkpoints").glob(".*.tmp"):  # a killed writer's leftovers
            stray.unlink(missing_ok=True)
        template = jax.eval_shape(jax.vmap(trainer.init), keys)
        restored = newest_resumable(run_dir, template, warn=lambda m: echo(f"warning: {m}"))
    elif out is not None:
        run_dir = prepare_run_dir(Path(out))
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    evaluation = 0
    diverged: dict[int, str] = {}  # seed index -> what diverged, where (mask mode)
    t_start = time.perf_counter()
    if restored is not None:
        state, meta, path = restored
        state = jax.tree.map(jax.numpy.asarray, state)
        evaluation = int(meta["eval_index"]) + 1
        next_checkpoint = meta["run"].get("next_checkpoint", next_checkpoint)
        diverged = {int(k): v for k, v in meta["run"].get("diverged", {}).items()}
        _truncate_metrics(run_dir / "metrics.jsonl", evaluation, cfg.seeds)
        earlier = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()
                   if ln.strip()]
        echo(f"resuming {run_dir} from {path.name} (env steps {min(meta['t_env'])}, "
             f"evaluation {evaluation})")
    else:
        if resume:  # killed before its first checkpoint: start again from the beginning
            echo(f"no complete checkpoint in {run_dir}; starting it from the beginning")
            _truncate_metrics(run_dir / "metrics.jsonl", 0, cfg.seeds)
            shutil.rmtree(run_dir / "tb", ignore_errors=True)
        state = init_seeds(trainer.init, keys)
    run, evaluate = compiled(trainer)

    # Progress counts the slowest seed's env steps, so its rate is env steps/s per seed
    # (x seeds for the whole program) and its ETA is the time to t_max.
    bar = tqdm(total=cfg.t_max, unit="step", unit_scale=True, disable=not progress,
               desc=f"{cfg.alg} {cfg.env} x{cfg.seeds}", dynamic_ncols=True)
    history: list[dict[str, Any]] = earlier if restored is not None else []
    compile_s = None
    purge = int(np.asarray(state.t_env).min()) + 1 if restored is not None else None
    with MetricsLogger(cfg, run_dir, purge_step=purge) as logger:
        try:
            while True:
                t0 = time.perf_counter()
                previous = state
                state, train_metrics = run(state, eval_target(cfg, evaluation))
                jax.block_until_ready(train_metrics)
                if compile_s is None:
                    compile_s = time.perf_counter() - t0
                train_metrics = jax.device_get(train_metrics)
                finite_params = train_metrics.pop("finite_params")
                t_env = np.asarray(state.t_env)  # [seeds]
                for i in range(cfg.seeds):
                    if i in diverged:
                        continue
                    what = _first_nonfinite(train_metrics, finite_params, i)
                    if what is None:
                        continue
                    where = f"{what} at env step {int(t_env[i])} of seed {cfg.seed + i}"
                    if cfg.on_divergence == "stop":
                        last = list_checkpoints(run_dir) if run_dir is not None else []
                        kept = (f"the last good checkpoint is {last[-1]}" if last
                                else "no checkpoint was written")
                        raise MeigmError(f"training diverged: non-finite {where}; stopped, {kept}")
                    diverged[i] = where
                    echo(f"warning: non-finite {where}; that seed is frozen at its last finite "
                         "state, the others go on (on_divergence=mask)")
                if diverged:  # frozen seeds keep their last finite state
                    frozen = np.zeros(cfg.seeds, bool)
                    frozen[list(diverged)] = True
                    state = select_seeds(jax.numpy.asarray(~frozen), state, previous)
                    t_env = np.asarray(state.t_env)
                test_metrics = jax.device_get(
                    evaluate(state.learner.params, evaluation_keys(keys, evaluation)))
                row = {k: np.asarray(v) for k, v in {**train_metrics, **test_metrics}.items()}
                records = [{"seed": cfg.seed + s, **{k: _to_python(v[s]) for k, v in row.items()}}
                           for s in range(cfg.seeds)]
                for s in diverged:  # a frozen seed: its counters are those it is frozen at
                    records[s].update(diverged=True, t_env=int(t_env[s]),
                                      episodes=int(np.asarray(state.episodes)[s]),
                                      updates=int(np.asarray(state.updates)[s]))
                history.extend(records)
                logger.log(records)
                healthy = [i for i in range(cfg.seeds) if i not in diverged]
                if not healthy:
                    raise MeigmError("training diverged in every seed: "
                                     + "; ".join(diverged.values()))
                done_steps = int(t_env[healthy].min())
                finished = done_steps >= cfg.t_max
                if run_dir is not None and next_checkpoint is not None and not finished \
                        and done_steps >= next_checkpoint:
                    upcoming = (done_steps // interval + 1) * interval
                    try:
                        save_checkpoint(checkpoint_path(run_dir, done_steps), state, cfg, t_env,
                                        evaluation, run_meta={"next_checkpoint": upcoming,
                                                              "diverged": diverged})
                        prune_checkpoints(run_dir, cfg.keep_checkpoints)
                    except CheckpointWriteError as exc:
                        echo(f"warning: {exc}; training goes on, the previous checkpoint stands")
                    next_checkpoint = upcoming
                if run_dir is not None and finished:
                    save_checkpoint(checkpoint_path(run_dir, None), state, cfg, t_env, evaluation,
                                    with_buffer=False, run_meta={"diverged": diverged})
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
            {k: v for k, v in rec.items() if k.startswith("test/") or k in ("seed", "t_env")}
            for rec in history[-cfg.seeds:]
        ],
        # each seed's env steps at every evaluation point: its own test_interval grid
        "eval_t_env": {str(cfg.seed + s): [rec["t_env"] for rec in history[s::cfg.seeds]]
                       for s in range(cfg.seeds)},
    }
    if restored is not None:
        results["resumed_from"] = str(restored[2])
    if diverged:
        results["diverged"] = {str(cfg.seed + i): w for i, w in sorted(diverged.items())}
    if not isinstance(env, HostEnv) and math.prod([spec.n_actions] * spec.n_agents) <= MAX_VIEW_JOINTS:
        view_fn = jax.jit(jax.vmap(lambda p: first_step_view(learner, env, p, jax.random.PRNGKey(0))))
        views = jax.device_get(view_fn(state.learner.params))
        results["first_step"] = summarise_views(views, env, action_names(spec.n_actions))
        results["first_step"]["has_policy"] = bool(learner.has_policy)

    if run_dir is not None:
        tmp = run_dir / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, run_dir / "results.json")
        results["run_dir"] = str(run_dir)
    results["config"] = cfg
    results["history"] = history
    results["final_params"] = state.learner.params  # [seeds, ...] leaves
    return results


def final_metric(results: dict[str, Any], key: str = "test/return") -> np.ndarray:
    """Per-seed final value of a test metric."""
    return np.array([rec[key] for rec in results["final"]], dtype=np.float64)

