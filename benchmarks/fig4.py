"""Figure 4 on Overcooked: ME-QMIX and ME-QPLEX against QMIX and QPLEX (issue 17).

    nice -n 10 python benchmarks/fig4.py --num-cpus 2      # run (or resume) the sweep, then report
    nice -n 10 python benchmarks/fig4.py --only 'overcooked_cramped_room/*'   # one layout
    python benchmarks/fig4.py --report-only                # report what is there so far
    python benchmarks/fig4.py --budget smoke --out /tmp/fig4   # seconds: checks the plumbing

The runs are the ``fig4`` sweep preset (``meigm/presets/fig4.yaml``): the four algorithms
on ``overcooked:cramped_room`` and ``overcooked:asymm_advantages``, 3 seeds each; at the
``laptop`` budget 500k env steps with shaping annealed over the first 250k. Re-running
resumes every unfinished run from its newest checkpoint.

The paper's claim is about the *early* stage ("significantly faster convergence and
higher performance in the early stages of training"), so besides the final point the
report measures the early stage directly, per seed, from the logged greedy evaluations:

* ``early``: greedy test soups per episode averaged over the evaluation points up to the
  end of the shaping horizon (the stage where the shaped reward still guides);
* ``whole``: the same over the whole budget (the normalised area under the curve);
* the same two for the soups of the training episodes (the exploring policy: ε-greedy for
  QMIX/QPLEX, the stochastic policy for the ME learners), each point the mean over every
  training episode since the previous one (50 per 20k steps at the laptop budget,
  against the greedy tests' 4);
* ``final``: a fresh greedy evaluation of each finished run's final checkpoint with
  ``--eval-episodes`` episodes per seed (the logged points hold only the preset's 4).

Each ME learner is compared with its base (ME-QMIX − QMIX, ME-QPLEX − QPLEX) by the
difference of the means over seeds and its 95% Welch interval (the runs' seeds
unpaired; ``analysis.diff_ci``). With 3 seeds per run such intervals are wide; the
report says what they allow and no more.

Output (``benchmarks/results/fig4_laptop/`` for the laptop budget): curves of
``test/soups``, ``test/return`` and ``train/info/soups`` per layout (mean and 95%
bootstrap band over seeds, the end of the shaping dotted), ``table.md`` /
``table.json``, ``comparison.md``, and each run's small files under ``runs/``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from meigm.errors import MeigmError
from meigm.experiments.analysis import (
    Run,
    bootstrap_ci,
    diff_ci,
    find_runs,
    plot_runs,
    report_run_dirs,
    verdict,
    window_mean,
)
from meigm.experiments.sweep import report_script_parser, run_for_report

HERE = Path(__file__).resolve().parent
METRICS = ("test/soups", "test/return", "train/info/soups")
PAIRS = (("me_qmix", "qmix"), ("me_qplex", "qplex"))
#: Read off the PQN repository's aggregate Overcooked plot (mttga/purejaxql 47af6d7,
#: docs/overcooked_iqm.png, max-normalised IQM of the return over layouts; ±0.05):
#: the nearest published figures (benchmarks/notes/overcooked.md, "Anchors for Overcooked").
ANCHOR = ("JaxMARL/PQN aggregate over Overcooked layouts, max-normalised IQM: at 500k IPPO "
          "≈0.15, PQN-VDN ≈0.05, VDN and IQL 0; at 1M PQN-VDN ≈0.5, IPPO and VDN ≈0.4")


def per_seed_series(run: Run, metric: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each seed's (t_env [P], value [P]) for ``metric``, in seed order."""
    out = []
    for _, recs in sorted(run.per_seed().items()):
        pts = [(int(r["t_env"]), float(r[metric])) for r in recs if metric in r]
        out.append((np.array([p[0] for p in pts]), np.array([p[1] for p in pts])))
    return out


def final_eval(run_dir: Path, episodes: int) -> list[float] | None:
    """Greedy soups per episode of each seed at the final checkpoint (cached in eval.json)."""
    from meigm.experiments.evaluate import evaluate_run, load_run, write_json

    if not (run_dir / "results.json").is_file() or episodes <= 0:
        return None
    cache = run_dir / "eval.json"
    if cache.is_file():
        done = json.loads(cache.read_text())
        if done.get("test_episodes") == episodes and Path(done["checkpoint"]).name == "final.safetensors":
            return [row["test/soups"] for row in done["per_seed"]]
    result = evaluate_run(load_run(run_dir, "final.safetensors", episodes=episodes))
    write_json(cache, result)
    return [row["test/soups"] for row in result["per_seed"]]


