"""Wall time of 1 seed vs N seeds trained in one vmapped program, and training env steps/s.

    python benchmarks/seed_scaling.py                       # me_qmix on matrix:table1, 1 vs 10 seeds
    python benchmarks/seed_scaling.py --alg qmix --repeats 5 t_max=8000

Each configuration is trained ``--repeats`` times in this process (every repeat
recompiles, as a fresh ``meigm train`` would); medians are printed. "train s" excludes
the first chunk (which includes compilation); env steps/s counts every seed's steps.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax

from meigm import config
from meigm.experiments.run import train_run


def measure(alg: str, env: str, seeds: int, overrides: list[str]) -> dict[str, float]:
    cfg = config.build(None, overrides, alg=alg, env=env, seeds=seeds)
    t0 = time.perf_counter()
    res = train_run(cfg, out=None, progress=False)
    wall = time.perf_counter() - t0
    steps = sum(res["t_env"])
    return {"wall": wall, "compile": res["compile_seconds"],
            "train": wall - res["compile_seconds"], "steps_per_s": steps / wall,
            "train_steps_per_s": steps / max(wall - res["compile_seconds"], 1e-9)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alg", default="me_qmix")
    p.add_argument("--env", default="matrix:table1")
    p.add_argument("--seeds", default="1,10", help="comma-separated seed counts to compare")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("overrides", nargs="*", default=["t_max=4000"])
    a = p.parse_args()
    counts = [int(s) for s in a.seeds.split(",")]
    print(f"# {a.alg} on {a.env}, {' '.join(a.overrides)}; {a.repeats} repeats; "
          f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}, "
          f"jax {jax.__version__}")
    rows = {}
    for n in counts:
        runs = [measure(a.alg, a.env, n, a.overrides) for _ in range(a.repeats)]
        rows[n] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print("| seeds | wall s | compile s | train s | env steps/s (all seeds) | train-only steps/s |")
    print("|---|---|---|---|---|---|")
    for n, r in rows.items():
        print(f"| {n} | {r['wall']:.1f} | {r['compile']:.1f} | {r['train']:.1f} | "
              f"{r['steps_per_s']:.0f} | {r['train_steps_per_s']:.0f} |")
    lo, hi = min(counts), max(counts)
    ratio = rows[hi]["wall"] / rows[lo]["wall"]
    ratio_train = rows[hi]["train"] / rows[lo]["train"]
    print(f"\nwall({hi} seeds) / wall({lo} seed) = {ratio:.2f} (train-only {ratio_train:.2f}); "
          f"{hi} sequential runs would take {hi / lo:.0f}x")


if __name__ == "__main__":
    main()
