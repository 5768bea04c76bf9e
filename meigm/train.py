"""The one compiled training program.

``make_train(cfg, env, learner)`` returns pure functions; the hot path is

    state = init_seeds(trainer.init, seed_keys)                 # one state per seed, stacked
    state, metrics = jit(vmap(trainer.run))(state)              # `chunk_iters` iterations

where one iteration collects ``n_envs`` whole episodes with the learner's exploration
policy, writes them to the episode buffer, runs ``updates_per_collect`` updates on
sampled batches once the buffer holds ``batch_size`` episodes, and refreshes the target
networks every ``target_update_interval`` episodes. Nothing leaves the device inside a
chunk; the host only sees per-chunk metrics (progress bar, logs, evaluation).

Each seed has its own initialisation and key stream: ``init`` splits the seed's key
and never uses a fixed key, so vmapped seeds are independent (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from meigm.config import Config
from meigm.envs import Env
from meigm.envs.host import HostEnv, HostVecEnv
from meigm.learners import Learner
from meigm.learners.common import refresh_target
from meigm.rollout import (
    EpisodeBuffer,
    buffer_add,
    buffer_init,
    buffer_sample,
    greedy_act,
    rollout,
)
from meigm.rollout.collect import EpisodeStats
from meigm.rollout.host import host_rollout, make_policy_step
from meigm.types import Episodes, LearnerState


@struct.dataclass
class TrainState:
    learner: LearnerState
    buffer: EpisodeBuffer
    key: jax.Array
    t_env: jax.Array  # [] env steps collected (real steps only)
    episodes: jax.Array  # [] episodes collected
    updates: jax.Array  # [] gradient updates done
    last_target_update: jax.Array  # [] episode count at the last hard refresh


@dataclass(frozen=True)
class Trainer:
    """Pure functions of one seed; vmap and jit them over seeds."""

    init: Callable[[jax.Array], TrainState]
    run: Callable[[TrainState], tuple[TrainState, dict[str, jax.Array]]]
    evaluate: Callable[[dict, jax.Array], dict[str, jax.Array]]
    chunk_iters: int
    steps_per_iter_max: int
    #: True for host environments: ``run``/``evaluate`` already take stacked seeds and
    #: must not be jitted or vmapped again (see :func:`compiled`).
    batched: bool = False
    #: releases the host environments (a no-op for JAX environments).
    close: Callable[[], None] = lambda: None


def shaping_coef(t_env: jax.Array, horizon: int | None) -> jax.Array:
    """Weight of the scenario's shaping reward (``TimeStep.shaped``) in the learning reward.

    Linear from 1 at ``t_env = 0`` to 0 at ``horizon`` env steps, 0 after; ``horizon`` 0 or
    None: never shape. Counted in env steps, not updates, so a horizon means the same
    whatever ``n_envs`` or ``updates_per_collect``. The shaping is only there to get
    exploration started; once it is annealed away the agents optimise the scenario's own
    reward, which is what evaluation measures.

    t_env [] int (a seed's env-step counter) -> [] float32.
    """
    if not horizon or horizon <= 0:
        return jnp.zeros((), jnp.float32)
    return jnp.clip(1.0 - t_env / horizon, 0.0, 1.0).astype(jnp.float32)


def last_step(mask: jax.Array) -> jax.Array:
    """[E, T] real-step mask -> [E, T] bool, true at each episode's last real step."""
    mask = mask.astype(bool)
    after = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    return mask & ~after


def make_train(cfg: Config, env: Env | HostEnv, learner: Learner) -> Trainer:
    """Build the training program for a *resolved* config (see :meth:`Config.resolve`)."""
    spec = env.spec
    steps_per_iter_max = cfg.n_envs * spec.episode_limit
    chunk_iters = max(1, math.ceil(cfg.test_interval / steps_per_iter_max))

    def init(key: jax.Array) -> TrainState:
        k_learner, k_run = jax.random.split(key)
        zero = jnp.zeros((), jnp.int32)
        return TrainState(
            learner=learner.init(k_learner),
            buffer=buffer_init(spec, cfg.buffer_size),
            key=k_run,
            t_env=zero, episodes=zero, updates=zero, last_target_update=zero,
        )

    # Optional learner hook: time-dependent values kept in the learner state (FOP's α),
    # set from the env-step count before each round of updates.
    schedule = getattr(learner, "schedule", None)

    def explore_fn(t_env: jax.Array):
        return lambda params, q, state, avail, key: learner.explore(params, q, state, avail, key, t_env)

    def update_metrics_shape(ls: LearnerState, buf: EpisodeBuffer, key: jax.Array):
        batch = buffer_sample(buf, key, cfg.batch_size)
        return jax.eval_shape(learner.update, ls, batch, key)[1]

    def absorb(ts: TrainState, key: jax.Array, k_learn: jax.Array, coef: jax.Array,
               episodes: Episodes, stats: EpisodeStats) -> tuple[TrainState, dict[str, jax.Array]]:
        """Everything after a collection, for either roll-out: store the E episodes
        [E, ...], update, refresh targets, count. ``key`` becomes the seed's next key."""
        if not cfg.bootstrap_truncated:  # a cut episode's last real step becomes terminal
            episodes = episodes.replace(terminated=episodes.terminated | last_step(episodes.mask))
        buf = buffer_add(ts.buffer, episodes)
        t_env = ts.t_env + jnp.sum(stats.lengths)
        n_episodes = ts.episodes + cfg.n_envs
        can_learn = buf.size >= cfg.batch_size

        def learn(ls: LearnerState):
            def one(ls, k):
                k_sample, k_update = jax.random.split(k)
                return learner.update(ls, buffer_sample(buf, k_sample, cfg.batch_size), k_update)

            ls, metrics = jax.lax.scan(one, ls, jax.random.split(k_learn, cfg.updates_per_collect))
            return ls, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

        def skip(ls: LearnerState):
            shapes = update_metrics_shape(ls, buf, k_learn)
            return ls, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        ls = ts.learner if schedule is None else schedule(ts.learner, t_env)
        ls, metrics = jax.lax.cond(can_learn, learn, skip, ls)
        hard_due = (n_episodes - ts.last_target_update) >= cfg.target_update_interval
        do_hard = jnp.logical_and(can_learn, hard_due)
        if cfg.target_update == "polyak":
            ls = jax.lax.cond(can_learn, lambda s: refresh_target(s, True, "polyak", cfg.tau),
                              lambda s: s, ls)
        else:
            ls = refresh_target(ls, do_hard, "hard", cfg.tau)
        new = TrainState(
            learner=ls, buffer=buf, key=key, t_env=t_env, episodes=n_episodes,
            updates=ts.updates + jnp.where(can_learn, cfg.updates_per_collect, 0),
            last_target_update=jnp.where(do_hard, n_episodes, ts.last_target_update),
        )
        out = {
            "learned": can_learn,
            "return": jnp.mean(stats.returns),
            **{f"info/{k}": jnp.mean(stats.returns) * c for k, c in spec.return_metrics},
            "length": jnp.mean(stats.lengths.astype(jnp.float32)),
            "shaping_coef": coef,
            # the unweighted shaping return: while the sparse return is still ~0 it is the
            # only sign of progress (Overcooked); logged only where shaping is on.
            **({"shaped_return": jnp.mean(stats.shaped_returns)} if cfg.reward_shaping_horizon else {}),
            **{f"info/{k}": jnp.mean(v) for k, v in stats.info.items()},
            **metrics,
        }
        return new, out

    def iteration(ts: TrainState, _):
        key, k_collect, k_learn = jax.random.split(ts.key, 3)
        params = ts.learner.params
        coef = shaping_coef(ts.t_env, cfg.reward_shaping_horizon)
        episodes, stats = rollout(
            env, learner.agent.apply, params["agent"], explore_fn(ts.t_env), params,
            learner.hidden_dim, k_collect, cfg.n_envs, shaping_coef=coef,
        )
        return absorb(ts, key, k_learn, coef, episodes, stats)

    def summarise(ts: TrainState, per_iter: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-iteration metrics [iters] -> one chunk summary (update metrics averaged only
        over iterations where learning had started)."""
        per_iter = dict(per_iter)
        learned = per_iter.pop("learned").astype(jnp.float32)
        n_learned = jnp.maximum(jnp.sum(learned), 1.0)
        summary = {}
        for k, v in per_iter.items():
            if k in ("return", "length", "shaping_coef", "shaped_return") or k.startswith("info/"):
                summary[f"train/{k}"] = jnp.mean(v)
            else:
                summary[f"train/{k}"] = jnp.sum(v * learned) / n_learned
        summary.update(t_env=ts.t_env, episodes=ts.episodes, updates=ts.updates)
        # the divergence guard's view of the parameters (the run loop pops it)
        summary["finite_params"] = jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(ts.learner.params)]))
        return summary

    def run(ts: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """``chunk_iters`` iterations and their summary."""
        ts, per_iter = jax.lax.scan(iteration, ts, None, length=chunk_iters)
        return ts, summarise(ts, per_iter)

    def evaluate(params: dict, key: jax.Array) -> dict[str, jax.Array]:
        """Greedy decentralised evaluation over ``test_episodes`` episodes."""
        _, stats = rollout(
            env, learner.agent.apply, params["agent"], greedy_act, params,
            learner.hidden_dim, key, cfg.test_episodes,
        )
        out = {"test/return": jnp.mean(stats.returns),
               "test/length": jnp.mean(stats.lengths.astype(jnp.float32))}
        out.update({f"test/{k}": jnp.mean(v) for k, v in stats.info.items()})
        out.update({f"test/{k}": jnp.mean(stats.returns) * c for k, c in spec.return_metrics})
        return out

    if isinstance(env, HostEnv):
        return _host_trainer(cfg, env, learner, init, absorb, summarise, chunk_iters,
                             steps_per_iter_max)
    return Trainer(init=init, run=run, evaluate=evaluate, chunk_iters=chunk_iters,
                   steps_per_iter_max=steps_per_iter_max)


def _host_trainer(cfg: Config, env: HostEnv, learner: Learner, init, absorb, summarise,
                  chunk_iters: int, steps_per_iter_max: int) -> Trainer:
    """The training program for a host environment (:mod:`meigm.rollout.host`).

    Same state, same update, same metrics as the compiled program; only the collection
    runs on the host between two jitted calls. ``run`` and ``evaluate`` here take the
    *stacked* seeds (``batched=True``) — they are Python loops around jitted pieces, so
    the caller must not ``jit``/``vmap`` them again.
    """
    vec = HostVecEnv(env, cfg.seeds * cfg.n_envs, cfg.env_workers)
    explore = make_policy_step(learner.agent.apply, learner.explore)
    greedy = make_policy_step(learner.agent.apply,
                              lambda p, q, s, a, k, t: greedy_act(p, q, s, a, k))

    @jax.jit
    def prepare(ts: TrainState):  # [S] states -> keys and shaping coefficients per seed
        keys = jax.vmap(lambda k: jax.random.split(k, 3))(ts.key)  # [S, 3, 2]
        coef = jax.vmap(lambda t: shaping_coef(t, cfg.reward_shaping_horizon))(ts.t_env)
        return keys[:, 0], keys[:, 1], keys[:, 2], coef

    absorb_all = jax.jit(jax.vmap(absorb))
    summarise_all = jax.jit(jax.vmap(summarise))

    def run(ts: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        outs = []
        for _ in range(chunk_iters):
            key, k_collect, k_learn, coef = prepare(ts)
            episodes, stats = host_rollout(vec, explore, ts.learner.params, learner.hidden_dim,
                                           k_collect, ts.t_env, cfg.seeds)
            ts, out = absorb_all(ts, key, k_learn, coef, episodes, stats)
            outs.append(out)
        per_iter = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *outs)  # [S, iters]
        return ts, summarise_all(ts, per_iter)

    def evaluate(params: dict, keys: jax.Array) -> dict[str, jax.Array]:
        """Greedy episodes, ``test_episodes`` per seed, in rounds of ``n_envs``.
        params leaves [S, ...], keys [S, 2] -> {metric: [S]}."""
        rounds = -(-cfg.test_episodes // cfg.n_envs)
        parts = []
        for r in range(rounds):
            round_keys = jax.vmap(lambda k, r=r: jax.random.fold_in(k, r))(keys)
            parts.append(host_rollout(vec, greedy, params, learner.hidden_dim, round_keys,
                                      jnp.zeros(cfg.seeds, jnp.int32), cfg.seeds)[1])
        returns = np.concatenate([p.returns for p in parts], 1)[:, :cfg.test_episodes]
        lengths = np.concatenate([p.lengths for p in parts], 1)[:, :cfg.test_episodes]
        out = {"test/return": returns.mean(1), "test/length": lengths.astype(np.float32).mean(1)}
        for k in env.spec.info_keys:
            out[f"test/{k}"] = np.concatenate([p.info[k] for p in parts], 1)[:, :cfg.test_episodes].mean(1)
        out.update({f"test/{k}": returns.mean(1) * c for k, c in env.spec.return_metrics})
        return out

    return Trainer(init=init, run=run, evaluate=evaluate, chunk_iters=chunk_iters,
                   steps_per_iter_max=steps_per_iter_max, batched=True, close=vec.close)


def compiled(trainer: Trainer) -> tuple[Callable, Callable]:
    """``(run, evaluate)`` over stacked seeds: ``jit(vmap(·))`` of a JAX trainer's
    functions, a host trainer's own (already batched) ones."""
    if trainer.batched:
        return trainer.run, trainer.evaluate
    return jax.jit(jax.vmap(trainer.run)), jax.jit(jax.vmap(trainer.evaluate))


def init_seeds(init: Callable[[jax.Array], object], keys: jax.Array):
    """Initialise every seed and stack the results along a leading seed axis.

    Deliberately *not* ``vmap(init)``: Flax's orthogonal GRU initialiser is a QR
    factorisation, and a batched QR on the CPU runs LAPACK's ``ParallelBatchMap`` on
    XLA's intra-op thread pool and blocks that pool's threads waiting for sub-tasks
    queued to the same pool. On a 2-core machine both threads can end up waiting and
    the run hangs for ever (seen here with jaxlib 0.10.2 in roughly one fresh 10-seed
    run in three; the native stacks show both ``tf_XLAEigen`` threads in
    ``QrFactorization -> ParallelBatchMap -> BlockingCounter::Wait``). Initialising
    seed by seed uses unbatched QR, runs once per run, and gives the same parameters
    as the seed trained alone.

    keys [seeds, 2] -> pytree with leaves [seeds, ...].
    """
    init_one = jax.jit(init)
    states = [init_one(k) for k in keys]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def seed_keys(cfg: Config) -> jax.Array:
    """One independent key per seed: seed i uses ``PRNGKey(cfg.seed + i)``."""
    return jnp.stack([jax.random.PRNGKey(cfg.seed + i) for i in range(cfg.seeds)])
