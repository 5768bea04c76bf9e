"""Time from start to the first training step: a run, the same run again, and a resume.

    python benchmarks/startup.py                                # me_qmix on smax:protoss_5_vs_5
    python benchmarks/startup.py --env smax:3m --alg qmix --repeats 3

Every leg is a fresh ``meigm train`` process, and all legs share one compilation cache
(``MEIGM_COMPILATION_CACHE``) that starts empty:

  cold     the run with nothing cached: its programs compile from scratch
  again    the same run into a new directory: its compile is a persistent-cache hit
  resume   ``meigm train --resume`` of a run SIGKILLed after its first checkpoint

For each leg: ``import`` (Python, JAX and meigm start-up: a process that only imports
what ``meigm train`` imports), ``startup`` (``results.json``'s ``startup_seconds``: building the program,
initialising or restoring and verifying the state, tracing and compiling), their sum (start to the
first training step) and ``compile`` (``compile_seconds``). ``again`` and ``resume`` are
medians over ``--repeats``. The run is the scenario's default config at ``--interval``
env steps per evaluation (``test_episodes`` 8), so the legs time start-up, not learning.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "MEIGM_COMPILATION_CACHE": str(cache)}


def _cli(args: list[str], cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "meigm.experiments.cli", *args], cwd=REPO,
                            env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, what: str) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}): {err.decode()[-2000:]}")


def import_seconds(cache: Path) -> float:
    t0 = time.perf_counter()
    # what `meigm train` imports before it starts the clock of startup_seconds
    imports = "import meigm.experiments.cli, meigm.api, meigm.envs, meigm.envs.host, meigm.experiments.run"
    subprocess.run([sys.executable, "-c", imports], cwd=REPO, env=_env(cache), check=True)
    return time.perf_counter() - t0


def _leg(out: Path, imported: float) -> dict[str, float]:
    res = json.loads((out / "results.json").read_text())
    return {"import": imported, "startup": res["startup_seconds"],
            "first_step": imported + res["startup_seconds"], "compile": res["compile_seconds"]}


def train(out: Path, run_args: list[str], cache: Path) -> dict[str, float]:
    imported = import_seconds(cache)
    _finish(_cli(["train", "--out", str(out), *run_args], cache), f"meigm train --out {out}")
    return _leg(out, imported)


def killed_after_first_checkpoint(out: Path, run_args: list[str], cache: Path) -> None:
    """A run SIGKILLed once its first interval checkpoint and evaluation row are written."""
    proc = _cli(["train", "--out", str(out), *run_args], cache)
    while proc.poll() is None:
        if (list((out / "checkpoints").glob("step_*.safetensors")) if (out / "checkpoints").is_dir()
                else []) and (out / "metrics.jsonl").is_file():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.2)
    raise SystemExit(f"{out}: the run ended (exit {proc.returncode}) before it could be killed "
                     "after its first checkpoint; raise t_max")


def resume(out: Path, cache: Path) -> dict[str, float]:
    imported = import_seconds(cache)
    _finish(_cli(["train", "--resume", str(out), "--no-progress"], cache), f"meigm train --resume {out}")
    return _leg(out, imported)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="smax:protoss_5_vs_5")
    p.add_argument("--alg", default="me_qmix")
    p.add_argument("--interval", type=int, default=2000, help="env steps per evaluation point")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="meigm-startup-"))
    cache = root / "cache"
    base = ["--alg", args.alg, "--env", args.env, "--no-progress", f"test_interval={args.interval}",
            "test_episodes=8", *args.overrides]
    short = [*base, f"t_max={args.interval}", "checkpoint_interval=0"]
    # three intervals and a checkpoint at each: killed after the first, resumed for two
    long = [*base, f"t_max={3 * args.interval}", f"checkpoint_interval={args.interval}"]

    legs: dict[str, list[dict[str, float]]] = {"cold": [train(root / "cold", short, cache)]}
    print(f"cold: {legs['cold'][0]}", flush=True)
    legs["again"] = [train(root / f"again{i}", short, cache) for i in range(args.repeats)]
    print(f"again: {legs['again']}", flush=True)
    legs["resume"] = []
    for i in range(args.repeats):
        killed_after_first_checkpoint(root / f"killed{i}", long, cache)
        legs["resume"].append(resume(root / f"killed{i}", cache))
    print(f"resume: {legs['resume']}", flush=True)

    cache_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    table = {leg: {k: round(statistics.median(r[k] for r in rows), 1) for k in rows[0]}
             for leg, rows in legs.items()}
    print(f"\n{args.alg} on {args.env}, seconds (median of {args.repeats} for again/resume); "
          f"compilation cache {cache_mb:.1f} MB")
    print(f"{'leg':8s} {'import':>7s} {'startup':>8s} {'compile':>8s} {'start->first step':>18s}")
    for leg, row in table.items():
        print(f"{leg:8s} {row['import']:7.1f} {row['startup']:8.1f} {row['compile']:8.1f} "
              f"{row['first_step']:18.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"alg": args.alg, "env": args.env, "legs": legs,
                                               "median": table, "cache_mb": round(cache_mb, 1),
                                               "repeats": args.repeats}, indent=1) + "\n")


if __name__ == "__main__":
    main()
