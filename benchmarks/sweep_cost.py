"""What a sweep costs on this machine: each run's compile time, training env steps/s and
evaluation time, measured, and the wall time they project for the whole run.

    python benchmarks/sweep_cost.py skill --only 'smax_*/qmix' --only 'smax_*/me_qmix'
    python benchmarks/sweep_cost.py fig4 --budget paper --leg 8000
    python benchmarks/sweep_cost.py skill --only 'smax_protoss_5_vs_5/me_qmix' --seeds 1,3,10
    python benchmarks/sweep_cost.py skill --budget smoke --leg 300 --only 'smax_3m/qmix'
    python benchmarks/sweep_cost.py skill --only 'smax_protoss_5_vs_5/me_qmix' --seeds 3 \
        --vary alpha_lr=3e-4,3e-3,3e-2,0.3     # 4 variants x 3 seeds as lanes of one program

Why: the sweeps issue 14 and 17 ask for on a GPU (the skill benchmark, Figure 4 at the
paper's batch of 512) take hours there too, and a lent machine is lent for minutes. What
fits is the cost of each run, taken apart into the pieces its wall time is made of:

* **compile** — the training chunk and the evaluation, compiled ahead of time on abstract
  shapes (``jit(...).lower(...).compile()``), with the persistent compilation cache off.
  With ``--compile-workers`` > 1 the runs'
  programs are compiled on a thread pool (XLA compiles without holding the GIL), each run
  measured as soon as its own programs are ready, so a run's compile seconds are taken
  beside the others' compiles: an upper bound of what it costs alone.
* **train env steps/s** — all seeds together, over ``--leg`` env steps per seed of the
  real training chunk, after the replay buffer holds one batch (the fill is not timed);
  the median of ``--repeats`` legs, run one after the other from where the last stopped.
* **eval s** — one greedy evaluation of ``test_episodes`` episodes per seed, median of
  ``--repeats``.
* **lanes** (``--vary FIELD=V1,V2,...``, repeatable): the grid's variants, which may differ
  only in lane fields (:mod:`meigm.lanes`), train as lanes of one program beside the
  run's own config, each with the run's seeds; env steps/s then count every lane.
* **projected wall** = compile + ``t_max`` · seeds / (train env steps/s) + evaluations ·
  eval s, with ``ceil(t_max / test_interval)`` evaluations; also at 1M and at the paper's
  10.05M env steps with the protocol's evaluation every 50k steps (``wall_1M_h``,
  ``wall_10M_h``), so one table prices a cell at both budgets.
* **memory** — before compiling, what the run will hold (``meigm.experiments.run.
  memory_parts``: training state with its replay buffers, roll-out, evaluation, update
  batch) and whether it passes the check every ``meigm train`` makes; a cell that fails
  it is a row that says so and why, and nothing is compiled for it. After compiling,
  XLA's own account of the training chunk (``memory_analysis``: arguments, outputs not
  aliased to them, temporaries), which is what the program needs at its peak. And the
  process's resident peak over the run's compile, fill, legs and evaluations
  (``cell_peak_rss_gb``): on Linux the kernel's peak counter is restarted before each
  run's compile (``/proc/self/clear_refs``), from the memory still resident then
  (``rss_at_start_gb``: the interpreter, jax, the previous runs' leftovers). Where it
  cannot be restarted (no ``/proc``, or ``--compile-workers`` > 1, whose compiles
  overlap) only the process's peak so far is recorded (``process_peak_rss_gb``).
* **resume**: with ``--json``, runs already in that file are kept and not measured again,
  so a long cost table (Table 2's 120 cells) can be stopped and continued, or filled in
  parts with different ``--only`` patterns.

The projection is an estimate, not a measurement of the run: it holds the leg's rate
for the whole budget. The fill (no updates) is charged at the training rate, and on SMAX
the episodes' lengths change as the agents learn, which changes both the collection's
work per env step and the trimmed update's length (``length_buckets``); a leg early in
training measures neither. Read the figure as the order of the run's wall time, and
set it beside a measured run where one exists (``results.json``'s ``wall_seconds``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.compilation_cache import compilation_cache

from meigm import config
from meigm.errors import MeigmError
from meigm.experiments.run import memory_check, memory_parts
from meigm.experiments.sweep import RunSpec, load_sweep, select_runs
from meigm.lanes import LANE_FIELDS
from meigm.program import Program, init_seeds, jit_run, make_program
from meigm.types import SEEDS


@dataclasses.dataclass
class Compiled:
    """One run's programs, compiled ahead of time, and what their compile took."""

    key: str  # "<run id> seeds=<S>"
    program: Program
    chunk: jax.stages.Compiled  # (state, t_target [S] int32) -> (state, metrics)
    evaluate: jax.stages.Compiled  # (params [S, ...], keys [S, 2]) -> metrics [S]
    compile_s: float
    rss_at_start_gb: float | None = None  # resident when its peak counter restarted; None: not restarted


