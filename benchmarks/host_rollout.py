"""Host-side roll-out vs the JAX-native roll-out on the same scenario, in one process.

    python benchmarks/host_rollout.py                       # simple_spread, 5 repeats
    python benchmarks/host_rollout.py --repeats 7 --n-envs 8

Both sides play MPE ``simple_spread`` (3 agents, 25 steps): the host side is MPE2's
PettingZoo ``simple_spread_v3`` through meigm's PettingZoo adapter and host roll-out
(:mod:`meigm.rollout.host`), the native side JaxMARL's ``MPE_simple_spread_v3``
(``mpe:simple_spread``) in the scanned, vmapped roll-out. Printed, median of
``--repeats`` timed calls after a warm-up:

* **collect, random actions**: env steps/s of one collection of ``n_envs`` whole
  episodes with uniformly random actions (the agent network still runs, as in training);
  the host side also with ``--workers`` worker processes;
* **train**: env steps/s of the whole training loop (collect + buffer + update) of
  ME-QMIX with the given overrides once the buffer holds a batch, compile excluded.

Also prints the random policy's mean team return on both (the floor a learning curve
must rise above; the two implementations' rewards differ slightly, see the README).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from meigm import config, ops
from meigm.envs import make_env
from meigm.envs.host import HostVecEnv
from meigm.learners import make_learner
from meigm.program import compiled, init_seeds, make_program, seed_keys
from meigm.rollout import rollout
from meigm.rollout.host import host_rollout, make_policy_step

HOST = "pettingzoo:mpe2.simple_spread_v3"
HOST_ARGS = {"continuous_actions": False}
NATIVE = "mpe:simple_spread"


def median_rate(fn, repeats: int) -> tuple[float, float]:
    """(median env steps/s, mean return) of ``fn() -> (steps, returns)`` after a warm-up."""
    fn()
    rates, rets = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        steps, returns = fn()
        rates.append(steps / (time.perf_counter() - t0))
        rets.append(float(np.mean(returns)))
    return statistics.median(rates), float(np.mean(rets))


def random_act(params, q, state, avail, key, t_env=None):
    return ops.sample_masked(key, jnp.zeros(avail.shape), avail)


def collect_host(n_envs: int, workers: int, learner, params, repeats: int):
    env = make_env(HOST, HOST_ARGS)
    vec = HostVecEnv(env, n_envs, workers=workers)
    step = make_policy_step(learner.agent.apply, random_act)
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 1000))

    def once():
        _, stats = host_rollout(vec, step, params, learner.hidden_dim, next(keys)[None],
                                jnp.zeros(1, jnp.int32), 1)
        return int(stats.lengths.sum()), stats.returns

    try:
        return median_rate(once, repeats)
    finally:
        vec.close()


def random_return(episodes: int, learner, params) -> tuple[float, float]:
    """Mean and standard error of the random policy's team return on the host scenario
    over ``episodes`` episodes: the floor drawn under the learning curves."""
    env = make_env(HOST, HOST_ARGS)
    vec = HostVecEnv(env, 8)
    step = make_policy_step(learner.agent.apply, random_act)
    returns = []
    try:
        for i in range(-(-episodes // 8)):
            _, stats = host_rollout(vec, step, params, learner.hidden_dim,
                                    jax.random.PRNGKey(10_000 + i)[None], jnp.zeros(1, jnp.int32), 1)
            returns.extend(np.asarray(stats.returns).ravel().tolist())
    finally:
        vec.close()
    r = np.asarray(returns[:episodes])
    return float(r.mean()), float(r.std(ddof=1) / np.sqrt(len(r)))


def collect_native(n_envs: int, learner, params, repeats: int):
    env = make_env(NATIVE)

    @jax.jit
    def run(key):
        _, stats = rollout(env, learner.agent.apply, params["agent"],
                           lambda p, q, s, a, k: random_act(p, q, s, a, k), params,
                           learner.hidden_dim, key, n_envs)
        return jnp.sum(stats.lengths), stats.returns

    keys = iter(jax.random.split(jax.random.PRNGKey(0), 1000))

    def once():
        steps, returns = jax.block_until_ready(run(next(keys)))
        return int(steps), np.asarray(returns)

    return median_rate(once, repeats)


def train_rate(env_name: str, env_args: dict, overrides: list[str], repeats: int) -> float:
    """Env steps/s of the training loop, one seed, after the buffer holds a batch."""
    program = make_program(config.build(None, overrides, alg="me_qmix", env=env_name,
                                        env_args=env_args, seeds=1))
    cfg, trainer = program.cfg, program.trainer
    run, _ = compiled(trainer)
    ts = init_seeds(trainer.init, seed_keys(cfg))
    def run_chunk(ts):  # one test_interval of env steps
        return run(ts, np.asarray(ts.t_env) + cfg.test_interval)

    while int(ts.data.buffer.size[0]) < cfg.batch_size:
        ts, _ = run_chunk(ts)
    ts, _ = run_chunk(ts)  # warm-up once learning runs
    jax.block_until_ready(ts)
    rates = []
    for _ in range(repeats):
        before = int(ts.t_env[0])
        t0 = time.perf_counter()
        ts, out = run_chunk(ts)
        jax.block_until_ready(out)
        rates.append((int(ts.t_env[0]) - before) / (time.perf_counter() - t0))
    trainer.close()
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-envs", type=int, default=4, help="environments per collection")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (host side)")
    ap.add_argument("--random-episodes", type=int, default=400,
                    help="episodes for the random policy's return on the host scenario")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("overrides", nargs="*", help="training config key=value (e.g. batch_size=32)")
    args = ap.parse_args()

    spec = make_env(HOST, HOST_ARGS).spec
    cfg = config.build(None, [], alg="me_qmix", env=HOST, seeds=1).resolve(1_000_000, {})
    learner = make_learner(cfg, spec)
    params = jax.tree.map(lambda x: x[None], learner.init(jax.random.PRNGKey(0)).params)

    host_rate, host_ret = collect_host(args.n_envs, 0, learner, params, args.repeats)
    host_w_rate, _ = collect_host(args.n_envs, args.workers, learner, params, args.repeats)
    native_rate, native_ret = collect_native(args.n_envs, learner,
                                             jax.tree.map(lambda x: x[0], params), args.repeats)
    rand_mean, rand_se = random_return(args.random_episodes, learner, params)
    overrides = [f"n_envs={args.n_envs}", *args.overrides]
    host_train = train_rate(HOST, HOST_ARGS, overrides, args.repeats)
    native_train = train_rate(NATIVE, {}, overrides, args.repeats)

    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} "
                   f"{jax.default_backend()} device(s), jax {jax.__version__}",
        "n_envs": args.n_envs, "repeats": args.repeats, "overrides": args.overrides,
        "collect_steps_per_s": {"host": host_rate, f"host_{args.workers}_workers": host_w_rate,
                                "native": native_rate, "native_over_host": native_rate / host_rate},
        "train_steps_per_s": {"host": host_train, "native": native_train,
                              "native_over_host": native_train / host_train},
        "random_return": {"host": host_ret, "native": native_ret,
                          f"host_{args.random_episodes}_episodes": rand_mean,
                          "host_standard_error": rand_se},
    }
    print(f"collect, random actions ({args.n_envs} envs): host {host_rate:,.0f} steps/s, "
          f"host with {args.workers} workers {host_w_rate:,.0f}, JAX-native {native_rate:,.0f} "
          f"({native_rate / host_rate:.1f}x)")
    print(f"train me_qmix: host {host_train:,.0f} steps/s, JAX-native {native_train:,.0f} "
          f"({native_train / host_train:.2f}x)")
    print(f"random policy return: host {host_ret:.2f}, JAX-native {native_ret:.2f} (timed "
          f"collections); host over {args.random_episodes} episodes {rand_mean:.2f} ± {rand_se:.2f} (s.e.)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
