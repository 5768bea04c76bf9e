"""Sweeps: a grid of algorithms × scenarios × overrides × seeds, run as Ray tasks.

A sweep preset is a YAML file (the paper's experiments ship in ``meigm/presets``)::

    name: table3
    description: QMIX vs +Entropy vs ME-QMIX on the 5v5 races (Table 3)
    seeds: 3                        # trained together in one compiled program (vmap)
    scenarios: [smax:protoss_5_vs_5, smax:terran_5_vs_5, smax:zerg_5_vs_5]
                                    # or a mapping scenario: {its own overrides}
    algorithms:                     # label: algorithm, or label: {alg: ..., key: value...}
      qmix: qmix
      +entropy: {alg: me_qmix, transform: none}
      me_qmix: me_qmix
    overrides: {epsilon_anneal_steps: 100000}   # config keys for every run
    grid: {alpha_lr: [1.0e-4, 3.0e-4]}          # optional: cross product, one run each;
                                                # a list of mappings is a union of products
    budget: laptop                  # default budget
    budgets:                        # each may replace seeds, scenarios, algorithms, grid and
                                    # add overrides (which win over the labels' settings)
      smoke: {seeds: 2, scenarios: [smax:protoss_5_vs_5], overrides: {t_max: 300}}
      laptop: {overrides: {t_max: 150000}}
      paper: {seeds: 5, overrides: {t_max: 10050000}}

Why Ray and one task per configuration: the seeds of one configuration already share
one XLA program, which is the cheapest way to run them; separate configurations are
separate programs, and Ray schedules them over the cores of one machine or the nodes
of a cluster (``--address``) without a line of process management here. Each task
declares the memory its replay buffers need, computed from the scenario before
anything is allocated, so Ray never starts more runs than fit in memory.

Layout: ``<out>/<scenario>/<label>[,key=value...]/`` is an ordinary run directory
(see :mod:`meigm.experiments.run`) plus ``label.txt``; ``<out>/sweep.json`` records
every run's status (pending, queued while Ray holds it back, running from the moment its
task starts, finished, failed), attempts and errors, rewritten atomically after each change.

Resuming: a run whose ``results.json`` exists is finished and skipped, so re-running a
finished sweep does nothing. A run that did not finish (killed, crashed worker, an
exception, a sweep stopped at the end of a session) continues from its newest complete
checkpoint under the config it recorded (:func:`train_task`), within the same sweep up
to ``max_retries`` times and in a later one by re-running it; without a checkpoint, or
when its record disagrees with a value the sweep sets, its directory is replaced and it
starts from scratch (a checkpoint that cannot be resumed, say of another meigm version, is
an error rather than a reason to replace it). User errors (a bad config) are not retried.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import itertools
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meigm import config
from meigm.errors import ConfigError, MeigmError

#: Built-in presets: ``meigm sweep table3`` means ``meigm/presets/table3.yaml``.
PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
BUDGETS = ("smoke", "laptop", "paper")
PRESET_KEYS = ("name", "description", "seeds", "scenarios", "algorithms", "overrides", "grid",
               "budget", "budgets")
BUDGET_KEYS = ("seeds", "scenarios", "grid", "overrides", "algorithms")
#: Memory a run needs besides its replay buffers (XLA, networks, batches), for Ray.
BASE_RUN_MEMORY = 1.5 * 2**30
#: How often the driver looks for runs Ray has started, to mark them running in sweep.json.
STATUS_POLL_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One configuration of the grid: all its seeds train in one program."""

    run_id: str  # "<scenario>/<label>", the run directory relative to the sweep root
    label: str
    values: dict[str, Any]  # config keys (alg, env, seeds, overrides) for config.from_dict

    def config(self) -> config.Config:
        return config.from_dict(self.values)


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    budget: str
    runs: tuple[RunSpec, ...]
    source: str


def builtin_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name_or_path: str | Path) -> Path:
    """A preset file, or the built-in preset of that name.

    A bare name means the built-in preset even when a directory of that name sits in the
    working directory (a sweep's own ``--out`` is often named after its preset).
    """
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise MeigmError(f"sweep preset not found: {p}")
        return p
    if p.is_file():
        return p
    builtin = PRESET_DIR / f"{p}.yaml"
    if not builtin.is_file():
        raise MeigmError(f"unknown sweep preset {str(name_or_path)!r}; built-in presets: "
                         f"{', '.join(builtin_presets())} (or give a path to a .yaml file)")
    return builtin