def timing(results: dict) -> tuple[str, float]:
    """The wall time of a finished run as text, and its training env steps/s (all seeds).

    A run resumed across sessions has ``total_wall_seconds`` (every leg up to the restored
    checkpoint plus the last) when its checkpoints recorded it; older runs only know their
    last leg, named by the checkpoint it resumed from, and their rate is that leg's."""
    wall = results["wall_seconds"]
    resumed = results.get("resumed_from")
    before = 0
    if resumed:
        name = Path(resumed).stem  # step_<env steps>
        before = int(name.split("_")[1]) * len(results["t_env"]) if name.startswith("step_") else 0
    rate = (sum(results["t_env"]) - before) / wall
    if "total_wall_seconds" in results:
        return f"{results['total_wall_seconds']:,.0f}", rate
    if resumed:
        return f"{wall:,.0f} (the leg from {before // len(results['t_env']) / 1000:.0f}k)", rate
    return f"{wall:,.0f}", rate


def compared_pairs(keys: list[tuple[str, str]]) -> list[tuple[tuple[str, str], str]]:
    """((layout, label), the label it is compared with) for every pair the report holds:
    each ME learner against its base (``PAIRS``), and a variant of a run's settings
    (a sweep grid's label ``<alg>,<key>=<value>``) against the same algorithm at its
    defaults and against that algorithm's base."""
    held = set(keys)
    base_of = dict(PAIRS)
    out = []
    for env, label in sorted(held):
        alg, _, variant = label.partition(",")
        against = ([alg] if variant else []) + ([base_of[alg]] if alg in base_of else [])
        out += [((env, label), b) for b in against if (env, b) in held]
    return out


def _fmt_ci(values: np.ndarray) -> str:
    lo, hi = bootstrap_ci(values[:, None])
    return f"{values.mean():.2f} [{lo[0]:.2f}, {hi[0]:.2f}]"


