"""One training run on disk: compile, train all seeds together, evaluate, write the run directory.

Run directory layout::

    <run_dir>/
      config.yaml                   resolved config (every default filled in): enough to re-run
                                    it, and what ``meigm eval`` rebuilds the program from
      provenance.json               one entry per leg of the run (its start and every
                                    resume): meigm's commit, library versions, platform,
                                    device (:mod:`meigm.provenance`)
      metrics.jsonl                 one JSON object per (evaluation point, seed): env steps,
                                    wall seconds since the run started (compile included,
                                    resumed legs continuing), training metrics averaged
                                    since the previous point, greedy test metrics
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
      results.json                  final per-seed results, wall time and throughput, the
                                    provenance of the process that finished it, and for
                                    games small enough to enumerate the Table 1 view (learned
                                    ``Q_tot``, policies, greedy joint action, misalignment)
      eval.json                     written by ``meigm eval``: per-seed test metrics of a
                                    checkpoint re-evaluated
      wandb/                        only with ``wandb=true``

The directory is written incrementally (config first, metrics and checkpoints as they
come), and an existing run is never overwritten. Checkpoints are written to a temporary
file and renamed, so an interrupted run leaves only complete checkpoints. While a run
trains it holds ``.lock`` in its directory (:func:`run_dir_lock`), so no second process
trains, resumes or clears it meanwhile.

Evaluation ``k`` (0-based) of seed ``i`` is at the first iteration at or after
``(k + 1) · test_interval`` of that seed's own env steps (the last at ``t_max``; see
:mod:`meigm.program`), and uses
:func:`evaluation_keys` — ``fold_in(fold_in(PRNGKey(seed + i), 0x7E57), k)`` — and every
checkpoint records its ``k``; ``meigm eval`` re-derives the same keys, so re-evaluating a
checkpoint with the run's ``test_episodes`` replays exactly the logged episodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml
from tqdm import tqdm

from meigm.config import Config
from meigm.envs import Env
from meigm.envs.host import HostEnv
from meigm.errors import MeigmError
from meigm.experiments.checkpoint import (
    FINAL,
    CheckpointCorrupt,
    CheckpointWriteError,
    checkpoint_path,
    config_differences,
    list_checkpoints,
    load_train_state,
    prune_checkpoints,
    read_metadata,
    save_checkpoint,
)
from meigm.experiments.diagnostics import (
    action_names,
    first_step_view,
    initial_params,
    summarise_views,
)
from meigm.experiments.logging import MetricsLogger, headline_metric, require_wandb
from meigm.program import (
    Program,
    compiled,
    eval_target,
    init_seeds,
    is_update_metric,
    make_program,
    select_seeds,
)
from meigm.provenance import provenance
from meigm.rollout.buffer import buffer_bytes

#: Enumerate joint actions for the Table 1 view only up to this many.
MAX_VIEW_JOINTS = 4096


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    """``runs/<alg>_<family>-<scenario>_<UTC time>``; unique per second and config."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    env = cfg.env.replace(":", "-")
    return Path(root) / f"{cfg.alg}_{env}_{stamp}"


def never_evaluated(out: Path) -> bool:
    """A run directory whose start failed before its first evaluation point: a config
    but no metrics row, no checkpoint and no results (a memory refusal, a crash while
    compiling, a divergence or a Ctrl-C in the first interval). It holds nothing a user
    would lose, so the corrected command may take it over."""
    if not (out / "config.yaml").is_file() or (out / "results.json").exists():
        return False
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and metrics.read_text().strip():
        return False
    return not any((out / "checkpoints").glob("*.safetensors"))


def check_new_run_dir(out: Path) -> None:
    """Refuse, touching nothing, a directory a new run cannot use: a file, or one that
    already holds a run other than a failed start (:func:`never_evaluated`)."""
    if out.exists() and not out.is_dir():
        raise MeigmError(f"run directory {out} exists and is not a directory")
    if (out / "config.yaml").exists() and not never_evaluated(out):
        how = ("" if (out / "results.json").exists()
               else f", or continue it with `meigm train --resume {out}`")
        raise MeigmError(
            f"run directory {out} already holds a run; choose another --out{how} (nothing was changed)"
        )


