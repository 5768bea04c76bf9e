"""``meigm`` command line: train, compare, config, sweep, plot, table, eval, export, envs.

User errors (unknown algorithm, environment or config key, wrong types, bad sizes,
missing files, an existing run directory) print one line naming the problem and the
allowed values and exit with status 2; nothing already written is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from meigm.errors import MeigmError

#: ε-greedy baselines anneal ε over 100k env steps, pymarl2's schedule and the authors'
#: (the ``table1`` preset's too): on the matrix game's 5k steps their data stays
#: near-uniform, which is what the paper's QMIX table was learned from.
PAPER_EPSILON = ["epsilon_anneal_steps=100000"]

#: The comparison of the paper's Table 1: label -> (algorithm, config overrides).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "me_qmix": ("me_qmix", []),
    "qmix": ("qmix", PAPER_EPSILON),
    "vdn": ("vdn", PAPER_EPSILON),
    "me_vdn": ("me_vdn", []),
    "soft_qmix": ("soft_qmix", []),  # the authors' released code (meigm/learners/soft_qmix.py)
    "+entropy": ("me_qmix", ["transform=none"]),
    "mlp": ("me_qmix", ["transform=mlp"]),
    "fixed_alpha": ("me_qmix", ["learn_alpha=false"]),
    "me_qplex": ("me_qplex", []),
    "qplex": ("qplex", PAPER_EPSILON),
    "fop": ("fop", []),
    "mappo": ("mappo", []),
    "ippo": ("ippo", []),
    "hasac": ("hasac", []),
}
DEFAULT_COMPARE = ("me_qmix", "qmix", "vdn", "me_vdn", "+entropy", "soft_qmix")

EPILOG = """Every config field can be set with key=value after the options (documented in
meigm/config.py); a --preset YAML file sets several at once, key=value wins over it.

examples:
  meigm compare                                   # Table 1: six algorithms x 10 seeds
  meigm train --alg me_qmix --env matrix:table1 --seeds 10
  meigm train --alg qmix --env matrix:climbing lr=5e-4 batch_size=64
  meigm train --alg me_qmix --env matrix:custom 'env_args.payoff=[[1,0],[0,2]]'
  meigm config --alg me_qmix --env smax:3m        # every key: value, source, documentation
  meigm eval runs/exp1 --render episode.gif      # re-evaluate the newest checkpoint, animate
  meigm export runs/exp1 team.npz                 # one seed's agents as NumPy (+ team_policy.py)
  meigm sweep table3 --budget smoke               # a paper preset (meigm sweep --list)
  meigm plot runs/sweep_table3_smoke               # curves with 95% bootstrap bands
  meigm table runs/sweep_table3_smoke              # Table 2 layout, IQM, P(improvement)
  meigm envs
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_args(p: argparse.ArgumentParser, seeds_default: int = 1) -> None:
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help=f"how many independent seeds, trained together in one compiled program "
                        f"(default {seeds_default})")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="the first seed (default 0): the seeds are S, S+1, ..., S+N-1")
    p.add_argument("--preset", default=None, metavar="FILE.yaml",
                   help="YAML file of config keys; key=value overrides win over it")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="set any config field, anywhere on the line (`meigm config` lists "
                        "them with their defaults and docs)")


