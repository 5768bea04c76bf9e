"""Curves and tables from run directories: what ``meigm plot`` and ``meigm table`` write.

Runs are found under the given paths (a run directory, or a sweep directory holding
``<scenario>/<label>/`` run directories), grouped by scenario and label, and reduced
per seed. Statistics follow Agarwal et al. (2021), via rliable where it has them:

* curves: mean over seeds with a percentile-bootstrap 95% band of that mean;
* tables: final greedy test metric (each seed's last evaluation) as mean ± std, the
  best mean per scenario in bold; across scenarios the interquartile mean (IQM) with
  a stratified-bootstrap 95% interval, and the probability of improvement of each
  label over each other. Bootstraps take a fixed seed, so the files are reproducible;
* differences between two runs, and their mean over scenarios (``diff_ci``,
  ``pooled_diff_ci``, which carry the verdicts): Welch's t interval, because a
  percentile bootstrap over 3 seeds a side is far too narrow to say "separated";
* the reproduction protocol (``protocol_scores``, ``docs/reproduction.md``): a seed's
  score is the mean of its last ``PROTOCOL_POINTS`` evaluation points within the budget,
  seeds are the unit, and differences are Welch intervals.

A label is the run's ``label.txt`` (written by sweeps), else its algorithm plus the
config fields in which it differs from the other runs of the same algorithm and
scenario, so ablations (``me_qmix transform=none``) get their own lines and columns.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from meigm.config import load_yaml
from meigm.errors import MeigmError

#: Default metric, in order of preference: SMAX win rate, Overcooked soups, return.
DEFAULT_METRICS = ("test/won", "test/soups", "test/return")
#: Config fields that never distinguish one experiment from another.
IGNORED_FIELDS = ("seed", "seeds", "wandb", "wandb_project", "checkpoint_interval")


@dataclass
class Run:
    path: Path
    env: str
    alg: str
    config: dict[str, Any]
    records: list[dict[str, Any]]
    label: str = ""

    def per_seed(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for rec in self.records:
            out[int(rec["seed"])].append(rec)
        return dict(out)


# ------------------------------------------------------------------ loading
def find_runs(paths: list[Path], finished_only: bool = False) -> list[Run]:
    """Every run directory at or up to three levels below ``paths``; with
    ``finished_only``, only those with ``results.json`` (a table of final metrics must
    not mix in a run still training, or one a crash cut short)."""
    dirs: list[Path] = []
    for p in paths:
        if not p.exists():
            raise MeigmError(f"no such file or directory: {p}")
        candidates = [p, *sorted(q.parent for q in p.glob("*/config.yaml")),
                      *sorted(q.parent for q in p.glob("*/*/config.yaml")),
                      *sorted(q.parent for q in p.glob("*/*/*/config.yaml"))]
        dirs += [d for d in candidates if (d / "config.yaml").is_file()
                 and (d / "metrics.jsonl").is_file() and d not in dirs
                 and (not finished_only or (d / "results.json").is_file())]
    if not dirs:
        what = "finished run directories (with results.json)" if finished_only else \
            "run directories (config.yaml + metrics.jsonl)"
        raise MeigmError(f"no {what} under "
                         f"{', '.join(map(str, paths))}")
    runs = [load_run(d) for d in dirs]
    _assign_labels(runs)
    return runs


def report_run_dirs(sweep_dir: Path, archive: Path) -> list[tuple[Path, Path]]:
    """The runs a benchmark report covers: (run directory, its ``<scenario>/<label>`` id).

    Every run under ``sweep_dir`` that has logged something, then the archived copies
    under ``archive`` (a report's committed ``runs/``: config, metrics, results, never
    checkpoints) of the runs ``sweep_dir`` does not hold. A sweep directory lives on one
    machine; without the archive, a report re-made on another machine, or after a run
    directory was lost, would silently drop the finished runs it had already reported.
    A run being trained again wins over its archived copy.
    """
    def logged(root: Path) -> list[tuple[Path, Path]]:
        if not root.is_dir():
            return []
        return [(m.parent, m.parent.relative_to(root)) for m in sorted(root.glob("*/*/metrics.jsonl"))
                if m.stat().st_size and (m.parent / "config.yaml").is_file()]

    live = logged(sweep_dir)
    held = {rel for _, rel in live}
    return live + [(d, rel) for d, rel in logged(archive) if rel not in held]


def load_run(d: Path) -> Run:
    """One run directory (config.yaml + metrics.jsonl), labelled by its label.txt if it
    has one. A torn or foreign line is an error naming it, except the last line of a run
    still training or killed (no ``results.json``): a process killed mid-write leaves
    that one, so it is skipped with a warning and the run's other rows are read (issue
    41: one killed run used to stop ``meigm plot`` of a whole half-written sweep)."""
    cfg = load_yaml(d / "config.yaml", what="run config")
    records = []
    lines = (d / "metrics.jsonl").read_text().splitlines()
    last = max((i for i, line in enumerate(lines, start=1) if line.strip()), default=0)
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            problem = None if isinstance(rec, dict) and "seed" in rec and "t_env" in rec \
                else "lacks 'seed' or 't_env'"
        except json.JSONDecodeError:
            problem = "is not valid JSON"
        if problem is None:
            records.append(rec)
        elif i == last and not (d / "results.json").exists():
            warnings.warn(f"{d / 'metrics.jsonl'} line {i} {problem} (torn by a killed "
                          "process?); skipped", stacklevel=2)
        else:
            raise MeigmError(f"{d / 'metrics.jsonl'} line {i} {problem}")
    if not records:
        raise MeigmError(f"{d / 'metrics.jsonl'} holds no evaluation yet")
    label = (d / "label.txt").read_text().strip() if (d / "label.txt").is_file() else ""
    return Run(path=d, env=str(cfg.get("env")), alg=str(cfg.get("alg")), config=cfg,
               records=records, label=label)


def _assign_labels(runs: list[Run]) -> None:
    """Label runs without ``label.txt``: alg + the fields that differ within (env, alg)."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        if not r.label:
            groups[(r.env, r.alg)].append(r)
    for group in groups.values():
        keys = sorted({k for r in group for k in r.config} - set(IGNORED_FIELDS))
        differ = [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True)
                                          for r in group}) > 1]
        for r in group:
            r.label = " ".join([r.alg, *(f"{k}={r.config.get(k)}" for k in differ)])