def _check_keys(d: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"allowed: {', '.join(allowed)}")


def _algorithms(spec: Any, where: str) -> dict[str, dict[str, Any]]:
    """``algorithms`` as label -> {alg, overrides...}; a list means label = algorithm."""
    if isinstance(spec, list):
        spec = {str(a): str(a) for a in spec}
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: 'algorithms' must be a non-empty mapping label: algorithm")
    out = {}
    for label, value in spec.items():
        if isinstance(value, str):
            value = {"alg": value}
        if not isinstance(value, dict) or "alg" not in value:
            raise ConfigError(f"{where}: algorithm {label!r} must be a name or a mapping with 'alg'")
        out[str(label)] = dict(value)
    return out


def _scenarios(spec: Any, where: str) -> dict[str, dict[str, Any]]:
    """``scenarios`` as name -> its own overrides: a list (or one name) means none; a
    mapping gives each scenario config keys of its own (a budget, say), e.g.
    ``{smax:3m: {t_max: 300000}, smax:protoss_5_vs_5: {t_max: 1000000}}``."""
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, list) and spec and all(isinstance(x, str) for x in spec):
        return {x: {} for x in spec}
    if isinstance(spec, dict) and spec and all(isinstance(v, dict | None) for v in spec.values()):
        return {str(k): dict(v or {}) for k, v in spec.items()}
    raise ConfigError(f"{where}: 'scenarios' must be a non-empty list of scenario names, or a "
                      "mapping of scenario names to their own config overrides")


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _grid_points(grid: Any, where: str) -> list[dict[str, Any]]:
    """``grid``: a mapping key -> values (their cross product), or a list of such
    mappings (the union of their products: e.g. two one-dimensional scans)."""
    if not grid:
        return [{}]
    grids = grid if isinstance(grid, list) else [grid]
    points: list[dict[str, Any]] = []
    for g in grids:
        if not isinstance(g, dict) or any(not isinstance(v, list) or not v for v in g.values()):
            raise ConfigError(f"{where}: 'grid' must map config keys to non-empty lists of values "
                              "(or be a list of such mappings)")
        points += [dict(zip(g, p, strict=True)) for p in itertools.product(*g.values())]
    return points


def load_sweep(name_or_path: str | Path, budget: str | None = None) -> Sweep:
    """Expand a preset at a budget into its runs, validating every run's config."""
    path = preset_path(name_or_path)
    where = f"sweep preset {path}"
    raw = config.load_yaml(path, what="sweep preset")
    _check_keys(raw, PRESET_KEYS, where)
    budgets = raw.get("budgets") or {}
    if not isinstance(budgets, dict):
        raise ConfigError(f"{where}: 'budgets' must be a mapping of {', '.join(BUDGETS)}")
    _check_keys(budgets, BUDGETS, f"{where} budgets")
    budget = budget or raw.get("budget") or "laptop"
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; allowed: {', '.join(BUDGETS)}")
    chosen = budgets.get(budget) or {}
    if not isinstance(chosen, dict):
        raise ConfigError(f"{where}: budget {budget!r} must be a mapping")
    _check_keys(chosen, BUDGET_KEYS, f"{where} budget {budget!r}")

    seeds = chosen.get("seeds", raw.get("seeds", 3))
    scenarios = _scenarios(chosen.get("scenarios", raw.get("scenarios")), where)
    algorithms = _algorithms(chosen.get("algorithms", raw.get("algorithms")), where)
    points = _grid_points(chosen.get("grid", raw.get("grid")), where)
    # Precedence, lowest first: the preset's overrides, the scenario's, the label's own
    # settings, the budget's overrides (so a smoke budget shrinks every run), the grid point.
    common, budget_overrides = raw.get("overrides") or {}, chosen.get("overrides") or {}

    runs = []
    for (scenario, own), (label, alg_spec), point in itertools.product(
            scenarios.items(), algorithms.items(), points):
        values = {**common, **own, **alg_spec, **budget_overrides, **point, "env": scenario,
                  "seeds": seeds}
        full_label = ",".join([label, *(f"{k}={_fmt(v)}" for k, v in point.items())])
        for name, what in ((scenario.replace(":", "_"), "scenario"), (full_label, "run label")):
            if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
                raise ConfigError(f"{where}: {what} {name!r} must be one directory name (not "
                                  "empty, '.' or '..', without '/' or '\\'): each run has its own "
                                  "directory inside the sweep's")
        run = RunSpec(run_id=f"{scenario.replace(':', '_')}/{full_label}", label=full_label,
                      values=values)
        try:
            run.config()
        except ConfigError as exc:
            raise ConfigError(f"{where}, run {run.run_id}: {exc}") from None
        runs.append(run)
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: two runs share a directory; give the algorithms distinct labels")
    return Sweep(name=str(raw.get("name") or path.stem), budget=budget, runs=tuple(runs),
                 source=str(path))