def prepare_run_dir(out: Path, echo: Callable[[str], None] | None = None) -> Path:
    """Create ``out`` for a new run; refuse to touch one that already holds a run,
    except a failed start (:func:`never_evaluated`), whose files are replaced."""
    check_new_run_dir(out)
    if never_evaluated(out):
        for name in ("config.yaml", "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)
        for name in ("tb", "checkpoints"):
            shutil.rmtree(out / name, ignore_errors=True)
        if echo is not None:
            echo(f"reusing {out}: its earlier start ended before its first evaluation")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MeigmError(f"cannot create run directory {out}: {exc.strerror}") from None
    return out


def check_resumable(run_dir: Path) -> None:
    """Refuse, touching nothing, to resume what is not an unfinished run directory."""
    if not run_dir.is_dir():
        raise MeigmError(f"run directory not found: {run_dir}")
    if (run_dir / "results.json").is_file():
        raise MeigmError(f"{run_dir} has finished (results.json exists); nothing to resume")


#: The lock a run holds on its directory while it runs (see :func:`run_dir_lock`).
LOCK_FILE = ".lock"
#: Run directories this process holds: resolved path -> the lock file's descriptor.
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``<run_dir>/.lock`` for the life of a run: an exclusive ``flock`` that the
    kernel releases when the process ends, however it ends, so a crash never leaves a
    stale lock. A second process (another ``meigm train --out`` of the same directory, a
    ``--resume``, a sweep's task) is refused with a :class:`MeigmError` naming the
    holder's pid, before it reads or changes anything. Re-entrant within a process (a
    sweep task locks the directory before it decides whether to clear it, then trains in
    it). The file stays; it holds the pid of its last holder."""
    key = os.path.realpath(run_dir)
    if key in _HELD:
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only directory or file system: nothing is touched
        raise MeigmError(f"cannot lock run directory {run_dir}: {exc.strerror} (training or "
                         "resuming writes into it; copy it somewhere writable)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise MeigmError(f"run directory {run_dir} is in use by another meigm process "
                         f"(pid {holder}); wait for it to end or use another directory "
                         "(nothing was changed)") from None
    except OSError as exc:  # a filesystem without locks
        os.close(fd)
        raise MeigmError(f"cannot lock run directory {run_dir}: {exc.strerror}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = fd
    try:
        yield
    finally:
        del _HELD[key]
        os.close(fd)  # releases the lock


def _lock_holder(fd: int) -> str:
    """The pid the holder of a lock file wrote (it writes it just after locking, so give
    it a moment), or ``unknown``."""
    for _ in range(20):
        pid = os.pread(fd, 32, 0).decode(errors="replace").split()
        if pid:
            return pid[0]
        time.sleep(0.05)
    return "unknown"


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


def memory_parts(program: Program) -> dict[str, int]:
    """Bytes a run will hold at once, by part, over all its seeds, computed from abstract
    shapes before anything is allocated or compiled.

    * ``training state``: each seed's learner parameters, optimiser state, target
      networks, replay buffer and counters (``jax.eval_shape`` of the trainer's init);
    * ``replay buffers``: the part of that which ``buffer_size`` sets (for the hint);
    * ``roll-out``: one collection, ``n_envs`` whole episodes per seed, with each
      environment's state and one step of the agent network's activations;
    * ``evaluation``: the same for ``test_episodes`` episodes run side by side (counted
      as whole episodes: an upper bound where XLA keeps less of a roll-out nobody reads);
    * ``update batch``: ``batch_size`` sampled episodes of one seed (the seeds' updates run
      one after another; for on-policy learners every seed's ``n_envs`` collected ones)
      and the network's activations over every step of them, kept for the backward pass.

    The activations are an estimate (inputs, a GRU's gates, Q-values: ``N · (input + 6H +
    2A)`` floats per environment step), and the whole a lower bound of a run's peak: on
    ``matrix:table1`` with 10^8 test episodes it gives 307 GiB where XLA asked for 413 GB
    (385 GiB); for ten seeds of ``smax:protoss_5_vs_5`` 14.9 GiB, where the process
    peaked at 18.6 GB (17.3 GiB, benchmarks/README.md's seed-cost measurement) when every
    seed's update still ran at once."""
    cfg, env = program.cfg, program.env
    spec, lanes = env.spec, program.lanes  # every seed of every packed variant

    def size(tree: Any) -> int:
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))

    one = jax.eval_shape(program.trainer.init, jax.random.PRNGKey(0))
    env_state = 0 if isinstance(env, HostEnv) else size(jax.eval_shape(env.reset, jax.random.PRNGKey(0)))
    hidden = getattr(program.learner, "hidden_dim", cfg.hidden_dim)
    step = 4 * spec.n_agents * (spec.obs_dim + spec.n_actions + spec.n_agents + 6 * hidden
                                + 2 * spec.n_actions)  # one env step of the agent network
    per_env = buffer_bytes(spec, 1) + env_state + step
    replay = program.trainer.scheme.memory_bytes()
    return {
        "training state": lanes * size(one),
        "replay buffers": lanes * replay,
        "roll-out": lanes * cfg.n_envs * per_env,
        "evaluation": lanes * cfg.test_episodes * per_env,
        # a replay learner's sampled batch, one seed at a time (its updates run seed after
        # seed: meigm.types.per_seed); an on-policy learner's update runs over the whole
        # collection of every seed at once
        "update batch": (cfg.batch_size * (buffer_bytes(spec, 1) + spec.episode_limit * step)
                         if replay else lanes * cfg.n_envs * spec.episode_limit * step),
    }


def memory_check(program: Program, available: int | None = None) -> None:
    """Refuse, before anything is allocated or compiled, a run that cannot fit.

    Everything :func:`memory_parts` counts must fit in 80% of the memory available now
    (host RAM on the CPU, the device's limit on an accelerator), next to the compiled
    program and its temporaries. Issue 41: a ``hidden_dim``, ``n_envs``,
    ``test_episodes`` or seed count far too large used to hang in allocation or die in an
    XLA ``RESOURCE_EXHAUSTED`` traceback after minutes of compiling; now one line names
    the largest part, its size and the setting to change."""
    cfg, lanes = program.cfg, program.lanes
    parts = memory_parts(program)
    need = sum(v for k, v in parts.items() if k != "replay buffers")
    if available is None:
        available = available_memory()
    if available is None or need <= 0.8 * available:
        return
    budget = 0.8 * available
    other = need - parts["replay buffers"]
    largest = max((k for k in parts if k != "training state"), key=parts.__getitem__)
    if parts["replay buffers"] >= max(parts[largest], other):
        per_episode = parts["replay buffers"] / (lanes * cfg.buffer_size)
        fit_size = int(max(budget - other, 0) / (lanes * per_episode))
        shared = parts["update batch"] if program.trainer.scheme.memory_bytes() else 0
        fit_seeds = int((budget - shared) / ((need - shared) / lanes))
        hint = f"buffer_size={fit_size}" if fit_size >= cfg.batch_size else "a smaller scenario"
        if cfg.replay_dtype == "float32":  # the paper's buffer size, stored at half width
            narrow = lanes * buffer_bytes(program.env.spec, cfg.buffer_size, "float16")
            if other + narrow <= budget:
                hint = f"replay_dtype=float16 ({byte_size(narrow)}, the same episodes) or {hint}"
        raise MeigmError(
            f"the replay buffers need {parts['replay buffers'] / 2**30:.1f} GiB ({lanes} seeds x "
            f"{cfg.buffer_size} episodes x {byte_size(per_episode)}) and the rest of the run "
            f"{byte_size(other)}, but only {available / 2**30:.1f} GiB of memory is available; "
            f"use {hint}" + (f" or seeds={fit_seeds}" if fit_seeds >= 1 else "")
            + " (nothing was allocated)")
    knobs = {"training state": "a smaller hidden_dim/mixing_embed or fewer seeds",
             "roll-out": "a smaller n_envs", "evaluation": "fewer test_episodes",
             "update batch": "a smaller batch_size"}
    if parts["training state"] - parts["replay buffers"] > parts[largest]:
        largest = "training state"
    shown = ", ".join(f"{k} {byte_size(v)}" for k, v in parts.items() if v and k != "replay buffers")
    raise MeigmError(
        f"this run needs about {byte_size(need)} ({shown}; {lanes} seed(s)) but only "
        f"{byte_size(available)} of memory is available; the {largest} is the largest part: use "
        f"{knobs[largest]} (nothing was allocated or compiled)")


def byte_size(n: float) -> str:
    """``n`` bytes with a unit that shows it: 96 B, 1.50 KiB, 0.30 MiB, 2.00 GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= 0.1 * scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


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


def _metrics_row(line: str, seeds: range) -> tuple[dict[str, Any] | None, bool]:
    """A ``metrics.jsonl`` line as (its row or None, whether the whole line is that row).
    A torn row run together with the next one yields the next (the last ``{"seed": `` on
    the line onwards)."""
    for start in (0, line.rfind('{"seed": ')):
        try:
            row = json.loads(line[start:]) if start >= 0 else None
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("seed") in seeds and "t_env" in row:
            return row, start == 0
    return None, False


def _truncate_metrics(path: Path, keep_points: int, cfg: Config,
                      warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """Keep the first ``keep_points`` evaluation points of ``metrics.jsonl`` (what a
    checkpoint covers), atomically, and return their rows; a killed run's rows past the
    checkpoint (and its torn last line) go.

    Row ``j`` is evaluation ``j // seeds`` of seed ``j % seeds``. A line inside the covered
    part that is not a row (torn, damaged) loses that one row, with a warning naming the
    line and the rows lost; every other row keeps its place (a row whose seed shows that
    rows before it were run together takes its own place)."""
    if not path.is_file():
        return []
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    limit = keep_points * cfg.seeds
    rows: list[dict[str, Any]] = []
    slot, lost, bad_lines = 0, [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if slot >= limit:
            break
        if not line.strip():
            continue
        row, whole = _metrics_row(line, seeds)
        if not whole:
            bad_lines.append(number)
        if row is None:
            lost.append(slot)
            slot += 1
            continue
        while slot < limit and seeds[slot % cfg.seeds] != row["seed"]:
            lost.append(slot)  # rows run together on an earlier line
            slot += 1
        if slot >= limit:
            break
        rows.append(row)
        slot += 1
    if bad_lines or lost:
        which = ", ".join(f"seed {seeds[j % cfg.seeds]} at evaluation {j // cfg.seeds}" for j in lost)
        warn(f"{path} line(s) {', '.join(map(str, bad_lines))} are torn or damaged: the row(s) "
             f"of {which} are lost, the other {len(rows)} rows the checkpoint covers are kept")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(f"{json.dumps(row)}\n" for row in rows))
    os.replace(tmp, path)
    return rows


@dataclass
class RunLoop:
    """What the training loop carries from one evaluation point to the next."""

    cfg: Config
    program: Program
    run_dir: Path | None
    echo: Callable[[str], None]
    keys: jax.Array  # [seeds, 2]
    #: TrainState, leaves [seeds, ...]: this run's lanes of the program's state (without
    #: the replay data between checkpoints when the program packs several variants)
    state: Any
    #: this run's hyper-parameters, {lane field: [seeds]} (meigm.lanes)
    hyper: dict[str, np.ndarray] | None = None
    evaluation: int = 0  # index of the next evaluation point
    next_checkpoint: int | None = None  # env steps of the next interval checkpoint
    diverged: dict[int, str] = field(default_factory=dict)  # frozen seed index -> where
    history: list[dict[str, Any]] = field(default_factory=list)  # every metrics row
    restored_from: Path | None = None
    # Wall time of the run's earlier processes up to the restored checkpoint (0 for a fresh
    # run; None for a checkpoint written before it was recorded), and when this one started.
    wall_before: float | None = 0.0
    started: float = field(default_factory=time.perf_counter)
    # why final.safetensors could not be written (full disk), or None
    final_missing: str | None = None

    def wall_so_far(self) -> float | None:
        """Training wall time of the whole run so far, over every process that resumed it."""
        return None if self.wall_before is None else self.wall_before + time.perf_counter() - self.started

    @property
    def healthy(self) -> list[int]:
        return [i for i in range(self.cfg.seeds) if i not in self.diverged]

    @property
    def done_steps(self) -> int:
        """The fewest env steps of any seed still training."""
        return int(np.asarray(self.state.t_env)[self.healthy].min())


def _lanes_of(tree: Any, member: int, seeds: int) -> Any:
    """Member ``member``'s lanes ``[member·S, (member + 1)·S)`` of a pytree with leaves [lanes, ...]."""
    return jax.tree.map(lambda x: x[member * seeds:(member + 1) * seeds], tree)


def start_loops(program: Program, outs: Sequence[str | Path | None], resume: bool,
                echo: Callable[[str], None]) -> tuple[list[RunLoop], Any]:
    """One :class:`RunLoop` per variant of the program (its run directory prepared and
    ``config.yaml`` written, or its history and counters restored) and the program's
    state, leaves [lanes, ...] (fresh, or every variant's checkpoint at the newest
    evaluation point that all of them have: :func:`_restore`)."""
    keys, hyper = program.lane_keys(), program.lane_hyper()
    seeds = program.cfg.seeds
    interval = program.cfg.checkpoint_interval or 0
    first_checkpoint = interval if interval > 0 else None

    def fresh(run_dirs: list[Path | None]) -> tuple[list[RunLoop], Any]:
        loops = [RunLoop(v, program, d, echo, _lanes_of(keys, m, seeds), None,
                         hyper=_lanes_of(hyper, m, seeds), next_checkpoint=first_checkpoint)
                 for m, (v, d) in enumerate(zip(program.members, run_dirs, strict=True))]
        return loops, init_seeds(program.trainer.init, keys, hyper)

    if not resume:
        run_dirs: list[Path | None] = []
        for v, out in zip(program.members, outs, strict=True):
            run_dir = None
            if out is not None:
                run_dir = prepare_run_dir(Path(out), echo)
                (run_dir / "config.yaml").write_text(yaml.safe_dump(v.to_dict(), sort_keys=False))
            run_dirs.append(run_dir)
        return fresh(run_dirs)

    run_dirs = [Path(out) for out in outs]
    for run_dir in run_dirs:
        check_resumable(run_dir)

    def warn(message: str) -> None:
        echo(f"warning: {message}")

    templates = [jax.eval_shape(jax.vmap(program.trainer.init), _lanes_of(keys, m, seeds))
                 .replace(hyper=_lanes_of(hyper, m, seeds)) for m in range(len(run_dirs))]
    restored = _restore(program.members, run_dirs, templates, warn)
    for run_dir in run_dirs:
        for stray in (run_dir / "checkpoints").glob(".*.tmp"):  # a killed writer's leftovers
            stray.unlink(missing_ok=True)
    if restored is None:  # killed before a checkpoint every variant has: from the beginning
        for v, run_dir in zip(program.members, run_dirs, strict=True):
            echo(f"no complete checkpoint in {run_dir}; starting it from the beginning")
            _truncate_metrics(run_dir / "metrics.jsonl", 0, v, warn)
            shutil.rmtree(run_dir / "tb", ignore_errors=True)
        return fresh(list(run_dirs))
    loops, states = [], []
    for m, (v, run_dir, (state, meta, path)) in enumerate(zip(program.members, run_dirs, restored,
                                                              strict=True)):
        evaluation = int(meta["eval_index"]) + 1
        history = _truncate_metrics(run_dir / "metrics.jsonl", evaluation, v, warn)
        echo(f"resuming {run_dir} from {path.name} (env steps {min(meta['t_env'])}, "
             f"evaluation {evaluation})")
        loops.append(RunLoop(v, program, run_dir, echo, _lanes_of(keys, m, seeds), None,
                             hyper=_lanes_of(hyper, m, seeds), evaluation=evaluation,
                             next_checkpoint=meta["run"].get("next_checkpoint", first_checkpoint),
                             diverged={int(k): w for k, w in meta["run"].get("diverged", {}).items()},
                             history=history, restored_from=path,
                             wall_before=meta["run"].get("wall_seconds")))
        states.append(state)
    state = states[0] if len(states) == 1 else jax.tree.map(lambda *xs: np.concatenate(xs), *states)
    return loops, jax.tree.map(jax.numpy.asarray, state)


def _restore(members: Sequence[Config], run_dirs: list[Path], templates: list[Any],
             warn: Callable[[str], None]) -> list[tuple[Any, dict[str, Any], Path]] | None:
    """Every run directory's interval checkpoint at the newest evaluation point they all
    checkpointed and can load, or None when none has a checkpoint (or, packed, when they
    share none: the variants then start again together). A checkpoint that cannot be
    read (:class:`CheckpointCorrupt`) is skipped with a warning and an older point tried;
    one of another config or meigm version is an error, never skipped over."""
    points: list[dict[int, Path]] = []
    for v, run_dir in zip(members, run_dirs, strict=True):
        found: dict[int, Path] = {}
        for path in reversed([p for p in list_checkpoints(run_dir) if p.name != FINAL]):
            try:
                meta = read_metadata(path)
            except CheckpointCorrupt as exc:
                warn(f"skipping checkpoint {path}: {exc}")
                continue
            except MeigmError as exc:
                raise MeigmError(f"cannot resume {run_dir}: {exc} (nothing was changed)") from None
            differ = config_differences(meta["config"], v)
            if differ:
                raise MeigmError(f"cannot resume {run_dir}: its config.yaml no longer matches "
                                 f"checkpoint {path.name}: {'; '.join(differ)}; put those values "
                                 "back to resume it (nothing was changed)")
            found[int(meta["eval_index"])] = path
        points.append(found)
    common = sorted(set.intersection(*(set(f) for f in points)), reverse=True)
    for index in common:
        loaded = []
        for run_dir, found, template in zip(run_dirs, points, templates, strict=True):
            try:
                loaded.append((*load_train_state(found[index], template), found[index]))
            except CheckpointCorrupt as exc:
                warn(f"skipping checkpoint {found[index]}: {exc}")
                break
            except MeigmError as exc:
                raise MeigmError(f"cannot resume {run_dir}: {exc} (nothing was changed)") from None
        else:
            return loaded
    steps = [p for d in run_dirs for p in list_checkpoints(d) if p.name != FINAL]
    if not steps or (len(run_dirs) > 1 and not common):
        return None
    where = run_dirs[0] if len(run_dirs) == 1 else ", ".join(map(str, run_dirs))
    raise MeigmError(f"cannot resume {where}: none of its {len(steps)} checkpoints can be "
                     "read (see the warnings above); to train it again from the beginning, "
                     "move its checkpoints/ away (nothing was changed)")


def record_provenance(loop: RunLoop) -> None:
    """Append this leg of the run (a fresh start or a resume) to ``provenance.json``: when
    it started, from which checkpoint and env steps, meigm's commit, the library versions,
    the platform and the device (:mod:`meigm.provenance`). A run whose figures are read
    months later names the code and libraries that made every part of its curve."""
    if loop.run_dir is None:
        return
    path = loop.run_dir / "provenance.json"
    try:
        legs = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, json.JSONDecodeError):
        legs = []
        loop.echo(f"warning: {path} is unreadable; starting its list of legs again")
    legs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "resumed_from": None if loop.restored_from is None else loop.restored_from.name,
                 "t_env": [int(t) for t in np.asarray(loop.state.t_env)],
                 **provenance()})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(legs, indent=1))
    os.replace(tmp, path)


