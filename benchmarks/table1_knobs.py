"""Why does ME-QMIX find (A, A) in only some seeds? Table 1 under the knobs the paper leaves open.

    python benchmarks/table1_knobs.py              # every setting below, 10 seeds each
    python benchmarks/table1_knobs.py --only default,alpha_lr=0.3

Each setting trains ``me_qmix`` on ``matrix:table1`` (10 seeds in one program) with
one change from the defaults and prints the fraction of seeds whose greedy joint
action is the optimum (A, A), misaligned seeds, and the final α and policy entropy.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import numpy as np

from meigm import config
from meigm.experiments.run import train_run

#: label -> overrides (on top of the defaults; t_max is the scenario default unless set)
SETTINGS: dict[str, list[str]] = {
    "default": [],
    "t_max=1000": ["t_max=1000"],
    "t_max=20000": ["t_max=20000"],
    "alpha_init=0.1": ["alpha_init=0.1"],
    "alpha_init=10": ["alpha_init=10.0"],
    "fixed alpha=20": ["learn_alpha=false", "alpha_init=20.0"],
    "alpha_lr=3e-3": ["alpha_lr=0.003"],
    "alpha_lr=0.03": ["alpha_lr=0.03"],
    "alpha_lr=0.3 (paper)": ["alpha_lr=0.3"],
    "target_entropy=0.6": ["target_entropy=0.6"],
    "target_entropy=0.9": ["target_entropy=0.9"],
    "opt_layers=1": ["opt_layers=1"],
    "alpha_loss=sampled": ["alpha_loss=sampled"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=None, help="comma-separated labels from: " + ", ".join(SETTINGS))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--alg", default="me_qmix")
    a = p.parse_args()
    labels = a.only.split(",") if a.only else list(SETTINGS)
    print(f"# {a.alg} on matrix:table1, {a.seeds} seeds per setting; "
          f"{platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}")
    print("| setting | t_max | (A,A) found | misaligned | final α (mean) | entropy/agent (mean) | s |")
    print("|---|---|---|---|---|---|---|")
    for label in labels:
        cfg = config.build(None, SETTINGS[label], alg=a.alg, env="matrix:table1", seeds=a.seeds)
        t0 = time.perf_counter()
        res = train_run(cfg, out=None, progress=False)
        wall = time.perf_counter() - t0
        view = res["first_step"]
        last = res["history"][-a.seeds:]
        alpha = np.mean([r.get("train/alpha", np.nan) for r in last])
        ent = np.mean([r.get("train/entropy", np.nan) for r in last])
        print(f"| {label} | {res['config'].t_max} | {view['fraction_optimal']:.0%} | "
              f"{view['misaligned_seeds']} | {alpha:.2f} | {ent:.2f} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