def select_runs(sweep: Sweep, patterns: list[str] | None) -> Sweep:
    """The runs of ``sweep`` whose id (``<scenario>/<label>``) matches a shell pattern.

    A subset of a sweep is how a long sweep is steered by hand (run HASAC on protoss
    before the rest, say) without a second preset; every selected run keeps the config
    and directory it has in the whole sweep, so a later unrestricted run of the same
    sweep finds it finished or resumes it. A pattern that matches no run is an error
    naming the ids there are, since a typo would otherwise run nothing silently.
    """
    if not patterns:
        return sweep
    ids = [r.run_id for r in sweep.runs]
    for pattern in patterns:
        if not fnmatch.filter(ids, pattern):
            shown = ", ".join(ids[:12]) + (f", ... ({len(ids)} runs)" if len(ids) > 12 else "")
            raise ConfigError(f"--only {pattern!r} matches no run of sweep {sweep.name}; runs: {shown}")
    runs = tuple(r for r in sweep.runs if any(fnmatch.fnmatchcase(r.run_id, p) for p in patterns))
    return dataclasses.replace(sweep, runs=runs)


def run_memory_bytes(run: RunSpec) -> int:
    """What a run needs in memory: its seeds' data-scheme state (replay buffers) plus a
    fixed allowance."""
    from meigm.program import make_program

    program = make_program(run.config())  # cheap: nothing allocated, no worker started
    return int(program.trainer.scheme.memory_bytes() * program.cfg.seeds + BASE_RUN_MEMORY)


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "results.json").is_file()


# ----------------------------------------------------------------- the Ray task
def train_task(values: list[dict[str, Any]], run_dirs: list[str], labels: list[str],
               pid_files: list[str]) -> list[dict[str, Any]]:
    """One Ray task: a pack of runs that differ only in lane fields (:mod:`meigm.lanes`),
    trained as lanes of one program (:func:`~meigm.experiments.run.train_runs`), each
    into its own run directory exactly as alone; a pack of one is a plain run.

    A run directory left unfinished by an earlier attempt is resumed when every run of
    the pack recorded the same config and has checkpoints, else cleared (all but its
    lock) and trained again from the start."""
    from meigm.experiments.evaluate import load_config
    from meigm.experiments.run import LOCK_FILE, run_dir_lock, train_runs

    for pid_file in pid_files:
        Path(pid_file).parent.mkdir(parents=True, exist_ok=True)
        Path(pid_file).write_text(str(os.getpid()))  # lets tests and users kill a run's worker
    outs = [Path(d) for d in run_dirs]
    existed = [out.exists() and not is_finished(out) for out in outs]  # a finished one is refused
    cfgs = [config.from_dict(v) for v in values]
    with contextlib.ExitStack() as locks:
        # Held from the decision to the end of training (train_runs takes them again,
        # re-entrantly): a directory another process trains in is neither cleared nor
        # trained in twice.
        for out in outs:
            locks.enter_context(run_dir_lock(out))
        stored = []
        for out, cfg, v in zip(outs, cfgs, values, strict=True):
            try:
                old = load_config(out)
            except Exception:  # no or unreadable config.yaml: nothing worth keeping
                old = None
            same = old is not None and all(getattr(old, k) == getattr(cfg, k) for k in v)
            stored.append(old if same and (out / "checkpoints").is_dir() else None)
        resume = all(old is not None for old in stored)
        if resume:
            cfgs = stored
        else:
            for out in [o for o, e in zip(outs, existed, strict=True) if e]:
                for item in out.iterdir():  # cleared, all but the lock this task holds
                    if item.name == LOCK_FILE:
                        continue
                    if item.is_dir() and not item.is_symlink():
                        shutil.rmtree(item)
                    else:
                        item.unlink()
        results = train_runs(cfgs, outs, progress=False, echo=lambda _: None, resume=resume)
        for out, label in zip(outs, labels, strict=True):
            (out / "label.txt").write_text(label + "\n")
    return [{"wall_seconds": r["wall_seconds"], "final": r["final"]} for r in results]