def restart_peak_rss() -> float | None:
    """Restart the kernel's peak-resident counter of this process (Linux, ``VmHWM``) from
    what is resident now, and return that (GB); None where it cannot be restarted. Why:
    left alone the counter (which ``ru_maxrss`` reads too) only rises, so in a table of
    many runs it is the largest run's peak so far, not this run's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return proc_status_gb("VmRSS")
    except (OSError, ValueError):
        return None


def proc_status_gb(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    raise ValueError(f"no {field} in /proc/self/status")


def programs(runs: list[RunSpec], seeds: list[int] | None, overrides: dict,
             vary: dict[str, list] | None = None) -> list[tuple[str, Program]]:
    """Each selected run at each seed count, as the program it would train; with ``vary``
    ({lane field: values}) the program packs one variant per point of their grid."""
    out = []
    points = itertools.product(*vary.values()) if vary else ()
    grid = [dict(zip(vary, point, strict=True)) for point in points]
    for run in runs:
        for s in seeds or [run.values["seeds"]]:
            spec = RunSpec(run.run_id, run.label, {**run.values, **overrides, "seeds": s})
            if not grid:
                out.append((f"{run.run_id} seeds={s}", make_program(spec.config())))
                continue
            variants = [RunSpec(run.run_id, run.label, {**spec.values, **point}).config() for point in grid]
            out.append((f"{run.run_id} seeds={s} variants={len(variants)}",
                        make_program(variants[0], variants=variants[1:])))
    return out


def lower(key: str, program: Program) -> tuple[str, Program, jax.stages.Lowered, jax.stages.Lowered]:
    """Trace the chunk and the evaluation on abstract shapes (needs the GIL: done in turn)."""
    trainer, keys = program.trainer, program.lane_keys()
    state = jax.eval_shape(lambda k, h: init_seeds(trainer.init, k, h), keys, program.lane_hyper())
    chunk = jit_run(trainer, donate=True).lower(state, jax.ShapeDtypeStruct((program.lanes,), jnp.int32))
    evaluate = jax.jit(jax.vmap(trainer.evaluate, axis_name=SEEDS)).lower(
        state.learner.params, jax.ShapeDtypeStruct(keys.shape, keys.dtype))
    return key, program, chunk, evaluate


def compile_both(key: str, program: Program, chunk: jax.stages.Lowered,
                 evaluate: jax.stages.Lowered) -> Compiled:
    t0 = time.perf_counter()
    c, e = chunk.compile(), evaluate.compile()
    return Compiled(key, program, c, e, time.perf_counter() - t0)


def compiled_in_turn(todo: list[tuple[str, Program]], workers: int) -> Iterator[Compiled]:
    """The programs compiled, in the order they finish: one after another (each measured
    before the next compiles), or on a pool of ``workers`` threads, traced in turn."""
    if workers <= 1:
        for key, program in todo:
            start = restart_peak_rss()  # this run's peak, from its compile on
            yield dataclasses.replace(compile_both(*lower(key, program)), rss_at_start_gb=start)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(compile_both, *lower(key, program)) for key, program in todo]
        for fut in as_completed(futures):
            yield fut.result()


def xla_bytes(compiled: jax.stages.Compiled) -> int:
    """What XLA says the program holds at once: its arguments, its outputs where they do
    not reuse (alias) an argument's buffer, and its temporaries."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)


