"""Learning curves and a final-metric table from run directories.

    python benchmarks/learning_curves.py RUN_DIR... --metric test/won --out benchmarks/results/x.png

Each run directory's ``metrics.jsonl`` holds one row per (evaluation point, seed).
A run's curve is the mean over its seeds with the min-max band, plotted against env
steps; seeds are aligned on their evaluation index, because vmapped seeds evaluate
together but count their own env steps, and the x value is the seeds' mean. The table
gives the final greedy test metric per seed and its mean ± std.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import yaml


def load_run(run_dir: Path, metric: str) -> tuple[str, np.ndarray, np.ndarray]:
    """-> (label, env steps [E], metric [S, E]) for E evaluation points and S seeds."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    by_seed: dict[int, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_seed.setdefault(row["seed"], []).append((row["t_env"], row[metric]))
    n = min(len(v) for v in by_seed.values())
    steps = np.array([[t for t, _ in v[:n]] for v in by_seed.values()], float)
    values = np.array([[m for _, m in v[:n]] for v in by_seed.values()], float)
    return cfg["alg"], steps.mean(axis=0), values


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--metric", default="test/return")
    p.add_argument("--title", default=None)
    p.add_argument("--out", type=Path, required=True, help="PNG path")
    a = p.parse_args()

    fig, ax = plt.subplots(figsize=(6, 4))
    print(f"| algorithm | seeds | env steps / seed | final {a.metric} per seed | mean ± std |")
    print("|---|---|---|---|---|")
    for run in a.runs:
        label, steps, values = load_run(run, a.metric)
        mean = values.mean(axis=0)
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), alpha=0.2)
        final = values[:, -1]
        print(f"| {label} | {len(final)} | {steps[-1]:.0f} | {', '.join(f'{v:.3f}' for v in final)} | "
              f"{final.mean():.3f} ± {final.std():.3f} |")
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel(f"greedy {a.metric}")
    ax.set_title(a.title or ", ".join(str(r.name) for r in a.runs))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