def packs(runs: list[RunSpec], lanes: int) -> list[list[RunSpec]]:
    """The runs grouped into packs of at most ``lanes`` lanes (variants × seeds) whose
    configs differ only in lane fields and ``seed``, in the sweep's order; ``lanes`` 1
    (or any run whose seeds alone reach it) leaves every run on its own."""
    from meigm.lanes import FREE_FIELDS, LANE_FIELDS

    groups: dict[tuple, list[list[RunSpec]]] = {}
    order: list[list[RunSpec]] = []
    for run in runs:
        cfg = run.config()
        key = tuple((f.name, repr(getattr(cfg, f.name))) for f in dataclasses.fields(cfg)
                    if f.name not in LANE_FIELDS and f.name not in FREE_FIELDS)
        open_packs = groups.setdefault(key, [])
        if open_packs and (len(open_packs[-1]) + 1) * cfg.seeds <= lanes:
            open_packs[-1].append(run)
            continue
        pack = [run]
        open_packs.append(pack)
        order.append(pack)
    return order


def default_lanes(runs: list[RunSpec], workers: float, available: int | None = None) -> int:
    """Lanes per program a sweep packs by default, from what lanes were measured to cost.

    On an accelerator, 16: the H200 ran 3 seeds for 1.4x one seed. On the CPU a packed
    lane costs what its work costs alone — 0.93-0.98x on smax:protoss_5_vs_5 (3 and 10 seeds, and
    4 variants x 3 seeds), 1.00-1.03x on smax:3m (3 and 10 seeds, 4 x 3 lanes;
    benchmarks/README.md, "Lanes against the same lanes alone") — since a lane that
    reaches its target or is still filling skips its updates and stops keeping the
    others' roll-out going; packing then saves each further program's compile
    (about a minute for a SMAX race). So pack, but never so far that a worker idles (at
    least as many programs as ``workers``) or that one program outgrows a worker's share
    of 80% of the ``available`` memory (bytes; read now when None)."""
    import jax

    from meigm.experiments.run import available_memory

    if jax.default_backend() != "cpu":
        return 16
    if not runs:
        return 1
    workers = max(1, int(workers))
    lanes = sum(r.values["seeds"] for r in runs)
    spread = -(-lanes // workers)  # every worker gets a program
    per_lane = max((run_memory_bytes(r) - BASE_RUN_MEMORY) / r.values["seeds"] for r in runs)
    available = available_memory() if available is None else available
    if available is None or per_lane <= 0:
        return spread
    fit = int((0.8 * available / workers - BASE_RUN_MEMORY) // per_lane)
    return max(1, min(spread, fit))


# ----------------------------------------------------------------- the driver
class _Status:
    """``sweep.json``: one entry per run, rewritten atomically on every change.

    Each driver owns the entries of the runs it was given; the others' entries are
    re-read from the file at every write, so two drivers steering disjoint ``--only``
    subsets of one sweep directory do not overwrite each other's progress (an update the
    other driver makes in the instant between our read and our rename is restored at its
    own next write, which always carries its runs in full)."""

    def __init__(self, root: Path, sweep: Sweep) -> None:
        self.path = root / "sweep.json"
        old = self._on_disk()
        # Runs left out of this invocation (``--only``) keep their entries as they were.
        self.ours = {run.run_id for run in sweep.runs}
        self.data = {"name": sweep.name, "budget": sweep.budget, "source": sweep.source,
                     "runs": {k: v for k, v in old.items() if k not in self.ours}}
        for run in sweep.runs:
            prev = old.get(run.run_id, {})
            self.data["runs"][run.run_id] = {
                "label": run.label, "status": "pending", "attempts": prev.get("attempts", 0),
                "errors": prev.get("errors", []), "config": run.values,
                **({"wall_seconds": prev["wall_seconds"]} if "wall_seconds" in prev else {}),
            }

    def set(self, run_id: str, **fields: Any) -> None:
        self.data["runs"][run_id].update(fields)
        self.write()

    def _on_disk(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            runs = json.loads(self.path.read_text()).get("runs", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            return {}
        return runs if isinstance(runs, dict) else {}

    def write(self) -> None:
        others = {k: v for k, v in self._on_disk().items() if k not in self.ours}
        self.data["runs"] = {**self.data["runs"], **others}
        # A temporary file per process: two drivers must not rename each other's.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def _pid_file(out: Path, run_id: str) -> Path:
    return out / ".pids" / f"{run_id}.pid"


def _mark_started(status: _Status, run_ids: list[str], out: Path) -> None:
    """Queued runs whose task has written its pid file are running since that moment."""
    for run_id in run_ids:
        entry, pid = status.data["runs"][run_id], _pid_file(out, run_id)
        if entry["status"] == "queued" and pid.is_file():
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pid.stat().st_mtime))
            status.set(run_id, status="running", started=started)


def _error_line(exc: BaseException) -> tuple[str, bool]:
    """(one-line description, whether retrying can help) of a failed Ray task."""
    import ray

    cause = exc
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
    if isinstance(cause, MeigmError):
        return f"{type(cause).__name__}: {cause}", False
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300], True


def run_sweep(
    sweep: Sweep,
    out: Path,
    *,
    address: str | None = None,
    max_retries: int = 2,
    num_cpus: int | None = None,
    cpus_per_run: float = 1.0,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    lanes: int | None = None,
) -> dict[str, Any]:
    """Run every unfinished run of ``sweep`` under ``out``; returns the status dict.

    ``address=None`` starts a local Ray with ``num_cpus`` (default: all cores); otherwise
    it joins that cluster, whose nodes must have meigm installed and see ``out``.
    ``lanes``: the most lanes (variants × seeds) one task's program trains — runs that
    differ only in lane fields are packed into one program up to it (:func:`packs`);
    None: :func:`default_lanes` for this machine and the cluster's CPUs, 1 for no packing.
    """
    if max_retries < 0:
        raise MeigmError(f"max_retries must be >= 0, got {max_retries}")
    if cpus_per_run <= 0:
        raise MeigmError(f"cpus_per_run must be > 0, got {cpus_per_run}")
    if lanes is not None and lanes < 1:
        raise MeigmError(f"lanes must be >= 1 (1: every run its own program), got {lanes}")
    todo = [r for r in sweep.runs if not is_finished(out / r.run_id)]
    echo(f"sweep {sweep.name} ({sweep.budget} budget): {len(sweep.runs)} runs, "
         f"{len(sweep.runs) - len(todo)} finished, {len(todo)} to run -> {out}")
    if dry_run:
        for r in sweep.runs:
            state = "finished" if r not in todo else "to run"
            extra = {k: v for k, v in r.values.items() if k not in ("env", "alg", "seeds")}
            echo(f"  {state:>8}  {r.run_id:<48} alg={r.values['alg']} seeds={r.values['seeds']} "
                 + " ".join(f"{k}={_fmt(v)}" for k, v in extra.items()))
        return {"runs": {r.run_id: {"status": "finished" if r not in todo else "to run"}
                         for r in sweep.runs}}
    out.mkdir(parents=True, exist_ok=True)
    status = _Status(out, sweep)
    for r in sweep.runs:
        if r not in todo:
            status.data["runs"][r.run_id]["status"] = "finished"
    status.write()
    if not todo:
        echo("nothing to do: every run has finished")
        return status.data

    import ray

    memory = {r.run_id: run_memory_bytes(r) for r in todo}
    env_vars = {k: v for k, v in os.environ.items()
                if k.startswith(("JAX_", "XLA_", "MEIGM_")) or k in ("CUDA_VISIBLE_DEVICES",)}
    own_ray = not ray.is_initialized()  # a caller (a test, a notebook) may hold one already
    if own_ray:
        with warnings.catch_warnings():
            # JAX warns on any fork once its backend is up (importing JaxMARL starts it).
            # Ray starts its daemons with subprocess, a fork followed at once by exec in C,
            # which runs no code of the parent's threads: the deadlock it warns of cannot occur.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            ray.init(address=address, num_cpus=num_cpus if address is None else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": env_vars} if env_vars else None)
    try:
        workers = ray.cluster_resources().get("CPU", 1.0) / cpus_per_run
        groups = packs(todo, default_lanes(todo, workers) if lanes is None else lanes)
        if any(len(g) > 1 for g in groups):
            echo(f"  {len(todo)} runs packed into {len(groups)} programs (lanes of one program: "
                 "runs that differ only in lane fields)")
        task = ray.remote(train_task)
        by_id = {g[0].run_id: g for g in groups}  # a pack by its first run
        pending: dict[Any, str] = {}

        def pid_file(run_id: str) -> Path:
            return _pid_file(out, run_id)

        def submit(group: list[RunSpec]) -> None:
            # Ray queues what does not fit; the task writes its pid files when it starts,
            # which is how sweep.json tells "queued" from "running" (a stale file goes first).
            for run in group:
                pid_file(run.run_id).unlink(missing_ok=True)
                entry = status.data["runs"][run.run_id]
                status.set(run.run_id, status="queued", attempts=entry["attempts"] + 1)
            name = group[0].run_id + (f" +{len(group) - 1}" if len(group) > 1 else "")
            ref = task.options(num_cpus=cpus_per_run, memory=sum(memory[r.run_id] for r in group),
                               max_retries=0, name=f"meigm:{name}").remote(
                [r.values for r in group], [str(out / r.run_id) for r in group],
                [r.label for r in group], [str(pid_file(r.run_id)) for r in group])
            pending[ref] = group[0].run_id

        for group in groups:
            submit(group)
        retries = {g[0].run_id: 0 for g in groups}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=STATUS_POLL_SECONDS)
            _mark_started(status, [r.run_id for first in pending.values() for r in by_id[first]], out)
            if not ready:
                continue
            first = pending.pop(ready[0])
            group = by_id[first]
            try:
                results = ray.get(ready[0])
            except Exception as exc:  # every task failure is recorded, retried or reported
                line, retryable = _error_line(exc)
                retry = retryable and retries[first] < max_retries
                if retry:
                    retries[first] += 1
                for run in group:
                    errors = [*status.data["runs"][run.run_id]["errors"], line]
                    if retry:
                        status.set(run.run_id, errors=errors)
                        echo(f"  retry {retries[first]}/{max_retries}: {run.run_id} ({line})")
                    else:
                        status.set(run.run_id, status="failed", errors=errors)
                        echo(f"  FAILED  {run.run_id}: {line}")
                if retry:
                    submit(group)
                continue
            for run, result in zip(group, results, strict=True):
                status.set(run.run_id, status="finished", wall_seconds=result["wall_seconds"])
                echo(f"  done    {run.run_id} ({result['wall_seconds']:.0f} s)")
    finally:
        if own_ray:
            ray.shutdown()
    failed = [k for k, v in status.data["runs"].items() if v["status"] == "failed"]
    echo(f"sweep {sweep.name}: {len(sweep.runs) - len(failed)} finished, {len(failed)} failed"
         + (f" ({', '.join(failed)})" if failed else "") + f"; status in {status.path}")
    return status.data