def choose_metric(runs: list[Run], metric: str | None) -> str:
    available = sorted({k for r in runs for rec in r.records for k in rec
                        if isinstance(rec[k], int | float) and k not in ("seed",)})
    if metric is None:
        for m in DEFAULT_METRICS:
            if all(any(m in rec for rec in r.records) for r in runs):
                return m
        metric = DEFAULT_METRICS[-1]
    if not all(any(metric in rec for rec in r.records) for r in runs):
        raise MeigmError(f"metric {metric!r} is not in every run; available: {', '.join(available)}")
    return metric


def finals(runs: list[Run], metric: str) -> dict[str, dict[str, list[float]]]:
    """scenario -> label -> final value per seed (each seed's last record with the metric)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for r in runs:
        values = [float([x for x in recs if metric in x][-1][metric])
                  for _, recs in sorted(r.per_seed().items())]
        out[r.env].setdefault(r.label, []).extend(values)
    return dict(out)


# ------------------------------------------------------------------ statistics
def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the mean over seeds, per point.

    values [seeds, points] -> (lo [points], hi [points]); one seed gives a zero-width band.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # resampled seeds
    means = values[idx].mean(axis=1)  # [n_boot, points]
    tail = (1.0 - level) / 2 * 100
    return np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)


def up_to(records: list[dict[str, Any]], max_steps: int | None) -> list[dict[str, Any]]:
    """One seed's evaluation records (in logged order) up to the budget ``max_steps``.

    A seed is evaluated at the first iteration at or after each multiple of its
    ``test_interval`` (issue 14), so its point "at" N env steps is logged at N plus part of
    a collection: keep every record before N and the first one at or after it. This is
    what lets a 1M-step run be read at 300k beside runs whose budget was 300k."""
    if max_steps is None:
        return records
    before = [r for r in records if r["t_env"] < max_steps]
    after = [r for r in records if r["t_env"] >= max_steps]
    return before + after[:1]


#: What a curve's x axis may be: env steps, or wall-clock seconds since the run started
#: (compile included, resumed legs continuing; recorded by runs since 2026-12-07).
X_AXES = {"t_env": "env steps", "wall_seconds": "wall-clock seconds (compile included)"}


def curve(run: Run, metric: str, max_steps: int | None = None,
          x: str = "t_env") -> tuple[np.ndarray, np.ndarray]:
    """x (mean ``x`` across seeds per evaluation index) [P], values [seeds, P].

    Seeds are aligned by evaluation index and cut to the shortest seed; with
    ``max_steps``, each seed is first cut at that budget (``up_to``)."""
    per_seed = per_seed_up_to(run, metric, max_steps)
    points = min(len(s) for s in per_seed)
    if any(x not in rec for s in per_seed for rec in s[:points]):
        raise MeigmError(f"{run.path}: its metrics.jsonl has no {x!r} (a run recorded before "
                         "meigm logged it); plot it against t_env")
    x = np.mean([[rec[x] for rec in s[:points]] for s in per_seed], axis=0)
    y = np.array([[rec[metric] for rec in s[:points]] for s in per_seed], dtype=np.float64)
    return x, y


def per_seed_up_to(run: Run, metric: str, max_steps: int | None = None) -> list[list[dict[str, Any]]]:
    """Each seed's records of ``metric``, in seed order, cut at ``max_steps`` (``up_to``)."""
    return [up_to([rec for rec in recs if metric in rec], max_steps)
            for _, recs in sorted(run.per_seed().items())]