def restore_point(cfg: Config, state: Any) -> Any:
    """What :func:`guard_divergence` needs to freeze a seed at its state before the
    next chunk: a copy of everything but the data scheme's state under
    ``on_divergence=mask`` (the chunk's input is donated, so it must be a copy; the
    replay buffers, the one large part, need none: a frozen seed's learner and
    counters are put back each chunk, so what it collects is never learned from),
    nothing under ``stop``."""
    if cfg.on_divergence != "mask":
        return None
    return jax.tree.map(jax.numpy.copy, replace(state, data=None))


def guard_divergence(loop: RunLoop, train_metrics: dict[str, np.ndarray],
                     finite_params: np.ndarray, previous: Any) -> None:
    """After a chunk: stop on a seed's first non-finite loss, value or parameter
    (``on_divergence=stop``), or freeze that seed at its state before the chunk
    (``mask``; ``previous`` is :func:`restore_point`'s copy). Raises
    :class:`MeigmError` when stopping."""
    cfg = loop.cfg
    t_env = np.asarray(loop.state.t_env)
    for i in loop.healthy:
        what = _first_nonfinite(train_metrics, finite_params, i)
        if what is None:
            continue
        where = f"{what} at env step {int(t_env[i])} of seed {cfg.seed + i}"
        if cfg.on_divergence == "stop":
            last = list_checkpoints(loop.run_dir) if loop.run_dir is not None else []
            kept = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written"
            raise MeigmError(f"training diverged: non-finite {where}; stopped, {kept}")
        loop.diverged[i] = where
        loop.echo(f"warning: non-finite {where}; that seed is frozen at its last finite state, "
                  "the others go on (on_divergence=mask)")
    if loop.diverged:  # frozen seeds keep their last finite state
        frozen = np.zeros(cfg.seeds, bool)
        frozen[list(loop.diverged)] = True
        kept = select_seeds(jax.numpy.asarray(~frozen),
                            replace(loop.state, data=None), previous)
        loop.state = replace(kept, data=loop.state.data)


