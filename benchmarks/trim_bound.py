"""How much of the update could follow the real episode lengths, read from a run's replay buffer
(issue 14, item 2).

    python benchmarks/trim_bound.py RUN_OR_CHECKPOINT [...] [--batch-size 128] [--draws 2000]

The update is FLOP-bound and its cost is proportional to the steps it unrolls (the
throughput tables in ``benchmarks/notes/length_groups.md``). meigm trims each sampled batch to the
smallest of ``length_buckets`` lengths that holds its *longest* real episode (pymarl2's
rule); one episode that ran to the limit keeps the whole batch at full length. This script
draws batches the way the buffer does (uniformly, without replacement) from the episodes a
checkpoint holds, and prints the fraction of the full-length unroll each rule would pay:

* ``longest, K buckets``: today's rule with K buckets (1 = no trimming);
* ``G sorted groups, K buckets``: the batch sorted by length and split into G equal
  groups, each trimmed on its own (G compiled copies of the update per bucket);
* ``exact per episode``: every episode unrolled for its own length (what no static-shape
  program can do: the bound).

Its inverse bounds the speed-up of the update (not of training, which also collects). The
buffer is that of the newest interval checkpoint (``step_<t>``: a ``final`` one holds no
buffer), so it describes the episodes of the last ``buffer_size`` episodes before it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from meigm.errors import MeigmError
from meigm.experiments.checkpoint import FINAL, list_checkpoints, read_metadata, read_tensors
from meigm.rollout.buffer import length_buckets

MASK, SIZE = "train/buffer/data/mask", "train/buffer/size"
BUCKETS = (1, 4, 8)
GROUPS = (2, 4, 8)


def checkpoint_of(path: Path) -> Path:
    """``path`` itself if it is a file, else its run's newest interval checkpoint."""
    if path.is_file():
        return path
    found = [p for p in list_checkpoints(path) if p.name != FINAL]
    if not found:
        raise MeigmError(f"no interval checkpoint (checkpoints/step_<t>.safetensors) under {path}")
    return found[-1]


def episode_lengths(checkpoint: Path) -> tuple[list[np.ndarray], int]:
    """Real steps of every stored episode, per seed ([size_s] each), and the episode limit."""
    t = read_tensors(checkpoint, [MASK, SIZE])
    mask, size = t[MASK], t[SIZE]  # [seeds, capacity, T] bool, [seeds] int
    return [mask[s, : int(size[s])].sum(-1).astype(np.int64) for s in range(mask.shape[0])], mask.shape[-1]


def draw_batches(lengths: np.ndarray, batch_size: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Episode lengths of ``draws`` batches sampled without replacement, each sorted
    ascending: [draws, batch_size]."""
    if batch_size > lengths.size:
        raise MeigmError(f"--batch-size {batch_size} is more than the {lengths.size} episodes stored")
    idx = np.argpartition(rng.random((draws, lengths.size)), batch_size - 1, axis=1)[:, :batch_size]
    return np.sort(lengths[idx], axis=1)


def unroll_fraction(batches: np.ndarray, limit: int, n_buckets: int, groups: int = 1) -> float:
    """Mean fraction of the full ``limit``-step unroll paid when each of ``groups`` equal
    groups of every sorted batch [draws, B] is trimmed to the smallest bucket that holds
    its longest episode."""
    draws, b = batches.shape
    if b % groups:
        raise MeigmError(f"the batch of {b} does not split into {groups} equal groups")
    buckets = np.array(length_buckets(limit, n_buckets))
    longest = batches.reshape(draws, groups, b // groups).max(-1)  # [draws, G]
    paid = buckets[np.searchsorted(buckets, longest, side="left")]
    return float(paid.mean() / limit)


def measure(checkpoint: Path, batch_size: int, draws: int, seed: int) -> dict:
    per_seed, limit = episode_lengths(checkpoint)
    meta = read_metadata(checkpoint)
    rng = np.random.default_rng(seed)
    rows = []
    for s, lengths in enumerate(per_seed):
        batches = draw_batches(lengths, batch_size, draws, rng)
        row = {"seed": meta["seeds"][s], "t_env": meta["t_env"][s], "episodes": int(lengths.size),
               "mean_length": float(lengths.mean()), "timeouts": float((lengths >= limit).mean()),
               "batch_holds_timeout": float((batches[:, -1] >= limit).mean())}
        for k in BUCKETS:
            row[f"longest, {k} buckets"] = unroll_fraction(batches, limit, k)
        for g in (g for g in GROUPS if batch_size % g == 0 and g < batch_size):
            row[f"{g} sorted groups, 8 buckets"] = unroll_fraction(batches, limit, 8, g)
        row["exact per episode"] = float(batches.mean() / limit)
        rows.append(row)
    return {"checkpoint": str(checkpoint), "env": meta["env"], "alg": meta["alg"],
            "episode_limit": limit, "batch_size": batch_size, "seeds": rows}


def markdown(result: dict) -> str:
    rules = [k for k in result["seeds"][0] if "bucket" in k or k == "exact per episode"]
    head = (f"{result['alg']} on {result['env']} ({result['checkpoint']}; batch {result['batch_size']}, "
            f"limit {result['episode_limit']})\n\n| seed | env steps | mean length | timed out | batch "
            "holds one | " + " | ".join(rules) + " |\n|" + "---|" * (5 + len(rules)) + "\n")
    body = "".join(
        f"| {r['seed']} | {r['t_env'] / 1000:.0f}k | {r['mean_length']:.1f} | {r['timeouts']:.1%} | "
        f"{r['batch_holds_timeout']:.0%} | " + " | ".join(f"{r[k]:.2f}" for k in rules) + " |\n"
        for r in result["seeds"])
    return head + body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--batch-size", type=int, default=128, help="episodes per sampled batch (default 128)")
    p.add_argument("--draws", type=int, default=2000, help="batches drawn per seed (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    a = p.parse_args(argv)
    try:
        if a.batch_size <= 0 or a.draws <= 0:
            raise MeigmError(f"--batch-size and --draws must be positive, got {a.batch_size} and {a.draws}")
        results = [measure(checkpoint_of(Path(x)), a.batch_size, a.draws, a.seed) for x in a.paths]
    except MeigmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(markdown(r) for r in results), end="")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
