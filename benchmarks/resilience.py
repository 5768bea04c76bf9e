"""Runs that survive: SIGKILLs survived, time to resume, checkpoint size and time.

    python benchmarks/resilience.py kills --kills 10      # kill/resume a small SMAX run
    python benchmarks/resilience.py checkpoint --seeds 1  # the paper's buffer on protoss 5v5

``kills``: trains a small ``smax:3m`` run once uninterrupted, then again with ``--kills``
SIGKILLs at random moments (each a random 0.2 s to T/(kills+1) after the previous
resume got going, T the uninterrupted run's time; some land in a checkpoint write),
each followed by ``meigm train --resume``; prints how many kills were delivered before
the run finished and how many it survived (all, if it finished with the same metrics),
whether its ``metrics.jsonl`` equals the uninterrupted run's, and
the median time from starting the resumed process to its first new evaluation point
(Python and JAX start-up, compile from the persistent cache, checkpoint load and
verification, one chunk of training).

``checkpoint``: the state of a paper-config run on ``smax:protoss_5_vs_5`` (buffer of
5000 padded episodes per seed) saved and loaded ``--repeats`` times: file size, median
save time (gather, per-tensor sha256, write, fsync, rename) and median load time
(read and checksum every tensor).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_ARGS = [
    "--alg", "me_qmix", "--env", "smax:3m", "--seeds", "2", "--no-progress",
    "t_max=10000", "test_interval=200", "checkpoint_interval=400", "keep_checkpoints=2",
    "n_envs=2", "batch_size=8", "buffer_size=512", "test_episodes=2", "hidden_dim=16",
    "mixing_embed=8", "hypernet_embed=16", "opt_hidden=8",
]


def _env(cache: str) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _start(args: list[str], cache: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "meigm.experiments.cli", *args], cwd=REPO,
                            env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _lines(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except OSError:
        return 0


def _checkpoint_points(folder: Path) -> int:
    """Evaluation points covered by the newest interval checkpoint (0 if none), read from
    the safetensors header without importing meigm."""
    best = None
    for p in folder.glob("step_*.safetensors") if folder.is_dir() else []:
        step = int(p.stem.split("_")[1])
        best = max(best or (step, p), (step, p))
    if best is None:
        return 0
    with best[1].open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return int(header["__metadata__"]["eval_index"]) + 1


def kills(n_kills: int, seed: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="meigm-kills-"))
    cache = str(root / "cache")
    t0 = time.perf_counter()
    ref = _start(["train", "--out", str(root / "ref"), *RUN_ARGS], cache)
    assert ref.wait() == 0, "reference run failed"
    t_ref = time.perf_counter() - t0
    rng = random.Random(seed)
    cut = root / "cut"
    metrics = cut / "metrics.jsonl"
    proc = _start(["train", "--out", str(cut), *RUN_ARGS], cache)
    delivered, resume_s, in_write = 0, [], 0
    for _ in range(n_kills):
        time.sleep(rng.uniform(0.2, t_ref / (n_kills + 1)))
        if proc.poll() is not None:
            break
        ckdir = cut / "checkpoints"
        writing = ckdir.is_dir() and any(p.name.endswith(".tmp") for p in ckdir.iterdir())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        in_write += writing
        kept = _checkpoint_points(ckdir) * 2  # lines the resumed run truncates to (2 seeds)
        inode = metrics.stat().st_ino if metrics.exists() else None
        start = time.perf_counter()
        proc = _start(["train", "--resume", str(cut), "--no-progress"], cache)
        # resumed = metrics.jsonl rewritten (a new inode) and a point beyond the checkpoint
        while proc.poll() is None and not (metrics.exists() and metrics.stat().st_ino != inode
                                           and _lines(metrics) > kept):
            time.sleep(0.01)
        resume_s.append(time.perf_counter() - start)
        delivered += 1
    ok = proc.wait() == 0
    same = ok and (cut / "metrics.jsonl").read_text() == (root / "ref" / "metrics.jsonl").read_text()
    return {"kills_asked": n_kills, "kills_delivered": delivered,
            "kills_survived": delivered if same else 0,
            "killed_during_checkpoint_write": in_write,
            "finished": ok, "metrics_equal_uninterrupted": same,
            "reference_run_s": round(t_ref, 1),
            "time_to_resume_s_median": round(statistics.median(resume_s), 2) if resume_s else None,
            "time_to_resume_s_all": [round(x, 2) for x in resume_s]}


def checkpoint(seeds: int, repeats: int) -> dict:
    import jax

    from meigm import config
    from meigm.experiments import checkpoint as ckpt
    from meigm.program import init_seeds, make_program, seed_keys
    from meigm.rollout import buffer_bytes

    env_name = "smax:protoss_5_vs_5"
    program = make_program(config.build(None, [], alg="me_qmix", env=env_name, seeds=seeds))
    cfg, env, trainer = program.cfg, program.env, program.trainer
    state = init_seeds(trainer.init, seed_keys(cfg))
    # Fill the observations with noise so nothing about the file is special-cased zeros.
    buf = state.data.buffer
    obs = buf.data.obs
    state = state.replace(data=state.data.replace(buffer=buf.replace(data=buf.data.replace(
        obs=jax.random.normal(jax.random.PRNGKey(0), obs.shape, obs.dtype)))))
    folder = Path(tempfile.mkdtemp(prefix="meigm-ckpt-"))
    template = jax.eval_shape(jax.vmap(trainer.init), seed_keys(cfg))
    saves, loads = [], []
    for i in range(repeats):
        path = folder / f"step_{i}.safetensors"
        t0 = time.perf_counter()
        ckpt.save_checkpoint(path, state, cfg, [0] * seeds, 0)
        saves.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ckpt.load_train_state(path, template)
        loads.append(time.perf_counter() - t0)
        size = path.stat().st_size
        path.unlink()
    return {"env": env_name, "seeds": seeds, "buffer_size": cfg.buffer_size,
            "buffer_gib": round(buffer_bytes(env.spec, cfg.buffer_size) * seeds / 2**30, 3),
            "file_gib": round(size / 2**30, 3), "save_s_median": round(statistics.median(saves), 2),
            "load_s_median": round(statistics.median(loads), 2), "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kills")
    k.add_argument("--kills", type=int, default=10)
    k.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("checkpoint")
    c.add_argument("--seeds", type=int, default=1)
    c.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = kills(args.kills, args.seed) if args.what == "kills" else checkpoint(args.seeds, args.repeats)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