def train_legs(chunk: jax.stages.Compiled, program: Program, keys: jax.Array,
               hyper: dict[str, np.ndarray], leg: int, repeats: int) -> dict[str, Any]:
    """From a fresh start (``keys`` [L, 2], ``hyper`` {field: [L]}), fill the replay buffer
    to one batch (not timed), then ``repeats`` timed legs of ``leg`` env steps per lane:
    the env steps each leg made (all lanes) and its seconds."""
    cfg, trainer = program.cfg, program.trainer
    ts = jax.block_until_ready(init_seeds(trainer.init, keys, hyper))  # its allocation untimed
    buffer = getattr(ts.data, "buffer", None)
    t0 = time.perf_counter()
    # Fill to one batch (replay learners) with the same compiled chunk, a collection at a time.
    while buffer is not None and int(np.min(np.asarray(ts.data.buffer.size))) < cfg.batch_size:
        ts, _ = chunk(ts, jnp.asarray(np.asarray(ts.t_env) + 1, jnp.int32))
    fill_s = time.perf_counter() - t0
    steps, secs = [], []
    fill_steps = int(np.min(np.asarray(ts.t_env)))
    for _ in range(repeats):
        before = np.asarray(ts.t_env).astype(np.int64)
        t0 = time.perf_counter()
        ts, metrics = chunk(ts, jnp.asarray(before + leg, jnp.int32))
        jax.block_until_ready(metrics)
        secs.append(time.perf_counter() - t0)
        steps.append(int(np.sum(np.asarray(ts.t_env) - before)))
    return {"ts": ts, "fill_env_steps": fill_steps, "fill_s": fill_s, "steps": steps, "secs": secs}


def alone(c: Compiled, leg: int, repeats: int) -> dict[str, Any]:
    """Each lane of ``c``'s program trained alone, as a one-seed program with that lane's
    seed key and hyper-parameters (one compile: keys and lane fields are data), over the
    same legs: the work the packed program does, done as separate programs. Returns the
    one-seed compile and, per leg, the lanes' steps and seconds summed."""
    program = c.program
    one = make_program(dataclasses.replace(program.members[0], seeds=1))
    solo = compile_both(*lower("alone", one))
    keys, hyper = program.lane_keys(), program.lane_hyper()
    steps, secs = [0] * repeats, [0.0] * repeats
    for lane in range(program.lanes):
        r = train_legs(solo.chunk, one, keys[lane:lane + 1],
                       {k: v[lane:lane + 1] for k, v in hyper.items()}, leg, repeats)
        steps = [a + b for a, b in zip(steps, r["steps"], strict=True)]
        secs = [a + b for a, b in zip(secs, r["secs"], strict=True)]
    return {"compile_s": solo.compile_s, "steps": steps, "secs": secs}


