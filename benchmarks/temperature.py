"""How the temperature held the policy entropy on its target, per run and seed (issue 14, item 3).

    python benchmarks/temperature.py RUN [RUN ...] --out benchmarks/results/alpha_init \\
        --max-steps 300000 --early 75000

Each RUN is an ME-IGM run directory, or a directory holding some (a sweep). Every run is
read up to ``--max-steps`` env steps of each seed (its evaluation at that budget
included), so a 1M-step run can stand beside 300k-step ones on the same stretch.

Written to ``--out``:

* ``table.md`` / ``table.json``: per run and seed, the per-agent policy entropy at
  ``--early`` steps and at the budget against its target, the final α, the test return and
  greedy win rate averaged over the last three evaluation points (one point is noisy at
  64 test episodes), and the final greedy win rate with a 95% bootstrap interval over seeds;
* curves (mean and 95% bootstrap band over seeds) of the entropy (target dashed), α, the
  test return and the win rate;
* ``runs/<run>/``: the config, metrics and results of each run that is not already kept
  under ``benchmarks/results`` (never its checkpoints).

Runs are labelled by their initial α and its learning rate, the two knobs this report is
about.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from meigm.errors import MeigmError
from meigm.experiments.analysis import Run, bootstrap_ci, find_runs, plot_runs, up_to

RESULTS = Path(__file__).resolve().parent / "results"
CURVES = ("train/entropy", "train/alpha", "test/return", "test/won")
SMALL_FILES = ("config.yaml", "metrics.jsonl", "results.json")


def label(run: Run) -> str:
    return f"{run.alg} α₀={run.config.get('alpha_init')} alpha_lr={run.config.get('alpha_lr')}"


def _at(records: list[dict], steps: int, key: str) -> float:
    """The value logged at the first evaluation at or after ``steps`` (the seed's point
    "at" that budget, as ``up_to`` defines it)."""
    return float(up_to(records, steps)[-1][key])


def summarise(run: Run, max_steps: int | None, early: int) -> dict:
    """One row: per-seed lists in seed order, cut at ``max_steps``."""
    seeds = {s: up_to([r for r in recs if "test/won" in r], max_steps)
             for s, recs in sorted(run.per_seed().items())}
    if any(not recs for recs in seeds.values()):
        raise MeigmError(f"{run.path}: a seed has no evaluation logged")
    finals = np.array([recs[-1]["test/won"] for recs in seeds.values()], dtype=np.float64)
    lo, hi = bootstrap_ci(finals[:, None])
    last3 = {k: [float(np.mean([r[k] for r in recs[-3:]])) for recs in seeds.values()]
             for k in ("test/return", "test/won")}
    return {
        "label": label(run), "env": run.env, "path": str(run.path),
        "alpha_init": run.config.get("alpha_init"), "alpha_lr": run.config.get("alpha_lr"),
        "t_env": [int(recs[-1]["t_env"]) for recs in seeds.values()],
        "entropy_early": [_at(recs, early, "train/entropy") for recs in seeds.values()],
        "entropy_final": [float(recs[-1]["train/entropy"]) for recs in seeds.values()],
        "target_entropy": float(np.mean([recs[-1]["train/target_entropy"] for recs in seeds.values()])),
        "alpha_final": [float(recs[-1]["train/alpha"]) for recs in seeds.values()],
        "return_last3": last3["test/return"], "won_last3": last3["test/won"],
        "won_final": finals.tolist(), "won_final_mean": float(finals.mean()),
        "won_final_ci95": [float(lo[0]), float(hi[0])],
    }


def markdown(rows: list[dict], early: int) -> str:
    def seeds(values: list[float], fmt: str) -> str:
        return " / ".join(format(v, fmt) for v in values)

    target = rows[0]["target_entropy"]
    lines = [f"| run | env steps per seed | entropy / agent at {early / 1000:g}k | final entropy / agent "
             f"(target {target:.2f}) | final α | test return (last 3 points) | greedy win rate (last "
             "3 points) | final greedy win rate [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['label']} | {', '.join(f'{t / 1000:.0f}k' for t in r['t_env'])} | "
            f"{seeds(r['entropy_early'], '.2f')} | {seeds(r['entropy_final'], '.2f')} | "
            f"{seeds(r['alpha_final'], '.4f')} | {seeds(r['return_last3'], '.2f')} | "
            f"{seeds([100 * v for v in r['won_last3']], '.1f')}% | **{r['won_final_mean']:.0%}** "
            f"[{r['won_final_ci95'][0]:.0%}, {r['won_final_ci95'][1]:.0%}] |")
    return "\n".join(lines) + "\n"


def report(paths: list[Path], out: Path, max_steps: int | None, early: int) -> list[dict]:
    runs = [r for r in find_runs(paths) if r.alg.startswith("me_")]
    if not runs:
        raise MeigmError(f"no ME-IGM run (me_qmix, me_qplex, me_vdn) under {', '.join(map(str, paths))}")
    if len({r.env for r in runs}) > 1:
        raise MeigmError(f"runs of one scenario only; got {', '.join(sorted({r.env for r in runs}))}")
    rows = sorted((summarise(r, max_steps, early) for r in runs),
                  key=lambda row: (row["alpha_lr"], row["alpha_init"]))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Plot from labelled copies: the report's labels are the two temperature knobs,
        # whatever else the runs' configs differ in (budget, test cadence).
        for i, r in enumerate(runs):
            stage = Path(tmp) / f"{i:02d}"
            stage.mkdir()
            for name in SMALL_FILES:
                if (r.path / name).is_file():
                    shutil.copy2(r.path / name, stage / name)
            (stage / "label.txt").write_text(label(r))
            if RESULTS.resolve() not in r.path.resolve().parents:
                keep = out / "runs" / r.path.name
                keep.mkdir(parents=True, exist_ok=True)
                for name in (*SMALL_FILES, "label.txt"):
                    if (stage / name).is_file():
                        shutil.copy2(stage / name, keep / name)
        for metric in CURVES:
            refs = {"target entropy": rows[0]["target_entropy"]} if metric == "train/entropy" else None
            plot_runs([Path(tmp)], out, metric=metric, references=refs, max_steps=max_steps)
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    text = markdown(rows, early)
    (out / "table.md").write_text(text)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="ME-IGM run directories or sweeps holding them")
    p.add_argument("--out", required=True, metavar="DIR", help="report directory")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="read every seed up to N env steps (default: all it logged)")
    p.add_argument("--early", type=int, default=75_000, metavar="N",
                   help="the early point whose entropy is reported (default 75000)")
    a = p.parse_args(argv)
    try:
        if a.max_steps is not None and a.max_steps <= 0:
            raise MeigmError(f"--max-steps must be a positive number of env steps, got {a.max_steps}")
        rows = report([Path(r) for r in a.runs], Path(a.out), a.max_steps, a.early)
    except MeigmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(rows, a.early), end="")
    print(f"saved: {Path(a.out) / 'table.md'}, {Path(a.out) / 'table.json'} and curves")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
