"""What a half-width replay buffer (``replay_dtype``) does to the values it stores.

    python benchmarks/replay_dtype.py                         # the 20-unit races, float16
    python benchmarks/replay_dtype.py --env smax:3m --dtype bfloat16 --episodes 64

Why: the 20-unit SMAX races need ``replay_dtype=float16`` to hold the paper's 5,000
episodes on a 24 GiB machine (Config.replay_dtype; the table2 preset sets it there). The
learner then trains on observations and states rounded to 16 bits. This measures that
rounding on the scenario's own values: episodes of uniformly random legal actions (the
buffer's contents early in training), each value cast to ``--dtype`` and back, against
the float32 value: the largest magnitude, the largest absolute error, and the share of
values stored exactly.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from meigm.config import REPLAY_DTYPES
from meigm.envs.registry import make_env


def random_episodes(env_name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """obs [n, T, N, O] and states [n, T, S] of ``n`` random-play episodes (T: the limit;
    steps after an episode's end repeat the adapter's terminal values)."""
    env = make_env(env_name)
    limit = env.spec.episode_limit

    def episode(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        k0, key = jax.random.split(key)
        state, ts = env.reset(k0)

        def step(carry, k):
            state, ts = carry
            ka, ks = jax.random.split(k)
            actions = jax.random.categorical(ka, jnp.where(ts.avail, 0.0, -1e9))  # [N]
            state, ts = env.step(ks, state, actions)
            return (state, ts), (ts.obs, ts.state)

        _, (obs, states) = jax.lax.scan(step, (state, ts), jax.random.split(key, limit))
        return obs, states

    obs, states = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(seed), n))
    return np.asarray(obs), np.asarray(states)


def rounding(x: np.ndarray, dtype: str) -> dict[str, float]:
    """x [...] float32 stored as ``dtype``: its largest |x|, largest absolute error and the
    share of values kept exactly."""
    back = np.asarray(jnp.asarray(x).astype(dtype).astype(jnp.float32))
    return {"max_abs": float(np.abs(x).max()), "max_abs_error": float(np.abs(back - x).max()),
            "exact": float(np.mean(back == x))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", action="append", default=None,
                   help="scenario (repeatable); default: a protoss 20v20 and a zerg 20v23")
    p.add_argument("--dtype", default="float16", choices=[d for d in REPLAY_DTYPES if d != "float32"])
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    print(f"| scenario | field | max abs value | max abs error in {a.dtype} | values exact |")
    print("|---|---|---|---|---|")
    for env_name in a.env or ["smax:protoss_20_vs_20", "smax:zerg_20_vs_23"]:
        obs, states = random_episodes(env_name, a.episodes, a.seed)
        for field, x in (("obs", obs), ("state", states)):
            r = rounding(x, a.dtype)
            print(f"| {env_name} | {field} | {r['max_abs']:.3g} | {r['max_abs_error']:.2g} | "
                  f"{100 * r['exact']:.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