def measure(c: Compiled, leg: int, repeats: int, against_alone: bool = False) -> dict[str, float]:
    """Train env steps/s over ``repeats`` legs of ``leg`` env steps per seed, after the
    buffer holds a batch, and one evaluation's seconds (medians). With ``against_alone``
    the same legs are also trained lane by lane as one-seed programs (:func:`alone`), and
    ``cost_vs_alone`` is the packed program's seconds per env step over theirs, leg by
    leg (median): 1.0 when a lane costs what its work costs alone."""
    cfg = c.program.cfg
    keys = c.program.lane_keys()
    legs = train_legs(c.chunk, c.program, keys, c.program.lane_hyper(), leg, repeats)
    ts = legs.pop("ts")
    rates = [n / t for n, t in zip(legs["steps"], legs["secs"], strict=True)]
    jax.block_until_ready(c.evaluate(ts.learner.params, keys))  # the first call may still set up
    evals = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(c.evaluate(ts.learner.params, keys))
        evals.append(time.perf_counter() - t0)
    rate, eval_s = statistics.median(rates), statistics.median(evals)
    extra: dict[str, Any] = {}
    if c.rss_at_start_gb is not None:
        extra = {"rss_at_start_gb": c.rss_at_start_gb, "cell_peak_rss_gb": proc_status_gb("VmHWM")}
    if against_alone:
        solo = alone(c, leg, repeats)
        solo_rates = [n / t for n, t in zip(solo["steps"], solo["secs"], strict=True)]
        extra |= {"alone_compile_s": solo["compile_s"],
                 "alone_env_steps_per_s": statistics.median(solo_rates),
                 "cost_vs_alone": statistics.median(
                     a / p for a, p in zip(solo_rates, rates, strict=True))}
    return {"alg": cfg.alg, "env": cfg.env, "seeds": cfg.seeds, "lanes": c.program.lanes,
            "t_max": cfg.t_max,
            "batch_size": cfg.batch_size, "n_envs": cfg.n_envs, "test_episodes": cfg.test_episodes,
            "compile_s": c.compile_s, "fill_env_steps": legs["fill_env_steps"],
            "fill_s": legs["fill_s"], "leg_env_steps": legs["steps"], "leg_s": legs["secs"],
            "train_env_steps_per_s": rate, "eval_s": eval_s, **extra,
            "chunk_xla_gb": xla_bytes(c.chunk) / 1e9, "eval_xla_gb": xla_bytes(c.evaluate) / 1e9,
            "process_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,  # kB
            **projection(c.compile_s, rate, eval_s, cfg.t_max, c.program.lanes, cfg.test_interval),
            **{f"wall_{name}_h": projection(c.compile_s, rate, eval_s, t_max, c.program.lanes,
                                            PROTOCOL_TEST_INTERVAL)["projected_wall_s"] / 3600
               for name, t_max in BUDGETS.items()}}


#: The budgets every cell is priced at, and the protocol's evaluation interval
#: (docs/reproduction.md: an evaluation every 50k env steps).
BUDGETS = {"1M": 1_000_000, "10M": 10_050_000}
PROTOCOL_TEST_INTERVAL = 50_000


def refused(program: Program) -> str | None:
    """Why the run cannot fit in this machine's memory now (the check ``meigm train``
    makes before compiling), or None."""
    try:
        memory_check(program)
    except MeigmError as exc:
        return str(exc)
    return None


def projection(compile_s: float, rate: float, eval_s: float, t_max: int, seeds: int,
               test_interval: int) -> dict[str, float]:
    """A run's wall time from its pieces: every seed trains ``t_max`` env steps at the
    program's ``rate`` (env steps/s, all seeds), and it evaluates at every multiple of
    ``test_interval`` up to ``t_max`` and once at ``t_max`` (``eval_target``'s grid)."""
    evaluations = math.ceil(t_max / test_interval)
    train_s = t_max * seeds / rate
    return {"evaluations": evaluations, "projected_train_s": train_s,
            "projected_wall_s": compile_s + train_s + evaluations * eval_s}