def evaluation_records(loop: RunLoop, train_metrics: dict[str, np.ndarray],
                       test_metrics: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One ``metrics.jsonl`` row per seed for this evaluation point. A seed that did not
    learn in this interval (learning has not started: the buffer holds fewer than
    ``batch_size`` episodes) has no update metrics in its row rather than zeros."""
    cfg, state = loop.cfg, loop.state
    row = {k: np.asarray(v) for k, v in {**train_metrics, **test_metrics}.items()}
    learned = row.pop("learned_iterations", np.ones(cfg.seeds))
    records = [{"seed": cfg.seed + s, **{k: _to_python(v[s]) for k, v in row.items()
                                         if learned[s] > 0 or not is_update_metric(k)}}
               for s in range(cfg.seeds)]
    wall = loop.wall_so_far()
    if wall is not None:  # seconds since the run started, compile included, over every leg
        for rec in records:
            rec["wall_seconds"] = round(wall, 3)
    for s in loop.diverged:  # a frozen seed: its counters are those it is frozen at
        records[s].update(diverged=True, t_env=int(np.asarray(state.t_env)[s]),
                          episodes=int(np.asarray(state.episodes)[s]),
                          updates=int(np.asarray(state.updates)[s]))
    return records


def save_checkpoints(loop: RunLoop, finished: bool, done: int | None = None,
                     prune: bool = True) -> bool:
    """The interval checkpoint once the slowest healthy seed has passed the next multiple
    of ``checkpoint_interval`` (a failed write is a warning: the previous one stands),
    and ``final.safetensors`` (no buffer) at the end. ``done``: the slowest healthy seed
    of the whole program (a packed program checkpoints every variant at the same point);
    ``prune`` False leaves the older checkpoints for the caller to prune once every
    variant has written its own. True when an interval checkpoint was written."""
    if loop.run_dir is None:
        return False
    cfg, run_dir = loop.cfg, loop.run_dir
    done = loop.done_steps if done is None else done
    t_env = np.asarray(loop.state.t_env)
    if finished:  # training is done: a checkpoint that cannot be written must not cost the results
        try:
            save_checkpoint(checkpoint_path(run_dir, None), loop.state, cfg, t_env,
                            loop.evaluation, with_buffer=False, run_meta={"diverged": loop.diverged})
        except CheckpointWriteError as exc:
            loop.final_missing = str(exc)
            loop.echo(f"warning: {exc}; the run's results are written without "
                      f"{FINAL} (eval and export use its newest interval checkpoint)")
        return False
    if loop.next_checkpoint is None or done < loop.next_checkpoint:
        return False
    interval = cfg.checkpoint_interval
    upcoming = (done // interval + 1) * interval
    loop.next_checkpoint = upcoming
    try:
        save_checkpoint(checkpoint_path(run_dir, loop.done_steps), loop.state, cfg, t_env,
                        loop.evaluation, run_meta={"next_checkpoint": upcoming,
                                                   "diverged": loop.diverged,
                                                   "wall_seconds": loop.wall_so_far()})
    except CheckpointWriteError as exc:
        loop.echo(f"warning: {exc}; training goes on, the previous checkpoint stands")
        return False
    if prune:
        prune_checkpoints(run_dir, cfg.keep_checkpoints)
    return True


def train_run(
    cfg: Config,
    out: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    resume: bool = False,
    env: Env | HostEnv | None = None,
) -> dict[str, Any]:
    """Train ``cfg.seeds`` seeds of one configuration in one compiled program.

    Returns the results dict that is also written to ``results.json``; with
    ``out=None`` nothing is written (used by tests and benchmarks). With ``resume``,
    ``out`` is an existing run directory (its ``config.yaml`` is the config) and training
    continues from its newest complete interval checkpoint — exactly: the metrics after
    the resume point equal those of an uninterrupted run on the same machine.

    The loop, one evaluation point per pass: train every seed to its next target
    (:func:`~meigm.program.eval_target`), :func:`guard_divergence`, evaluate,
    log (:func:`evaluation_records`), :func:`save_checkpoints`, progress.

    Divergence: after every chunk each seed's losses, Q-values and parameters are
    checked; a non-finite one stops the run (``on_divergence=stop``) with a message
    naming the quantity, the env step and the seed, leaving the last good checkpoint, or
    (``on_divergence=mask``) freezes that seed at its last finite state, reports it and
    lets the other seeds finish.

    ``env`` trains a custom environment in place of the registry's ``cfg.env`` (which is
    then only a label; ``meigm eval`` cannot rebuild such a run from its directory).
    """
    return train_runs([cfg], [out], progress, echo, resume, env)[0]


def train_runs(
    variants: Sequence[Config],
    outs: Sequence[str | Path | None],
    progress: bool = True,
    echo: Callable[[str], None] = print,
    resume: bool = False,
    env: Env | HostEnv | None = None,
) -> list[dict[str, Any]]:
    """Train configs that differ only in lane fields (:mod:`meigm.lanes`) and ``seed`` as
    lanes of one compiled program, each into its own run directory (``outs``, one per
    variant, all None to write nothing), exactly as :func:`train_run` writes a run: the
    directories, metrics, checkpoints and results are those each variant would have alone,
    and each lane's numbers are those of its variant in its own program of the same seed
    count (bit for bit, or to float rounding for the PPO family: :mod:`meigm.lanes`).
    With ``resume`` every variant continues from the newest evaluation point all of them
    checkpointed (their checkpoints are written at the same points, the older ones pruned
    only once every variant has its new one). Returns one results dict per variant, in
    order."""
    t_start = time.perf_counter()
    variants = list(variants)
    if not variants or len(outs) != len(variants):
        raise MeigmError(f"train_runs needs one run directory (or None) per variant; got "
                         f"{len(variants)} variant(s) and {len(outs)} run directories")
    dirs = [Path(o) for o in outs if o is not None]
    if dirs and len(dirs) != len(outs):
        raise MeigmError("either every variant of a packed program has a run directory or none does")
    if len({os.path.realpath(d) for d in dirs}) != len(dirs):
        raise MeigmError("two variants of a packed program share a run directory; give each its own")
    if any(v.wandb for v in variants):
        require_wandb()  # before the run directory exists: a failed start leaves nothing
    program = make_program(variants[0], env, variants=variants[1:])  # cheap: nothing allocated yet
    memory_check(program)
    # refusals that need no lock come first: the lock creates the directory and its lock file
    for d in dirs:
        check_resumable(d) if resume else check_new_run_dir(d)
    with contextlib.ExitStack() as locks:
        for d in dirs:
            locks.enter_context(run_dir_lock(d))
        return _train_program(program, outs, progress, echo, resume, t_start)


def _views(loops: list[RunLoop], state: Any, with_data: bool) -> None:
    """Give each run its lanes of the program's state: the state itself for one run; for a
    packed program a copy of its lanes without the replay data, or with it (host views,
    no copy) for a checkpoint."""
    if len(loops) == 1:
        loops[0].state = state
        return
    seeds = loops[0].cfg.seeds
    for m, loop in enumerate(loops):
        small = _lanes_of(replace(state, data=None), m, seeds)
        data = (jax.tree.map(lambda x, m=m: np.asarray(x)[m * seeds:(m + 1) * seeds], state.data)
                if with_data else None)
        loop.state = replace(small, data=data)


def _gathered(loops: list[RunLoop], state: Any) -> Any:
    """The program's state with each run's (possibly changed: frozen seeds) lanes put back."""
    if len(loops) == 1:
        return loops[0].state
    rest = jax.tree.map(lambda *xs: jax.numpy.concatenate(xs),
                        *[replace(loop.state, data=None) for loop in loops])
    return replace(rest, data=state.data)


def _train_program(program: Program, outs: Sequence[str | Path | None], progress: bool,
                   echo: Callable[[str], None], resume: bool,
                   t_start: float) -> list[dict[str, Any]]:
    """:func:`train_runs`'s loop, in run directories this process holds (or none);
    ``t_start`` is when the call that builds the program began (its startup counts)."""
    cfg, seeds = program.cfg, program.cfg.seeds
    loops, state = start_loops(program, outs, resume, echo)
    _views(loops, state, with_data=False)
    for loop in loops:
        loop.started = t_start
        record_provenance(loop)
    # a resumed run's earlier env steps, per run
    steps_before = [int(np.sum(np.asarray(loop.state.t_env))) for loop in loops]
    run, evaluate = compiled(program.trainer, donate=True)  # buffers held once, not twice
    keys = program.lane_keys()
    evaluation = loops[0].evaluation  # the variants of a packed program move in step

    # Progress counts the slowest seed's env steps, so its rate is env steps/s per seed
    # (x lanes for the whole program) and its ETA is the time to t_max.
    bar = tqdm(total=cfg.t_max, unit="step", unit_scale=True, disable=not progress,
               desc=f"{cfg.alg} {cfg.env} x{program.lanes}", dynamic_ncols=True)
    # Compiled ahead of the first chunk, so compile_seconds is compile (or a cache hit) and
    # not compile plus the first interval's training; jit reuses these executables.
    compile_s = None
    if hasattr(run, "lower"):
        t0 = time.perf_counter()
        run.lower(state, eval_target(cfg, evaluation)).compile()
        evaluate.lower(state.learner.params, evaluation_keys(keys, evaluation)).compile()
        compile_s = time.perf_counter() - t0
    startup_s = time.perf_counter() - t_start  # to the first training step
    with contextlib.ExitStack() as stack:
        loggers = [stack.enter_context(MetricsLogger(
            loop.cfg, loop.run_dir,
            purge_step=int(np.asarray(loop.state.t_env).min()) + 1 if loop.restored_from else None))
            for loop in loops]
        try:
            while True:
                t0 = time.perf_counter()
                previous = restore_point(cfg, state)
                state, train_metrics = run(state, eval_target(cfg, evaluation))
                jax.block_until_ready(train_metrics)
                if compile_s is None:
                    compile_s = time.perf_counter() - t0
                train_metrics = jax.device_get(train_metrics)
                finite = train_metrics.pop("finite_params")
                _views(loops, state, with_data=False)
                for m, loop in enumerate(loops):
                    guard_divergence(loop, _lanes_of(train_metrics, m, seeds),
                                     _lanes_of(finite, m, seeds),
                                     None if previous is None else _lanes_of(previous, m, seeds))
                if any(loop.diverged for loop in loops):
                    state = _gathered(loops, state)
                test_metrics = jax.device_get(
                    evaluate(state.learner.params, evaluation_keys(keys, evaluation)))
                for m, loop in enumerate(loops):
                    records = evaluation_records(loop, _lanes_of(train_metrics, m, seeds),
                                                 _lanes_of(test_metrics, m, seeds))
                    loop.history.extend(records)
                    loggers[m].log(records)
                    if not loop.healthy:
                        raise MeigmError("training diverged in every seed"
                                         + (f" of {loop.run_dir}" if len(loops) > 1 else "") + ": "
                                         + "; ".join(loop.diverged.values()))
                done = min(loop.done_steps for loop in loops)
                finished = done >= cfg.t_max
                _save_all(loops, state, finished, done)
                evaluation += 1
                for loop in loops:
                    loop.evaluation = evaluation
                bar.update(min(done, cfg.t_max) - bar.n)
                label, value = headline_metric(test_metrics)
                bar.set_postfix({label: value})
                if finished:
                    break
        finally:
            bar.close()
            program.trainer.close()
    wall = time.perf_counter() - t_start
    _views(loops, state, with_data=False)
    return [finish(loop, wall, compile_s or 0.0, before, startup_s)
            for loop, before in zip(loops, steps_before, strict=True)]


def _save_all(loops: list[RunLoop], state: Any, finished: bool, done: int) -> None:
    """Every run's checkpoints at this evaluation point (:func:`save_checkpoints`); a
    packed program's older interval checkpoints are pruned only once every variant has
    written its new one, so a kill between two variants' writes leaves a point they all
    have."""
    if all(loop.run_dir is None for loop in loops):
        return
    if len(loops) == 1:
        save_checkpoints(loops[0], finished, done)
        return
    _views(loops, state, with_data=True)  # host views of the lanes' data, no copy
    written = [save_checkpoints(loop, finished, done, prune=False) for loop in loops]
    _views(loops, state, with_data=False)  # no host views of the buffers held past here
    if all(written):
        for loop in loops:
            prune_checkpoints(loop.run_dir, loop.cfg.keep_checkpoints)


def finish(loop: RunLoop, wall: float, compile_s: float, steps_before: int = 0,
           startup_s: float | None = None) -> dict[str, Any]:
    """The results of a finished run, written to ``results.json`` when it has a directory.

    ``wall_seconds``, ``compile_seconds``, ``startup_seconds`` and ``env_steps_per_second``
    describe this process (for a resumed run, the leg since ``resumed_from``:
    ``steps_before`` env steps, summed over seeds, were trained before it);
    ``total_wall_seconds`` adds the earlier processes' training time up to the restored
    checkpoint, when that checkpoint recorded it. ``compile_seconds`` is the training
    chunk's and the evaluation's compile (a persistent-cache hit makes it small);
    ``startup_seconds`` runs from the training call to the first training step: building
    the program, initialising or restoring the state, and that compile."""
    cfg, state, history = loop.cfg, loop.state, loop.history
    env, learner = loop.program.env, loop.program.learner
    spec = env.spec
    # each seed's rows, in order (by their seed: a resumed run may have lost a torn one)
    by_seed = {cfg.seed + s: [rec for rec in history if rec["seed"] == cfg.seed + s]
               for s in range(cfg.seeds)}
    results: dict[str, Any] = {
        "alg": cfg.alg,
        "env": cfg.env,
        "seeds": [cfg.seed + s for s in range(cfg.seeds)],
        "t_env": [int(x) for x in np.asarray(state.t_env)],
        "wall_seconds": round(wall, 3),
        "provenance": provenance(),
        "compile_seconds": round(compile_s, 3),
        **({} if startup_s is None else {"startup_seconds": round(startup_s, 3)}),
        "env_steps_per_second": round((float(np.sum(np.asarray(state.t_env))) - steps_before) / wall, 1),
        "final": [
            {k: v for k, v in rows[-1].items() if k.startswith("test/") or k in ("seed", "t_env")}
            for rows in by_seed.values()
        ],
        # each seed's env steps at every evaluation point: its own test_interval grid
        "eval_t_env": {str(seed): [rec["t_env"] for rec in rows] for seed, rows in by_seed.items()},
    }
    if loop.wall_before is not None:
        results["total_wall_seconds"] = round(loop.wall_before + wall, 3)
    if loop.restored_from is not None:
        results["resumed_from"] = str(loop.restored_from)
    if loop.diverged:
        results["diverged"] = {str(cfg.seed + i): w for i, w in sorted(loop.diverged.items())}
    if loop.final_missing is not None:
        results["final_checkpoint_missing"] = loop.final_missing
    if len(loop.program.members) > 1:  # trained as lanes of one program with other variants
        results["packed"] = {"variants": len(loop.program.members), "lanes": loop.program.lanes}
    if (not isinstance(env, HostEnv) and getattr(env, "payoff", None) is not None
            and math.prod([spec.n_actions] * spec.n_agents) <= MAX_VIEW_JOINTS):
        # the Table 1 view: games with a payoff table only (for a sequential task one
        # state's joint-action table says little and can be large: 9^3 entries on 3m)
        view_fn = jax.jit(jax.vmap(lambda p: first_step_view(learner, env, p, jax.random.PRNGKey(0))))
        views = jax.device_get(view_fn(state.learner.params))
        # and of each seed's untrained parameters: the policy it started from
        initial = jax.device_get(view_fn(initial_params(loop.program.trainer, loop.keys, loop.hyper)))
        results["first_step"] = summarise_views(views, env, action_names(spec.n_actions), initial)
        results["first_step"]["has_policy"] = bool(learner.has_policy)
        # Q_tot, its argmax and misalignment exist only for learners with joint values
        # (not the PPO family)
        results["first_step"]["has_q_tot"] = hasattr(learner, "mixer") or hasattr(learner, "joint_values")

    if loop.run_dir is not None:
        tmp = loop.run_dir / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, loop.run_dir / "results.json")
        results["run_dir"] = str(loop.run_dir)
    results["config"] = cfg
    results["history"] = history
    results["final_params"] = state.learner.params  # [seeds, ...] leaves
    return results


def final_metric(results: dict[str, Any], key: str = "test/return") -> np.ndarray:
    """Per-seed final value of a test metric."""
    return np.array([rec[key] for rec in results["final"]], dtype=np.float64)