def _add_run_args(p: argparse.ArgumentParser, seeds_default: int = 1) -> None:
    _add_config_args(p, seeds_default)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from meigm.envs import registered
    from meigm.learners import ALGORITHMS

    parser = _Parser(
        prog="meigm",
        description="Maximum-entropy cooperative MARL with IGM credit assignment (ME-IGM), in JAX.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    from meigm.config import Config

    p = sub.add_parser("train", help="train one algorithm on one scenario (all seeds at once)")
    p.add_argument("--alg", default=None,
                   help=f"algorithm: {', '.join(ALGORITHMS)} (default {Config.alg})")
    p.add_argument("--env", default=None,
                   help=f"scenario (default {Config.env}; `meigm envs` lists them)")
    p.add_argument("--out", default=None, metavar="RUN_DIR",
                   help="run directory (default runs/<alg>_<env>_<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run (or grid) from its newest complete "
                        "checkpoint (its config.yaml is the config; no other options)")
    p.add_argument("--vary", action="append", default=None, metavar="FIELD=V1,V2,...",
                   help="train a grid over a lane field (a learning rate, alpha_init, "
                        "target_entropy, epsilon_anneal_steps, gamma, ...; repeat for a product) "
                        "as lanes of one compiled program, one run directory per point inside --out")
    _add_run_args(p)

    p = sub.add_parser("compare", help="the paper's Table 1: several algorithms on one game")
    p.add_argument("--env", default="matrix:table1", help="scenario (default matrix:table1)")
    p.add_argument("--algs", default=",".join(DEFAULT_COMPARE),
                   help=f"comma-separated variants from: {', '.join(VARIANTS)} "
                        f"(default {','.join(DEFAULT_COMPARE)})")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for the comparison and one run directory per variant")
    _add_run_args(p, seeds_default=10)

    p = sub.add_parser(
        "config", help="print the resolved config: every key, its value, where it came from, its doc",
        description="Resolve a config exactly as `meigm train` would (defaults, then the "
                    "preset, options and key=value overrides, then the scenario's and the "
                    "algorithm's defaults) and print every key with its value, its source "
                    "and its documentation. Nothing is trained or written.",
    )
    p.add_argument("--alg", default=None, help=f"algorithm (default {Config.alg})")
    p.add_argument("--env", default=None, help=f"scenario (default {Config.env})")
    p.add_argument("--yaml", action="store_true",
                   help="print only the resolved config as YAML (a --preset file for later)")
    _add_config_args(p)

    p = sub.add_parser(
        "eval", help="re-evaluate a saved run's checkpoint greedily (reproduces its logged test metrics)",
        description="Reload RUN_DIR/config.yaml and a checkpoint (default: the newest), run the "
                    "greedy evaluation of every seed with the keys training used at that point, "
                    "print a per-seed table and write RUN_DIR/eval.json. With the final checkpoint "
                    "and the default episode count the numbers equal the last ones in metrics.jsonl.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by meigm train")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="checkpoint file, or its name under RUN_DIR/checkpoints (default: the newest)")
    p.add_argument("--episodes", type=int, default=None, metavar="N",
                   help="greedy episodes per seed (default: the run's test_episodes; "
                        "another count no longer reproduces the log)")
    p.add_argument("--render", default=None, metavar="OUT.gif",
                   help="also animate one greedy episode to a GIF (smax and overcooked scenarios)")
    p.add_argument("--seed-index", type=int, default=None, metavar="I",
                   help="which of the run's seeds --render animates (0-based, default 0; "
                        "only with --render)")

    p = sub.add_parser(
        "export", help="write one seed's agent network as a NumPy policy that runs without meigm",
        description="Write the agent network of one seed of RUN_DIR (from a checkpoint, default: "
                    "the newest) to OUT.npz (weights and metadata, no pickle) and the NumPy "
                    "reference implementation of greedy decentralised execution next to it as "
                    "<OUT stem>_policy.py, which needs only NumPy (see its docstring).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by meigm train")
    p.add_argument("out", metavar="OUT.npz", help="output file; its directory must exist")
    p.add_argument("--force", action="store_true",
                   help="overwrite OUT.npz and its _policy.py if they exist")
    p.add_argument("--seed-index", type=int, default=0, metavar="I",
                   help="which of the run's seeds to export (0-based, default 0)")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="checkpoint file, or its name under RUN_DIR/checkpoints (default: the newest)")

    p = sub.add_parser(
        "sweep", help="a grid of algorithms x scenarios x overrides on Ray (resumable)",
        description="Run a sweep preset: every configuration is one Ray task (its seeds train "
                    "together in one program) writing one run directory under --out. Finished "
                    "runs are skipped, so re-running a sweep resumes it; a failed or killed run "
                    "is retried up to --max-retries times. Built-in presets: "
                    + ", ".join(_builtin_presets()) + ".",
    )
    p.add_argument("preset", nargs="?", metavar="PRESET",
                   help="a built-in preset name (see --list) or a sweep YAML file")
    p.add_argument("--budget", default=None, help="smoke, laptop or paper (default: the preset's)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="sweep directory (default runs/sweep_<name>_<budget>)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of a local Ray")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs Ray reserves per run")
    p.add_argument("--max-retries", type=int, default=2, help="retries of a failed run (default 2)")
    p.add_argument("--only", action="append", default=None, metavar="PATTERN",
                   help="run only the runs whose id <scenario>/<label> matches this shell pattern, "
                        "e.g. 'smax_protoss_5_vs_5/hasac' or '*/me_*' (repeatable)")
    p.add_argument("--lanes", type=int, default=None, metavar="N",
                   help="pack runs that differ only in lane fields (learning rates, temperatures, "
                        "epsilon's schedule, seed, ...) into programs of at most N lanes "
                        "(variants x seeds), each still writing its own run directory; 1: every "
                        "run its own program (default: on the CPU as many as keep every worker busy and fit "
                        "a worker's share of memory; 16 on an accelerator)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    p.add_argument("--list", action="store_true", help="list the built-in presets and exit")

    for name, what in (("plot", "learning curves (PNG and PDF), mean and 95%% bootstrap band over seeds"),
                       ("table", "final test metrics as Markdown and LaTeX tables, with IQM and "
                                 "probability of improvement (rliable)")):
        p = sub.add_parser(name, help=what)
        p.add_argument("runs", nargs="+", metavar="RUN",
                       help="run directories, or directories holding them (a sweep)")
        p.add_argument("--out", default=None, metavar="DIR",
                       help="output directory (default: the first RUN if it is a sweep, else .)")
        p.add_argument("--metric", default=None,
                       help="metric key (default test/won, else test/soups, else test/return)")
        p.add_argument("--bootstrap-seed", type=int, default=0, metavar="S",
                       help="seed of the bootstrap resampling behind the intervals (default 0)")
        if name == "plot":
            p.add_argument("--reference", action="append", default=[], metavar="LABEL=VALUE",
                           help="a dashed horizontal line (e.g. random=-27.5); repeatable")
            p.add_argument("--x", default="t_env", choices=("t_env", "wall_seconds"),
                           help="x axis: env steps (default) or wall-clock seconds since each "
                                "run started, compile included (time to skill)")
            p.add_argument("--max-steps", type=int, default=None, metavar="N",
                           help="draw each seed only up to N env steps (its evaluation at N "
                                "included), to compare runs of different budgets")

    sub.add_parser("envs", help="list registered scenarios and their sizes")
    del registered
    return parser


def _builtin_presets() -> list[str]:
    from meigm.experiments.sweep import builtin_presets

    return builtin_presets()


def _config(alg: str | None, env: str | None, args: argparse.Namespace,
            extra: list[str] | None = None):
    from meigm import config

    fields: dict[str, Any] = {"alg": alg, "env": env, "seeds": args.seeds, "seed": args.seed}
    return config.build(args.preset, [*(extra or []), *args.overrides], **fields)


def _print_view(label: str, results: dict[str, Any]) -> None:
    from meigm.envs import make_env
    from meigm.experiments.diagnostics import action_names, format_view

    view = results.get("first_step")
    if view is None:
        return
    cfg = results["config"]
    env = make_env(cfg.env, cfg.env_args)
    if getattr(env, "payoff", None) is None:  # only games with a payoff table get Table 1
        return
    print(format_view(view, label, action_names(env.spec.n_actions), getattr(env, "payoff", None),
                      view["has_policy"], has_q_tot=view.get("has_q_tot", True)))


def _summary_line(label: str, results: dict[str, Any]) -> str:
    from meigm.experiments.diagnostics import optimal_fraction_text
    from meigm.experiments.run import final_metric

    ret = final_metric(results)
    line = f"{label:>12}: test return {np.mean(ret):7.2f} ± {np.std(ret):5.2f}"
    view = results.get("first_step")
    if view is not None and "fraction_optimal" in view:
        line += f" | optimal joint action in {optimal_fraction_text(view)}"
        if view["has_policy"] and view.get("has_q_tot", True):
            line += f" | misaligned seeds {view['misaligned_seeds']}"
    return line + f" | {results['wall_seconds']:.0f} s"


def _parse_vary(items: list[str]) -> dict[str, list[Any]]:
    """``--vary FIELD=V1,V2,...`` options -> {field: [values]}, each value parsed as a
    ``key=value`` override is."""
    from meigm.config import parse_overrides

    vary: dict[str, list[Any]] = {}
    for item in items:
        name, _, values = item.partition("=")
        if not name or not values or name in vary:
            raise MeigmError(f"--vary takes FIELD=V1,V2,... once per field, got {item!r}")
        vary[name] = [parse_overrides([f"{name}={v}"])[name] for v in values.split(",")]
    return vary


def _print_grid(grid: dict[str, dict[str, Any]], out: Path) -> int:
    for name, results in grid.items():
        print(_summary_line(name, results))
    print(f"grid directory: {out} ({len(grid)} runs, trained as lanes of one program)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from meigm.api import train, train_grid
    from meigm.experiments.run import default_run_dir
    from meigm.lanes import GRID_FILE

    if args.resume is not None:
        given = [f"--{k}" for k in ("alg", "env", "out", "seeds", "seed", "preset", "vary")
                 if getattr(args, k) is not None] + list(args.overrides)
        if given:
            raise MeigmError(f"--resume takes no other options (got {' '.join(given)}): a resumed "
                             "run keeps its own config.yaml")
        if (Path(args.resume) / GRID_FILE).is_file():
            return _print_grid(train_grid(None, None, args.resume, resume=True,
                                          progress=not args.no_progress), Path(args.resume))
        results = train(None, args.resume, progress=not args.no_progress, resume=True)
        print(_summary_line(results["config"].alg, results))
        print(f"run directory: {results['run_dir']}")
        return 0
    cfg = _config(args.alg, args.env, args)
    out = Path(args.out) if args.out else default_run_dir(cfg)
    if args.vary is not None:
        vary = _parse_vary(args.vary)
        return _print_grid(train_grid(cfg, vary, out, progress=not args.no_progress), out)
    results = train(cfg, out, progress=not args.no_progress)
    _print_view(cfg.alg, results)
    print(_summary_line(cfg.alg, results))
    print(f"run directory: {results['run_dir']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from meigm.api import train
    from meigm.experiments.run import prepare_run_dir

    labels = [s.strip() for s in args.algs.split(",") if s.strip()]
    unknown = [s for s in labels if s not in VARIANTS]
    if unknown or not labels:
        raise MeigmError(f"unknown variant(s) {unknown or labels}; allowed: {', '.join(VARIANTS)}")
    if args.seeds is None:
        args.seeds = 10
    configs = {label: _config(VARIANTS[label][0], args.env, args, VARIANTS[label][1])
               for label in labels}  # validate every config before training anything
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    root = Path(args.out) if args.out else Path("runs") / f"compare_{args.env.replace(':', '-')}_{stamp}"
    if (root / "comparison.json").exists():
        raise MeigmError(f"{root} already holds a comparison; choose another --out")
    for label in labels:
        prepare_run_dir(root / label.replace("+", "plus_"))
    summary: dict[str, Any] = {"env": args.env, "seeds": args.seeds, "variants": {}}
    lines = []
    for label, cfg in configs.items():
        results = train(cfg, root / label.replace("+", "plus_"), progress=not args.no_progress)
        _print_view(label, results)
        lines.append(_summary_line(label, results))
        view = results.get("first_step") or {}
        summary["variants"][label] = {
            "alg": cfg.alg,
            "overrides": VARIANTS[label][1],
            "run_dir": results["run_dir"],
            "fraction_optimal": view.get("fraction_optimal"),
            "fraction_optimal_ci95": view.get("fraction_optimal_ci95"),
            "misaligned_seeds": (view.get("misaligned_seeds")
                                 if view.get("has_policy") and view.get("has_q_tot", True) else None),
            "greedy_joint_actions": [e["greedy_names"] for e in view.get("per_seed", [])],
            "test_return": [float(x) for x in [r["test/return"] for r in results["final"]]],
            "wall_seconds": results["wall_seconds"],
        }
    print(f"\n== {args.env}, {args.seeds} seeds per algorithm")
    print("\n".join(lines))
    (root / "comparison.json").write_text(json.dumps(summary, indent=1))
    (root / "comparison.txt").write_text("\n".join(lines) + "\n")
    print(f"saved: {root / 'comparison.json'}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import textwrap

    import yaml

    from meigm import config
    from meigm.config import GLOBAL_DEFAULTS, field_docs, value_sources
    from meigm.learners import ALGORITHMS
    from meigm.program import resolve_config

    given = {"alg": args.alg, "env": args.env, "seeds": args.seeds, "seed": args.seed}
    raw = config.build(args.preset, args.overrides, **given)
    cfg, env = resolve_config(raw)
    if args.yaml:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    sources = value_sources(args.preset, args.overrides, **given)
    scenario = dict(env.spec.config_defaults)
    own = getattr(ALGORITHMS[cfg.alg][0], "config_defaults", {})  # beat the scenario's
    docs = field_docs()
    print(f"# {cfg.alg} on {cfg.env}: the resolved config (`meigm config --yaml` for a preset file)")
    for key, value in cfg.to_dict().items():
        if key in sources:
            source = sources[key]
        elif getattr(raw, key) == value:
            source = "default"
        elif key in own:
            source = f"algorithm {cfg.alg}"
        elif key in scenario:
            source = f"scenario {cfg.env}"
        elif key in GLOBAL_DEFAULTS:
            source = "default"
        elif key == "t_max":
            source = f"scenario {cfg.env}'s budget"
        else:
            source = "derived (see the doc)"
        print(f"{key} = {json.dumps(value)}    [{source}]")
        for line in textwrap.wrap(docs.get(key, ""), 96):
            print(f"    {line}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from meigm.experiments.evaluate import (
        check_render,
        evaluate_run,
        format_table,
        load_run,
        render_run,
        write_json,
    )

    if args.seed_index is not None and args.render is None:
        raise MeigmError("--seed-index chooses the seed --render animates; without --render "
                         "every seed is evaluated (add --render OUT.gif, or drop --seed-index)")
    seed_index = args.seed_index or 0
    run = load_run(args.run_dir, args.checkpoint, args.episodes,
                   warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    if args.render is not None:
        check_render(run, args.render, seed_index)  # before the evaluation, not after
    result = evaluate_run(run)
    print(f"{run.cfg.alg} on {run.cfg.env}: {run.checkpoint} "
          f"({result['test_episodes']} greedy episodes per seed)")
    from meigm.provenance import describe, provenance, recorded

    print("trained with " + describe(recorded(run.run_dir)).removeprefix("provenance: "))
    result["provenance"] = provenance()
    print("evaluated with " + describe(result["provenance"]).removeprefix("provenance: "))
    print(format_table(result))
    if result["reproduces_log"] is not None:
        print("identical to metrics.jsonl at these env steps" if result["reproduces_log"]
              else "differs from metrics.jsonl at these env steps (other episode count, machine or version?)")
    if args.render is not None:
        result["render"] = render_run(run, args.render, seed_index)
        r = result["render"]
        print(f"rendered seed {r['seed']}: {r['length']} steps, return {r['return']:.2f} -> {r['path']}")
    write_json(run.run_dir / "eval.json", result)
    print(f"saved: {run.run_dir / 'eval.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from meigm.experiments.export import export_run, policy_module_path

    out = export_run(args.run_dir, args.out, seed_index=args.seed_index, checkpoint=args.checkpoint,
                     force=args.force)
    print(f"saved: {out} (agent network of seed index {args.seed_index})")
    print(f"saved: {policy_module_path(out)} (NumPy policy: Policy.load({str(out)!r}))")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from meigm.experiments.sweep import load_sweep, run_sweep, select_runs

    if args.list:
        from meigm.config import load_yaml
        from meigm.experiments.sweep import preset_path

        for name in _builtin_presets():
            desc = " ".join(str(load_yaml(preset_path(name)).get("description", "")).split())
            print(f"{name:<8} {desc}")
        return 0
    if args.preset is None:
        raise MeigmError("give a preset name or file (meigm sweep --list shows the built-in ones)")
    sweep = load_sweep(args.preset, args.budget)
    out = Path(args.out) if args.out else Path("runs") / f"sweep_{sweep.name}_{sweep.budget}"
    sweep = select_runs(sweep, args.only)
    status = run_sweep(sweep, out, address=args.address, max_retries=args.max_retries,
                       num_cpus=args.num_cpus, cpus_per_run=args.cpus_per_run, dry_run=args.dry_run,
                       lanes=args.lanes)
    return 1 if any(r.get("status") == "failed" for r in status["runs"].values()) else 0


def _analysis_out(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    first = Path(args.runs[0])
    return first if (first / "sweep.json").is_file() else Path(".")


def cmd_plot(args: argparse.Namespace) -> int:
    from meigm.experiments.analysis import plot_runs

    references = {}
    for item in args.reference:
        label, sep, value = item.rpartition("=")
        try:
            if not sep or not label:
                raise ValueError
            references[label] = float(value)
        except ValueError:
            raise MeigmError(f"--reference must be LABEL=NUMBER, got {item!r}") from None
    if args.max_steps is not None and args.max_steps <= 0:
        raise MeigmError(f"--max-steps must be a positive number of env steps, got {args.max_steps}")
    paths = plot_runs([Path(r) for r in args.runs], _analysis_out(args), metric=args.metric,
                      seed=args.bootstrap_seed, references=references, max_steps=args.max_steps,
                      x=args.x)
    for p in paths:
        print(f"saved: {p}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from meigm.experiments.analysis import table_runs

    out = _analysis_out(args)
    table_runs([Path(r) for r in args.runs], out, metric=args.metric, seed=args.bootstrap_seed)
    print((out / "table.md").read_text())
    print(f"saved: {out / 'table.md'}, {out / 'table.tex'}, {out / 'table.json'}")
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    from meigm.envs import make_env, registered

    print(f"{'scenario':<24}{'agents':>7}{'actions':>8}{'obs':>6}{'state':>7}{'limit':>7}  default t_max")
    for name in registered():
        if name.endswith(":custom"):
            print(f"{name:<24}  (payoff from env_args.payoff)")
            continue
        s = make_env(name).spec
        print(f"{name:<24}{s.n_agents:>7}{s.n_actions:>8}{s.obs_dim:>6}{s.state_dim:>7}"
              f"{s.episode_limit:>7}  {s.default_t_max}")
    from meigm.envs.registry import HOST_FAMILIES

    print("\nstepped on the host (sizes come from the installed environment):")
    for family, (_, scenarios) in HOST_FAMILIES.items():
        if scenarios is None:
            print(f"  {family}:<module>[:<factory>]   any PettingZoo ParallelEnv with discrete "
                  "actions, e.g. pettingzoo:mpe2.simple_spread_v3")
        else:
            print(f"  {family}: {', '.join(scenarios)}  (needs smacv2 and StarCraft II: "
                  "docs/smacv2.md)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come anywhere, also after flags (`... --no-progress lr=1e-3`):
    # argparse gives a positional list one stretch only, so the later ones are collected here
    args, rest = parser.parse_known_args(argv)
    if rest:
        if hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
            args.overrides = [*args.overrides, *rest]
        else:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
    commands = {"train": cmd_train, "compare": cmd_compare, "config": cmd_config,
                "sweep": cmd_sweep, "plot": cmd_plot,
                "table": cmd_table, "eval": cmd_eval, "export": cmd_export, "envs": cmd_envs}
    # a library warning (a skipped torn line, a skipped checkpoint) is one line, not a
    # source location and a code excerpt
    shown = warnings.showwarning
    warnings.showwarning = lambda message, *_a, **_k: print(
        f"meigm {args.command}: warning: {message}", file=sys.stderr)
    try:
        return commands[args.command](args)
    except BrokenPipeError:  # `meigm envs | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except MeigmError as exc:
        print(f"meigm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not a file of the user's: a bug, with its traceback
            raise
        # a read-only run directory, a full disk, a path that is not there: the user's
        # file system, one line (what was already written stays)
        print(f"meigm {args.command}: error: cannot use {exc.filename}: "
              f"{exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meigm {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