def render(table: dict) -> str:
    """A ``--json`` file as Markdown: every measured or refused run, one row each (compile,
    speed, evaluation, memory, projected walls), then the projected 1M wall as a grid of
    scenarios × labels when the runs are one per cell (Table 2's cost table)."""
    rows = table["rows"]
    out = [f"`{table['preset']}` at its `{table['budget']}` budget on {table['device']}, jax "
           f"{table['jax']}; legs of {table['leg']} env steps, median of {table['repeats']}.", "",
           "| run | seeds | compile s | train env steps/s | eval s (episodes) | memory GB: "
           "estimate / XLA chunk / resident peak | 1M h | 10M h |", "|---|---|---|---|---|---|---|---|"]
    so_far = False
    for r in rows.values():
        estimate = sum(v for k, v in r["memory_estimate_gb"].items() if k != "replay buffers")
        if "refused" in r:
            out.append(f"| {r['run']} | {r['seeds']} | – | – | – | {estimate:.1f} / – / – | "
                       f"does not fit: {r['refused']} | – |")
            continue
        out.append(f"| {r['run']} | {r['seeds']} | {r['compile_s']:.0f} | "
                   f"{r['train_env_steps_per_s']:.0f} | {r['eval_s']:.2f} ({r['test_episodes']}) | "
                   f"{estimate:.1f} / {r['chunk_xla_gb']:.1f} / {peak(r)} | "
                   f"{r['wall_1M_h']:.1f} | {r['wall_10M_h']:.1f} |")
        so_far |= "cell_peak_rss_gb" not in r
    if so_far:
        out += ["", "\u2020 the process's peak so far (its largest run's, not necessarily this "
                "run's): measured before the peak counter was restarted for each run."]
    cells = [r["run"].split("/", 1) for r in rows.values()]
    scenarios = list(dict.fromkeys(c[0] for c in cells))
    labels = list(dict.fromkeys(c[1] for c in cells))
    if len(cells) == len(set(map(tuple, cells))) and len(scenarios) > 1:
        by_cell = {tuple(r["run"].split("/", 1)): r for r in rows.values()}
        out += ["", "Projected wall of one seed at 1M env steps, hours (– not measured; "
                "\u2717 does not fit):", "",
                "| scenario | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for scen in scenarios:
            cell = [by_cell.get((scen, lab)) for lab in labels]
            out.append(f"| {scen} | " + " | ".join(
                "–" if r is None else "\u2717" if "refused" in r else f"{r['wall_1M_h']:.1f}"
                for r in cell) + " |")
    return "\n".join(out)


def peak(row: dict) -> str:
    """A row's resident peak: the run's own (``cell_peak_rss_gb``), or the process's peak
    so far, marked \u2020, for rows measured without a restart."""
    if "cell_peak_rss_gb" in row:
        return f"{row['cell_peak_rss_gb']:.1f}"
    return f"{row['process_peak_rss_gb']:.1f}\u2020"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", nargs="?",
                   help="a built-in sweep preset (skill, fig4, ...) or a preset file")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="print a --json file's figures as Markdown tables and exit")
    p.add_argument("--budget", default=None, choices=("smoke", "laptop", "paper"),
                   help="the preset's budget (default: the preset's own)")
    p.add_argument("--only", action="append", default=None, metavar="PATTERN",
                   help="only the runs whose id <scenario>/<label> matches (as meigm sweep --only)")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seed counts, each a separate program (default: the preset's)")
    p.add_argument("--vary", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="pack the grid of these lane fields' values as lanes of one program")
    p.add_argument("--leg", type=int, default=10000, help="timed env steps per seed per repeat")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--compile-workers", type=int, default=1,
                   help="programs compiled at once (a thread pool); >1 on a many-core host")
    p.add_argument("--against-alone", action="store_true",
                   help="also train every lane alone as a one-seed program over the same legs, "
                        "and report what a packed lane costs against that (cost_vs_alone)")
    p.add_argument("--json", default=None, help="also write the figures here (after every run)")
    p.add_argument("overrides", nargs="*", default=[], help="config key=value for every run")
    return p


@contextlib.contextmanager
def no_persistent_cache() -> Iterator[None]:
    """Compile every program, never read or write JAX's persistent compilation cache (which
    importing meigm turns on), then put things back as they were.

    Why: compile seconds are a figure here, and a cache hit takes a second. Turning the
    flag off is not enough: JAX decides once per process whether it uses the cache, at the
    first compile (an import may already have compiled), and keeps that answer until the
    cache is reset."""
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
        compilation_cache.reset_cache()


def main() -> None:
    with no_persistent_cache():
        _main()