# ------------------------------------------------------------------ benchmark scripts
def report_script_parser(preset: str, description: str, laptop_report: Path) -> argparse.ArgumentParser:
    """The options shared by the scripts that run a built-in sweep and then report it
    (``benchmarks/skill.py``, ``benchmarks/fig4.py``): which budget, where the sweep and its
    report live, whether to run at all, and which runs."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="laptop", choices=("smoke", "laptop", "paper"))
    p.add_argument("--out", default=None, help=f"sweep directory (default runs/sweep_{preset}_<budget>)")
    p.add_argument("--report", default=None,
                   help=f"report directory (default {laptop_report} for the laptop budget, "
                        "else <out>/report)")
    p.add_argument("--report-only", action="store_true", help="do not run; report what is there")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="runs at a time (Ray's CPUs; default all cores), e.g. 1 beside other work")
    p.add_argument("--only", action="append", default=None, metavar="PATTERN",
                   help="run only the runs whose id <scenario>/<label> matches (as meigm sweep --only)")
    p.set_defaults(preset=preset, laptop_report=laptop_report)
    return p


def run_for_report(args: argparse.Namespace) -> tuple[Sweep, Path, Path]:
    """Run (or resume) the chosen runs of ``args.preset`` unless ``--report-only``; return
    the sweep, its directory and the report directory. Raises ``MeigmError`` on bad input."""
    sweep = load_sweep(args.preset, args.budget)
    sweep_dir = Path(args.out or f"runs/sweep_{args.preset}_{args.budget}")
    if not args.report_only:
        run_sweep(select_runs(sweep, args.only), sweep_dir, num_cpus=args.num_cpus)
    default = args.laptop_report if args.budget == "laptop" else sweep_dir / "report"
    return sweep, sweep_dir, Path(args.report) if args.report else default