def window_mean(run: Run, metric: str, until: int, since: int = 0) -> np.ndarray | None:
    """Per seed [seeds]: the mean of ``metric`` over its points from the one at ``since``
    to the one at ``until`` (each "at" in ``up_to``'s sense: the first point at or after
    that many env steps), or None unless every seed has logged a point at ``until`` (a
    run still short of it is not compared)."""
    out = []
    for recs in per_seed_up_to(run, metric, until):
        if not recs or recs[-1]["t_env"] < until:
            return None
        # exists: the last point is at or after until
        first = next(i for i, r in enumerate(recs) if r["t_env"] >= min(since, until))
        out.append(np.mean([float(r[metric]) for r in recs[first:]]))
    return np.array(out, dtype=np.float64)


#: The reproduction protocol's score of a seed: the mean of this many last evaluation points.
PROTOCOL_POINTS = 5


def protocol_scores(run: Run, metric: str, budget: int | None = None,
                    points: int = PROTOCOL_POINTS) -> np.ndarray:
    """Per seed [seeds], in seed order: the mean of ``metric`` over its last ``points``
    evaluation points up to ``budget`` (``up_to``'s reading: the point at the budget is the
    first at or after it).

    Why several points: one point of 128 test episodes carries ±4 points of binomial noise
    per seed on top of the policy's own swings between evaluations, which at a few seeds a
    side hides the 5-point gaps the paper reports. Refuses (``MeigmError``, naming the run)
    a seed that has not reached the budget or has fewer points: a score read short of the
    budget would be compared silently with scores read at it."""
    out = []
    for seed, recs in zip(sorted(run.per_seed()), per_seed_up_to(run, metric, budget), strict=True):
        if budget is not None and (not recs or recs[-1]["t_env"] < budget):
            last = recs[-1]["t_env"] if recs else 0
            raise MeigmError(f"{run.path}: seed {seed} has reached {last:,} of the {budget:,} env "
                             f"steps its protocol score is read at")
        if len(recs) < points:
            raise MeigmError(f"{run.path}: seed {seed} has {len(recs)} evaluation points of "
                             f"{metric!r}; the protocol score needs {points}")
        out.append(np.mean([float(r[metric]) for r in recs[-points:]]))
    return np.array(out, dtype=np.float64)