def _main() -> None:
    p = parser()
    a = p.parse_intermixed_args()  # overrides may come after the options
    if a.render is not None:
        try:
            print(render(json.loads(Path(a.render).read_text())))
        except (OSError, ValueError, KeyError) as exc:
            p.exit(2, f"error: cannot render {a.render}: {exc!r}\n")
        return
    if a.preset is None:
        p.exit(2, "error: give a sweep preset to measure, or --render JSON\n")
    try:
        sweep = select_runs(load_sweep(a.preset, a.budget), a.only)
        seeds = None if a.seeds is None else [int(s) for s in a.seeds.split(",")]
        vary = {}
        for item in a.vary:
            field_name, _, values = item.partition("=")
            if field_name not in LANE_FIELDS or not values:
                raise MeigmError(f"--vary takes FIELD=V1,V2,... with a lane field, one of "
                                 f"{', '.join(sorted(LANE_FIELDS))}; got {item!r}")
            vary[field_name] = [config.parse_overrides([f"{field_name}={v}"])[field_name]
                                for v in values.split(",")]
        todo = programs(list(sweep.runs), seeds, config.parse_overrides(a.overrides), vary)
    except MeigmError as exc:
        p.exit(2, f"error: {exc}\n")
    except ValueError:
        p.exit(2, f"error: --seeds takes comma-separated integers, got {a.seeds!r}\n")
    device = jax.devices()[0]
    print(f"# sweep {sweep.name}, budget {sweep.budget}; leg {a.leg} env steps per seed, median of "
          f"{a.repeats}; {platform.machine()} {os.cpu_count()} cores, {device.platform} "
          f"({device.device_kind}), jax {jax.__version__}; {a.compile_workers} compile worker(s)")
    print("| run | seeds | lanes | compile s | train env steps/s (all lanes) | eval s (episodes) "
          "| XLA GB (chunk) | 1M h | 10M h |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    old = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else {}
    rows: dict[str, dict] = old.get("rows", {})  # kept, whatever --only selects this time
    t_start = time.perf_counter()

    def save() -> None:
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(
                {"preset": sweep.name, "budget": sweep.budget, "leg": a.leg, "repeats": a.repeats,
                 "device": f"{device.platform} ({device.device_kind})", "jax": jax.__version__,
                 "compile_workers": a.compile_workers, "rows": rows}, indent=1))

    fits = []
    for key, program in todo:
        if key in rows:
            continue
        estimate = {k: v / 1e9 for k, v in memory_parts(program).items()}
        why = refused(program)
        if why is None:
            fits.append((key, program))
            continue
        rows[key] = {"run": key.split(" seeds=")[0], "alg": program.cfg.alg, "env": program.cfg.env,
                     "seeds": program.cfg.seeds, "lanes": program.lanes, "refused": why,
                     "memory_estimate_gb": estimate}
        print(f"| {rows[key]['run']} | {program.cfg.seeds} | {program.lanes} | does not fit: {why} |",
              flush=True)
        save()
    estimates = {key: {k: v / 1e9 for k, v in memory_parts(program).items()} for key, program in fits}
    for c in compiled_in_turn(fits, a.compile_workers):
        r = rows[c.key] = {"run": c.key.split(" seeds=")[0],
                           **measure(c, a.leg, a.repeats, a.against_alone),
                           "memory_estimate_gb": estimates[c.key]}
        del c  # its executables: the next run's memory
        vs = f" ({r['cost_vs_alone']:.2f}x alone)" if "cost_vs_alone" in r else ""
        print(f"| {r['run']} | {r['seeds']} | {r['lanes']} | {r['compile_s']:.0f} | "
              f"{r['train_env_steps_per_s']:.0f}{vs} | "
              f"{r['eval_s']:.2f} ({r['test_episodes']}) | {r['chunk_xla_gb']:.2f} | "
              f"{r['wall_1M_h']:.1f} | {r['wall_10M_h']:.1f} |", flush=True)
        save()
    total = sum(r.get("projected_wall_s", 0.0) for r in rows.values())
    print(f"\n{len(rows)} runs: projected {total / 3600:.2f} h one after another at the budget's "
          f"t_max; this measurement took {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
