"""Skill on SMAX: ME-QMIX, QMIX, MAPPO, IPPO and HASAC against the anchors (issues 14, 15, 18).

    nice -n 10 python benchmarks/skill.py                 # run (or resume) the sweep, then report
    nice -n 10 python benchmarks/skill.py --num-cpus 1    # one run at a time, beside other work
    nice -n 10 python benchmarks/skill.py --only 'smax_protoss_5_vs_5/hasac'   # just these runs
    python benchmarks/skill.py --report-only              # report what has finished so far
    python benchmarks/skill.py --budget smoke --out /tmp/skill   # seconds: checks the plumbing

The runs are the ``skill`` sweep preset (``meigm/presets/skill.yaml``): ``me_qmix``,
``qmix``, ``mappo``, ``ippo`` and ``hasac``, 3 seeds each, on ``smax:3m`` at 300k env
steps and on the three 5v5 races at 1M, 128 greedy test episodes at every evaluation
point, checkpoints every 50k steps.
Re-running the command resumes every unfinished run from its newest checkpoint (the
sweep's own rule), so it can be stopped at any time and continued in a later session.

The report (``benchmarks/results/skill/``):

* one curve per scenario (greedy test win rate, mean and 95% bootstrap band over seeds)
  with the anchors' 1M-step points drawn as dashed lines;
* ``table.md`` / ``table.json``: each run's final greedy win rate per seed, the mean
  and its 95% bootstrap interval over seeds, the env steps it was measured at, and the
  anchor beside it;
* ``comparison.md`` / ``comparison.json``: the paper's claim, ME-QMIX − QMIX on each
  scenario both have finished, at the final point, over the last tenth of the budget and
  over the whole curve, each with a 95% Welch interval and what it allows one to say,
  and the same pooled over the three races once all have finished (the mean of the
  per-race differences; ``analysis.pooled_diff_ci``);
* ``runs/<scenario>/<label>/``: each run's ``config.yaml``, ``metrics.jsonl`` and
  ``results.json`` (never its checkpoints).

Anchors (quoted by issue 14 from SMACv2's published QMIX runs on StarCraft II — Ellis et
al. 2023, pymarl2's QMIX, mean greedy test win rate over 3–5 seeds — and the ME-IGM
paper's Table 2 at 10M steps). SMAX is another simulator (its own heuristic enemy, its
own units), so these are indirect anchors.
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
    pooled_diff_ci,
    report_run_dirs,
    verdict,
    window_mean,
)
from meigm.experiments.sweep import report_script_parser, run_for_report

#: SMACv2 QMIX (StarCraft II) greedy test win rate at 1M / 2M env steps.
SMACV2_QMIX = {
    "smax:protoss_5_vs_5": (0.35, 0.47),
    "smax:terran_5_vs_5": (0.53, 0.59),
    "smax:zerg_5_vs_5": (0.36, 0.38),
}
#: SMACv2 MAPPO (StarCraft II) greedy test win rate at 1M / 2M env steps (issue 15).
SMACV2_MAPPO = {"smax:protoss_5_vs_5": (0.24, 0.35)}
#: The ME-IGM paper's ME-QMIX at 10M env steps (Table 2).
PAPER_ME_QMIX_10M = {
    "smax:protoss_5_vs_5": 0.759,
    "smax:terran_5_vs_5": 0.702,
    "smax:zerg_5_vs_5": 0.508,
}
#: The ME-IGM paper's HASAC (Table 2, SMACv2, the paper's full budget). The HASAC paper
#: itself (Liu et al., ICLR 2024) reports SMAC, not SMACv2.
PAPER_HASAC = {
    "smax:protoss_5_vs_5": 0.229,
    "smax:terran_5_vs_5": 0.379,
    "smax:zerg_5_vs_5": 0.291,
}
#: Issue 14's target on smax:3m at 300k env steps, for both algorithms.
TARGET_3M = 0.90
METRIC = "test/won"
#: The paper's claim on the races: each ME learner at or above its base.
PAIRS = (("me_qmix", "qmix"),)
#: The comparison row pooling the three 5v5 races (mean of the per-race differences).
RACES_POOLED = "5v5 races, mean of 3"
#: The late stage: the evaluation points in this last fraction of the budget.
LATE = 0.1
HERE = Path(__file__).resolve().parent


def references(env: str) -> dict[str, float]:
    if env in SMACV2_QMIX:
        refs = {"SMACv2 QMIX @1M (SC2)": SMACV2_QMIX[env][0]}
        if env in SMACV2_MAPPO:
            refs["SMACv2 MAPPO @1M (SC2)"] = SMACV2_MAPPO[env][0]
        return refs
    if env == "smax:3m":
        return {"issue 14 target @300k": TARGET_3M}
    return {}


def anchor_text(env: str, label: str) -> str:
    if label in ("mappo", "ippo") and env in SMACV2_MAPPO:
        one, two = SMACV2_MAPPO[env]
        return f"SMACv2 MAPPO {one:.0%} @1M, {two:.0%} @2M"
    if label == "hasac" and env in PAPER_HASAC:
        return f"paper HASAC {PAPER_HASAC[env]:.1%} (SMACv2, Table 2's budget)"
    if env in SMACV2_QMIX:
        one, two = SMACV2_QMIX[env]
        text = f"SMACv2 QMIX {one:.0%} @1M, {two:.0%} @2M"
        if label == "me_qmix":
            text += f"; paper ME-QMIX {PAPER_ME_QMIX_10M[env]:.1%} @10M"
        return text
    if env == "smax:3m":
        return f"target ≥ {TARGET_3M:.0%} @300k"
    return ""


def report(sweep_dir: Path, out: Path, t_max: dict[str, int]) -> list[dict]:
    """Curves, the table and the runs' small files into ``out``: the runs of ``sweep_dir``
    that have logged an evaluation, and those already reported in ``out/runs`` that
    ``sweep_dir`` does not hold (a run directory does not outlive its machine)."""
    dirs = report_run_dirs(sweep_dir, out / "runs")
    run_ids = dict(dirs)
    runs = [r for r in find_runs([d for d, _ in dirs]) if any(METRIC in x for x in r.records)] \
        if dirs else []
    if not runs:
        raise MeigmError(f"no run with a logged evaluation under {sweep_dir} or {out / 'runs'}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in sorted(runs, key=lambda r: (r.env, r.label)):
        dest = out / "runs" / run_ids[r.path]
        archived = dest.resolve() == r.path.resolve()  # an archived copy, already in place
        per_seed = {s: [x for x in recs if METRIC in x] for s, recs in sorted(r.per_seed().items())}
        finals = np.array([recs[-1][METRIC] for recs in per_seed.values()], dtype=np.float64)
        steps = [int(recs[-1]["t_env"]) for recs in per_seed.values()]
        lo, hi = bootstrap_ci(finals[:, None])
        finished = (r.path / "results.json").is_file()
        rows.append({
            "scenario": r.env, "label": r.label, "seeds": len(finals),
            "finished": finished, "archived": archived, "t_max": t_max.get(r.env), "t_env": steps,
            "win_rate_per_seed": finals.tolist(), "mean": float(finals.mean()),
            "ci95": [float(lo[0]), float(hi[0])],
            "test_episodes": _test_episodes(r.path), "anchor": anchor_text(r.env, r.label),
        })
        if not archived:
            dest.mkdir(parents=True, exist_ok=True)
            for name in ("config.yaml", "metrics.jsonl", "results.json", "label.txt"):
                if (r.path / name).is_file():
                    shutil.copy2(r.path / name, dest / name)
    for env in sorted({r.env for r in runs}):
        env_dirs = [r.path for r in runs if r.env == env]
        plot_runs(env_dirs, out, metric=METRIC, references=references(env))
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    comparisons = compare(runs, t_max)
    (out / "comparison.json").write_text(json.dumps(comparisons, indent=1))
    lines = ["| scenario | algorithm | seeds | env steps per seed | final greedy win rate, mean "
             "[95% CI] | per seed | anchor |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        state = "" if row["finished"] else " (stopped)" if row["archived"] else " (running)"
        lines.append(
            f"| {row['scenario']} | {row['label']} | {row['seeds']} | "
            f"{', '.join(f'{t / 1000:.0f}k' for t in row['t_env'])}{state} | "
            f"**{row['mean']:.0%}** [{row['ci95'][0]:.0%}, {row['ci95'][1]:.0%}] | "
            f"{' / '.join(f'{v:.0%}' for v in row['win_rate_per_seed'])} | {row['anchor']} |")
    cmp_lines = ["| scenario | comparison | statistic | difference in win rate, points "
                 "[95% Welch CI] | verdict |", "|---|---|---|---|---|"]
    cmp_lines += [f"| {c['scenario']} | {c['me']} − {c['base']} | {c['statistic']} | "
                  f"{100 * c['difference']:+.1f} [{100 * c['ci95'][0]:+.1f}, "
                  f"{100 * c['ci95'][1]:+.1f}] | {c['verdict']} |" for c in comparisons]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "comparison.md").write_text("\n".join(cmp_lines) + "\n")
    print("\n".join(lines))
    print("\n".join(cmp_lines) if comparisons else "(no finished pair to compare yet)")
    return rows


def compare(runs: list[Run], t_max: dict[str, int]) -> list[dict]:
    """Each ME learner against its base on each scenario where both have reached the
    budget: the difference of the mean greedy win rates over seeds, with a 95% Welch
    interval (the runs' seeds unpaired; ``analysis.diff_ci``), at three readings of the curve —
    the final point, the late stage (the points in the last ``LATE`` of the budget, which
    damp the noise of one point) and the whole curve (its normalised area)."""
    by_key = {(r.env, r.label): r for r in runs}
    out = []
    races: dict[tuple[str, str, str], list] = {}  # (me, base, statistic) -> [(a, b)] per race
    for env in sorted({r.env for r in runs}):
        budget = t_max.get(env)
        if budget is None:
            continue
        for me, base in PAIRS:
            if (env, me) not in by_key or (env, base) not in by_key:
                continue
            for stat, since in (("final", budget), ("late", int(budget * (1 - LATE))), ("whole", 0)):
                a = window_mean(by_key[env, me], METRIC, budget, since=since)
                b = window_mean(by_key[env, base], METRIC, budget, since=since)
                if a is None or b is None:
                    continue
                d, lo, hi = diff_ci(a, b)
                out.append({"scenario": env, "me": me, "base": base, "statistic": stat,
                            "since": since, "until": budget, "difference": d, "ci95": [lo, hi],
                            "verdict": verdict(lo, hi)})
                if env in SMACV2_QMIX:
                    races.setdefault((me, base, stat), []).append((a, b))
    # The paper's claim is over the races: pooled, each race weighted equally, once every
    # race has both runs at its budget.
    for (me, base, stat), pairs in races.items():
        if len(pairs) == len(SMACV2_QMIX):
            d, lo, hi = pooled_diff_ci(pairs)
            out.append({"scenario": RACES_POOLED, "me": me, "base": base, "statistic": stat,
                        "difference": d, "ci95": [lo, hi], "verdict": verdict(lo, hi)})
    return out


def _test_episodes(run_dir: Path) -> int | None:
    import yaml

    path = run_dir / "config.yaml"
    return yaml.safe_load(path.read_text()).get("test_episodes") if path.is_file() else None


def main() -> None:
    p = report_script_parser("skill", __doc__, HERE / "results" / "skill")
    a = p.parse_args()
    try:
        sweep, sweep_dir, report_dir = run_for_report(a)
        report(sweep_dir, report_dir, {r.values["env"]: r.config().t_max for r in sweep.runs})
    except MeigmError as exc:
        p.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