def diff_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(a) − mean(b) and its 95% Welch interval.

    a [seeds_a], b [seeds_b]: one value per seed of two runs (unpaired). Welch's t, not a
    percentile bootstrap: with 3 seeds a side a bootstrap of the seeds cannot see the
    spread it did not draw, and called two samples of one normal law "separated" 19% of
    the time (nominal 5%; Welch 4%; ``benchmarks/interval_coverage.py``). See
    ``pooled_diff_ci``."""
    return pooled_diff_ci([(a, b)])


def _std(x: np.ndarray) -> float:
    """x [n]'s sample standard deviation, exact at any magnitude of its spread: taken on
    the deviations over their largest, so no square under- or overflows."""
    dev = x - x.mean()
    m = float(np.abs(dev).max())
    return m * float(np.std(dev / m, ddof=1)) if m > 0 else 0.0


def pooled_diff_ci(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    """The mean over scenarios of mean(a) − mean(b), and its 95% Welch interval: one claim
    over several scenarios (the paper's "ME-QMIX at or above QMIX" over the races) from
    runs too few to separate it on any one.

    pairs: per scenario, a [seeds_a] and b [seeds_b], one value per seed of two runs, each
    scenario weighted 1/k. The estimate's variance is Σ (s_a²/n_a + s_b²/n_b) / k² over the
    scenarios (runs and scenarios independent), its degrees of freedom Welch–Satterthwaite's
    over all 2k runs, so the interval widens as the seeds get fewer. A run of one seed has
    no spread to estimate: the interval is then unbounded. Runs whose seeds all agree give
    a zero-width interval at the estimate."""
    k = len(pairs)
    point = float(np.mean([np.mean(a) - np.mean(b) for a, b in pairs]))
    runs = [np.asarray(run, dtype=np.float64) for pair in pairs for run in pair]
    if min(len(x) for x in runs) < 2:
        return point, -np.inf, np.inf
    n = np.array([len(x) for x in runs])
    se = np.array([_std(x) for x in runs]) / np.sqrt(n) / k  # each run's share, as a sd
    scale = float(se.max())
    if scale == 0.0:
        return point, point, point
    # Welch–Satterthwaite dof on the shares over the largest: squaring raw variances under-
    # or overflows (a NaN bound at spreads of 1e-108)
    rel2 = (se / scale) ** 2
    dof = rel2.sum() ** 2 / float(np.sum(rel2**2 / (n - 1)))
    half = float(stats.t.ppf(0.975, dof) * np.sqrt(rel2.sum())) * scale
    return point, point - half, point + half


def verdict(lo: float, hi: float, first: str = "ME", second: str = "base") -> str:
    """What the 95% interval of (``first`` − ``second``: an ME learner − its base, by
    default) allows one to say, and no more."""
    return f"{first} ahead" if lo > 0 else f"{second} ahead" if hi < 0 else "not separated"


# ------------------------------------------------------------------ outputs
def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def plot_runs(run_dirs: list[Path], out_dir: Path, metric: str | None = None, x: str = "t_env",
              n_boot: int = 2000, seed: int = 0,
              references: dict[str, float] | None = None,
              max_steps: int | None = None) -> list[Path]:
    """One figure per scenario, one line per label: mean and 95% bootstrap band.

    ``references`` {label: value}: dashed horizontal lines drawn on every figure — a
    random policy's return, a paper's figure — so a curve is read against its floor.
    ``max_steps``: draw each seed only up to that budget (``up_to``), to compare runs
    trained for different budgets on the same stretch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in X_AXES:
        raise MeigmError(f"unknown x axis {x!r}; allowed: {', '.join(X_AXES)}")
    runs = find_runs(run_dirs)
    metric = choose_metric(runs, metric)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_env: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_env[r.env].append(r)
    written = []
    for env, env_runs in sorted(by_env.items()):
        fig, ax = plt.subplots(figsize=(6, 4))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, r in enumerate(sorted(env_runs, key=lambda r: r.label)):
            xs, ys = curve(r, metric, max_steps, x)
            lo, hi = bootstrap_ci(ys, n_boot, seed)
            # past the colour cycle (10 lines), a new dash pattern: no two lines look alike
            style = ("-", "--", "-.", ":")[(i // len(colours)) % 4]
            (line,) = ax.plot(xs, ys.mean(axis=0), linestyle=style, color=colours[i % len(colours)],
                              label=f"{r.label} ({ys.shape[0]} seeds)")
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        for i, (name, value) in enumerate(sorted((references or {}).items())):
            ax.axhline(value, color="0.4", linestyle=("--", ":", "-.")[i % 3], linewidth=1,
                       label=f"{name} ({value:g})")
        # Where the shaping reward has annealed to 0 (Overcooked): the curves before it were
        # learned with help the test return never sees.
        horizons = {int(r.config.get("reward_shaping_horizon") or 0) for r in env_runs} - {0}
        if x != "t_env":  # the horizon is in env steps
            horizons = set()
        for h in sorted(horizons):
            ax.axvline(h, color="0.6", linestyle=":", linewidth=1, label=f"shaping ends ({h:,})")
        ax.set_xlabel(X_AXES[x])
        ax.set_ylabel(metric)
        ax.set_title(f"{env}: mean and 95% bootstrap CI over seeds", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        stem = out_dir / f"{_slug(env.replace(':', '_'))}_{_slug(metric.replace('/', '_'))}"
        for ext in (".png", ".pdf"):
            path = stem.with_name(stem.name + ext)  # not with_suffix: names may hold dots
            fig.savefig(path, dpi=120)
            written.append(path)
        plt.close(fig)
    return written


def aggregate(table: dict[str, dict[str, list[float]]], labels: list[str], n_boot: int,
              seed: int) -> dict[str, Any]:
    """IQM with stratified-bootstrap 95% CIs and pairwise probability of improvement
    (rliable), over the scenarios every label covers, each cut to the fewest seeds."""
    from rliable import library as rly
    from rliable import metrics

    shared = sorted(env for env, cols in table.items() if all(lab in cols for lab in labels))
    if not shared:
        return {"note": "no scenario is covered by every label; no aggregate"}
    n = min(len(table[env][lab]) for env in shared for lab in labels)
    scores = {lab: np.array([table[env][lab][:n] for env in shared]).T for lab in labels}  # [runs, tasks]
    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global generator
    point, ci = rly.get_interval_estimates(
        scores, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=n_boot)
    iqm = {lab: {"iqm": float(point[lab][0]), "ci95": [float(ci[lab][0, 0]), float(ci[lab][1, 0])]}
           for lab in labels}
    poi = {}
    for a in labels:
        for b in labels:
            if a != b:
                poi[f"{a} > {b}"] = float(metrics.probability_of_improvement(scores[a], scores[b]))
    return {"scenarios": shared, "seeds_used": n, "iqm": iqm, "probability_of_improvement": poi}


def table_runs(run_dirs: list[Path], out_dir: Path, metric: str | None = None, n_boot: int = 2000,
               seed: int = 0) -> dict[str, Any]:
    """Table 2 layout (scenario rows, label columns) as Markdown, LaTeX and JSON; finished
    runs only."""
    runs = find_runs(run_dirs, finished_only=True)
    metric = choose_metric(runs, metric)
    table = finals(runs, metric)
    labels = sorted({lab for cols in table.values() for lab in cols})
    result: dict[str, Any] = {"metric": metric, "labels": labels, "rows": {}}
    md = [f"| scenario | {' | '.join(labels)} |", "|---|" + "---|" * len(labels)]
    tex = ["\\begin{tabular}{l" + "c" * len(labels) + "}", "\\toprule",
           "scenario & " + " & ".join(lab.replace("_", "\\_") for lab in labels) + " \\\\",
           "\\midrule"]
    for env in sorted(table):
        cols = table[env]
        stats = {lab: (float(np.mean(v)), float(np.std(v)), v) for lab, v in cols.items()}
        best = max(m for m, _, _ in stats.values())
        result["rows"][env] = {lab: {"mean": m, "std": s, "per_seed": v, "best": m == best}
                               for lab, (m, s, v) in stats.items()}
        md_cells, tex_cells = [], []
        for lab in labels:
            if lab not in stats:
                md_cells.append("–")
                tex_cells.append("--")
                continue
            m, s, _ = stats[lab]
            cell = f"{m:.2f} ± {s:.2f}"
            md_cells.append(f"**{cell}**" if m == best else cell)
            tcell = f"{m:.2f} $\\pm$ {s:.2f}"
            tex_cells.append(f"\\textbf{{{tcell}}}" if m == best else tcell)
        md.append(f"| {env} | {' | '.join(md_cells)} |")
        tex.append(f"{env.replace('_', chr(92) + '_')} & {' & '.join(tex_cells)} \\\\")
    tex += ["\\bottomrule", "\\end{tabular}"]
    agg = aggregate(table, labels, n_boot, seed)
    result["aggregate"] = agg
    md.append("")
    md.append(f"Final greedy `{metric}`, mean ± std over seeds; best per row in bold.")
    if "iqm" in agg:
        md.append(f"Aggregate over {len(agg['scenarios'])} scenario(s), {agg['seeds_used']} seeds "
                  "each (rliable, stratified bootstrap):")
        md.append("")
        md.append("| label | IQM | 95% CI |")
        md.append("|---|---|---|")
        for lab, v in agg["iqm"].items():
            md.append(f"| {lab} | {v['iqm']:.3f} | [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] |")
        md.append("")
        md.append("| probability of improvement | P |")
        md.append("|---|---|")
        for pair, p in agg["probability_of_improvement"].items():
            md.append(f"| {pair} | {p:.3f} |")
    else:
        md.append(agg["note"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text("\n".join(md) + "\n")
    (out_dir / "table.tex").write_text("\n".join(tex) + "\n")
    (out_dir / "table.json").write_text(json.dumps(result, indent=1))
    return result
