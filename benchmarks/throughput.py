"""Training throughput beside its two floors: the environment alone and the bare network.

    python benchmarks/throughput.py                                  # smax:protoss_5_vs_5
    python benchmarks/throughput.py --env overcooked:cramped_room batch_size=512 td_lambda=0.6
    python benchmarks/throughput.py --algs me_qmix --repeats 5 n_envs=8

For each algorithm, all in this process and with the paper's hyper-parameters unless
overridden (4 parallel envs, batch 128 episodes, one update per collection):

* **env steps/s, random actions** — ``n_envs`` environments stepped with uniformly
  random available actions inside the same scanned, vmapped roll-out the trainer uses
  (so it includes the padding to the episode limit), no network;
* **bare fwd+bwd** — the agent network unrolled over one training batch
  (``batch_size`` episodes × (T+1) steps × N agents) and differentiated: the least
  work any update on that batch has to do;
* **update** — one whole ``learner.update`` on a sampled batch (online + target
  unroll, mixer, targets, every loss, Adam), and its ratio to bare fwd+bwd;
* **train env steps/s** — the whole compiled loop (collect + buffer + update +
  target refresh) once the buffer holds a batch, compile excluded.

Each figure is the median of ``--repeats`` timed calls after a warm-up call.
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

from meigm import config, ops
from meigm.envs import make_env
from meigm.learners import make_learner
from meigm.learners.common import unroll_agent
from meigm.rollout import buffer_sample, rollout
from meigm.train import make_train


def timed(fn, *args, repeats: int) -> float:
    """Median seconds of ``fn(*args)`` (blocked until ready) after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def env_only(env, n_envs: int, repeats: int) -> float:
    """Env steps/s of random available actions in the trainer's roll-out."""
    spec = env.spec

    def agent(params, hidden, inputs):  # no network: zero Q-values
        return hidden, jnp.zeros((*inputs.shape[:-1], spec.n_actions))

    def random_act(params, q, state, avail, key):
        return ops.sample_masked(key, jnp.zeros(avail.shape), avail)

    @jax.jit
    def collect(key):
        _, stats = rollout(env, agent, None, random_act, None, 1, key, n_envs)
        return jnp.sum(stats.lengths)

    steps = int(collect(jax.random.PRNGKey(1)))
    return steps / timed(collect, jax.random.PRNGKey(1), repeats=repeats)


def measure(alg: str, env_name: str, overrides: list[str], repeats: int) -> dict[str, float]:
    env = make_env(env_name)
    cfg = config.build(None, overrides, alg=alg, env=env_name, seeds=1).resolve(
        env.spec.default_t_max, dict(env.spec.config_defaults))
    learner = make_learner(cfg, env.spec)
    trainer = make_train(cfg, env, learner)
    ts = jax.jit(trainer.init)(jax.random.PRNGKey(0))

    # Fill the buffer past one batch with the exploration policy (untimed; the first
    # call also compiles the training chunk).
    run = jax.jit(trainer.run)
    while int(ts.buffer.size) < cfg.batch_size:
        ts, _ = run(ts)
    batch = buffer_sample(ts.buffer, jax.random.PRNGKey(2), cfg.batch_size)
    params = ts.learner.params

    @jax.jit
    def fwd_bwd(agent_params, episodes):
        def total_q(p):
            return jnp.sum(unroll_agent(learner.agent, p, episodes, learner.hidden_dim))
        return jax.grad(total_q)(agent_params)

    update = jax.jit(learner.update)
    bare = timed(fwd_bwd, params["agent"], batch, repeats=repeats)
    upd = timed(update, ts.learner, batch, jax.random.PRNGKey(3), repeats=repeats)

    ts = run(ts)  # warm-up
    jax.block_until_ready(ts)
    rates = []
    for _ in range(repeats):
        t_before = int(ts[0].t_env)
        t0 = time.perf_counter()
        out = run(ts[0])
        jax.block_until_ready(out)
        rates.append((int(out[0].t_env) - t_before) / (time.perf_counter() - t0))
        ts = out
    return {
        "env_steps_per_s_random": env_only(env, cfg.n_envs, repeats),
        "bare_fwd_bwd_s": bare,
        "update_s": upd,
        "update_over_bare": upd / bare,
        "train_env_steps_per_s": statistics.median(rates),
        "mean_episode_length": float(out[1]["train/length"]),
        "chunk_iters": trainer.chunk_iters,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="smax:protoss_5_vs_5")
    p.add_argument("--algs", default="me_qmix,qmix", help="comma-separated algorithms")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("overrides", nargs="*", default=[], help="config key=value (default test_interval=10000)")
    a = p.parse_args()
    overrides = a.overrides or ["test_interval=10000"]
    device = jax.devices()[0]
    print(f"# {a.env}, {' '.join(overrides) or 'paper defaults'}; median of {a.repeats}; "
          f"{platform.machine()} x{jax.local_device_count()} {device.platform} ({device.device_kind}), "
          f"jax {jax.__version__}")
    rows = {alg: measure(alg, a.env, overrides, a.repeats) for alg in a.algs.split(",")}
    print("| algorithm | env-only steps/s (random) | bare fwd+bwd s | update s | update / bare "
          "| train env steps/s | mean episode length |")
    print("|---|---|---|---|---|---|---|")
    for alg, r in rows.items():
        print(f"| {alg} | {r['env_steps_per_s_random']:.0f} | {r['bare_fwd_bwd_s']:.3f} | "
              f"{r['update_s']:.3f} | {r['update_over_bare']:.2f} | {r['train_env_steps_per_s']:.0f} | "
              f"{r['mean_episode_length']:.1f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"env": a.env, "overrides": overrides, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