def report(sweep_dir: Path, out: Path, eval_episodes: int, also: tuple[Path, ...] = ()) -> dict:
    """Curves, tables and the runs' small files into ``out``: the runs of ``sweep_dir``,
    and those already reported in ``out/runs`` that ``sweep_dir`` does not hold.

    ``also``: run directories (or directories holding them) reported beside those and
    compared with them but not copied, such as the Figure 4 runs a probe of one setting
    is measured against (``--with``)."""
    dirs = report_run_dirs(sweep_dir, out / "runs")
    run_ids = dict(dirs)
    found = find_runs([d for d, _ in dirs] + list(also)) if dirs or also else []
    runs = [r for r in found if any("test/soups" in x for x in r.records)]
    if not runs:
        raise MeigmError(f"no Overcooked run with a logged evaluation under {sweep_dir}")
    out.mkdir(parents=True, exist_ok=True)
    for env in sorted({r.env for r in runs}):
        for metric in METRICS:
            plot_runs([r.path for r in runs if r.env == env], out, metric=metric)
    rows, by_key = [], {}
    for r in sorted(runs, key=lambda r: (r.env, r.label)):
        dest = out / "runs" / run_ids[r.path] if r.path in run_ids else None  # None: --with
        archived = dest is None or dest.resolve() == r.path.resolve()  # kept where it is
        horizon = int(r.config.get("reward_shaping_horizon") or 0)
        t_max = int(r.config["t_max"])
        results = r.path / "results.json"
        wall, rate = timing(json.loads(results.read_text())) if results.is_file() else (None, None)
        series = per_seed_series(r, "test/soups")
        row = {
            "layout": r.env, "label": r.label, "seeds": len(series), "finished": results.is_file(),
            "archived": archived,
            "t_env": [int(ts[-1]) if len(ts) else 0 for ts, _ in series],
            "wall": wall, "train_env_steps_per_second": rate, "shaping_horizon": horizon, "t_max": t_max,
            "logged_final_test_soups": [float(vs[-1]) if len(vs) else None for _, vs in series],
            "final_eval_episodes": eval_episodes,
            "final_test_soups": final_eval(r.path, eval_episodes),
        }
        # The early stage ends at the last evaluation mark at or before the shaping's end
        # (a mark after it would already judge the unshaped game).
        grid = int(r.config.get("test_interval") or 1)
        early_end = min(horizon, t_max) // grid * grid if horizon else t_max
        for name, metric in (("test", "test/soups"), ("train", "train/info/soups")):
            for stage, t in (("early", early_end), ("whole", t_max)):
                v = window_mean(r, metric, t)
                row[f"{stage}_{name}_soups"] = None if v is None else v.tolist()
        rows.append(row)
        by_key[(r.env, r.label)] = row
        if not archived:
            dest.mkdir(parents=True, exist_ok=True)
            for name in ("config.yaml", "metrics.jsonl", "results.json", "label.txt", "eval.json"):
                if (r.path / name).is_file():
                    shutil.copy2(r.path / name, dest / name)

    def cell(values: list[float] | None) -> str:
        if values is None:
            return "—"
        v = np.asarray(values, dtype=np.float64)
        return f"{_fmt_ci(v)} ({' / '.join(f'{x:.2f}' for x in v)})"

    lines = ["| layout | algorithm | env steps per seed | wall (s, all seeds) | train env steps/s "
             "| early: greedy test soups, mean over points ≤ shaping end [95% CI] (per seed) "
             "| whole: the same ≤ t_max | early: training-episode soups "
             "| final: greedy soups per episode, fresh eval [95% CI] (per seed) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        state = "" if row["finished"] else " (stopped)" if row["archived"] else " (running)"
        wall = row["wall"] or "—"
        rate = f"{row['train_env_steps_per_second']:,.0f}" if row["train_env_steps_per_second"] else "—"
        final = row["final_test_soups"]
        final_txt = (cell(final) + f", {row['final_eval_episodes']} eps" if final is not None else "—")
        lines.append(
            f"| {row['layout'].split(':')[1]} | {row['label']} | "
            f"{', '.join(f'{t / 1000:.0f}k' for t in row['t_env'])}{state} | {wall} | {rate} | "
            f"{cell(row['early_test_soups'])} | {cell(row['whole_test_soups'])} | "
            f"{cell(row['early_train_soups'])} | {final_txt} |")
    comparisons = []
    cmp_lines = ["| layout | comparison | statistic | difference of means [95% Welch CI] | verdict |",
                 "|---|---|---|---|---|"]
    for (env, me), base in compared_pairs(list(by_key)):
        a_row, b_row = by_key[(env, me)], by_key[(env, base)]
        # Runs of other budgets share only the early stage (the shaping horizon's marks).
        same_budget = a_row["t_max"] == b_row["t_max"]
        for stat in ("early_test_soups", "whole_test_soups", "early_train_soups",
                     "whole_train_soups", "final_test_soups"):
            a, b = a_row.get(stat), b_row.get(stat)
            if a is None or b is None or not (same_budget or stat.startswith("early")):
                continue
            d, lo, hi = diff_ci(np.asarray(a), np.asarray(b))
            said = verdict(lo, hi) if (me, base) in PAIRS else verdict(lo, hi, me, base)
            comparisons.append({"layout": env, "me": me, "base": base, "statistic": stat,
                                "difference": d, "ci95": [lo, hi], "verdict": said})
            cmp_lines.append(f"| {env.split(':')[1]} | {me} − {base} | {stat} | "
                             f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] | {said} |")
    table = "\n".join(lines) + "\n"
    comparison = "\n".join(cmp_lines) + "\n"
    (out / "table.md").write_text(table + f"\nAnchor: {ANCHOR}.\n")
    (out / "comparison.md").write_text(comparison)
    (out / "table.json").write_text(json.dumps({"runs": rows, "comparisons": comparisons,
                                                "anchor": ANCHOR}, indent=1))
    print(table)
    print(comparison)
    return {"runs": rows, "comparisons": comparisons}


def main() -> None:
    p = report_script_parser("fig4", __doc__, HERE / "results" / "fig4_laptop")
    p.add_argument("--eval-episodes", type=int, default=64,
                   help="greedy episodes per seed for the final evaluation (0: skip it; default 64)")
    p.add_argument("--with", dest="also", action="append", default=[], metavar="DIR", type=Path,
                   help="also report these run directories (or directories holding them) and "
                        "compare with them, without copying them (e.g. a probe against the "
                        "Figure 4 runs: results/fig4_laptop/runs/overcooked_asymm_advantages)")
    a = p.parse_args()
    try:
        _, sweep_dir, report_dir = run_for_report(a)
        report(sweep_dir, report_dir, a.eval_episodes, tuple(a.also))
    except MeigmError as exc:
        p.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
