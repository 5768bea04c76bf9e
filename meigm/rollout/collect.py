"""Scanned roll-outs: E environments stepped in lock-step with ``vmap``, one whole
episode each, padded to the episode limit.

After an environment's episode ends it is frozen: its state and last time step are
kept, the remaining steps are recorded with ``mask = 0``, and the slot after the last
real step holds the final observation (needed to bootstrap truncated episodes).
Shapes: E environments, T episode limit, N agents, A actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from meigm import ops
from meigm.envs import Env, TimeStep
from meigm.networks.agent import agent_inputs
from meigm.types import Episodes, Params, seed_max

#: (params, q [E,N,A], state [E,S], avail [E,N,A], key) -> (actions [E,N] int32,
#: extras {name: [E,N,...]}): the extras (log-probabilities, values: what an on-policy
#: learner needs to store) end up in ``Episodes.extras``; ``{}`` for everyone else.
ActFn = Callable[[Params, jax.Array, jax.Array, jax.Array, jax.Array],
                 tuple[jax.Array, dict[str, jax.Array]]]


@struct.dataclass
class EpisodeStats:
    returns: jax.Array  # [E] undiscounted team return (the scenario's own reward, never shaped)
    shaped_returns: jax.Array  # [E] undiscounted sum of the shaping reward (0 where none)
    lengths: jax.Array  # [E] real steps
    info: dict[str, jax.Array]  # each [E], the scenario metrics at episode end
    #: environment states, leaves [E, T+1, ...]: the state before each step, then the last
    #: one (frozen after the episode ends). Only with ``rollout(..., keep_states=True)``,
    #: for rendering; None otherwise, so the training roll-out carries no extra arrays.
    env_states: Any = None


def greedy_act(params: Params, q, state, avail, key) -> tuple[jax.Array, dict]:
    """Decentralised execution: ``a_i = argmax_{available}`` of the agent network's output
    (no state used) — ``Q_i(τ_i, ·)``, or for FOP, whose agent network is the actor, the
    policy logits, so the argmax of ``π_i``."""
    del params, state, key
    return ops.masked_argmax(q, avail), {}


def random_act(params: Params, q, state, avail, key) -> tuple[jax.Array, dict]:
    """Uniformly random available actions (the floor figures, tests that need only data)."""
    del params, state
    return ops.sample_masked(key, jnp.zeros(avail.shape), avail), {}


def _where(cond: jax.Array, new, old):
    """Per-environment select over pytrees whose leaves lead with E."""
    def sel(n, o):
        c = cond.reshape(cond.shape + (1,) * (n.ndim - cond.ndim))
        return jnp.where(c, n, o)

    return jax.tree.map(sel, new, old)


def rollout(
    env: Env,
    agent_apply: Callable,
    agent_params: Params,
    act: ActFn,
    act_params: Params,
    hidden_dim: int,
    key: jax.Array,
    n_envs: int,
    keep_states: bool = False,
    shaping_coef: jax.Array | float = 0.0,
    active: jax.Array | bool = True,
) -> tuple[Episodes, EpisodeStats]:
    """Run ``n_envs`` episodes in parallel; returns padded episodes [E, ...] and stats.

    ``keep_states`` (static) also returns every environment state in
    ``stats.env_states``; the episodes and stats are otherwise identical for the same key.
    ``shaping_coef`` []: the stored (learning) reward is ``reward + coef · shaped``;
    ``stats.returns`` stays the scenario's own return, so training and test returns stay
    comparable while the shaping is annealed away.
    ``active`` []: whether this seed's episodes keep the loop going. Under the seed vmap
    the loop steps until every *active* seed's episodes have ended: a seed frozen at its
    chunk's target (its collection is thrown away) no longer makes the others step on
    through its longer episodes (issue 43: what a packed lane still paid for).
    """
    spec = env.spec
    k_reset, k_run = jax.random.split(key)
    env_state, ts = jax.vmap(env.reset)(jax.random.split(k_reset, n_envs))
    hidden = jnp.zeros((n_envs, spec.n_agents, hidden_dim), jnp.float32)
    last_action = jnp.zeros((n_envs, spec.n_agents, spec.n_actions), jnp.float32)
    alive = jnp.ones((n_envs,), bool)
    zero_info = {k: jnp.zeros((n_envs,), jnp.float32) for k in spec.info_keys}

    def step(carry, key_t):
        env_state, ts, hidden, last_action, alive, info = carry
        k_act, k_env = jax.random.split(key_t)
        hidden, q = agent_apply(agent_params, hidden, agent_inputs(ts.obs, last_action))
        actions, extras = act(act_params, q, ts.state, ts.avail, k_act)  # [E, N], {k: [E, N, ...]}
        new_state, new_ts = jax.vmap(env.step)(jax.random.split(k_env, n_envs), env_state, actions)
        # after an episode's end nothing it records depends on what its agents would do
        # (action 0, no extras), so a roll-out that stops once every episode has ended
        # records exactly what one that went on to the limit would
        record = {
            "obs": ts.obs, "state": ts.state, "avail": ts.avail,
            "actions": jnp.where(alive[:, None], actions, 0),
            "reward": jnp.where(alive, new_ts.reward + shaping_coef * new_ts.shaped, 0.0),
            "true_reward": jnp.where(alive, new_ts.reward, 0.0),
            "shaped": jnp.where(alive, new_ts.shaped, 0.0),
            "terminated": jnp.logical_and(alive, new_ts.terminated),
            "mask": alive,
            "extras": jax.tree.map(lambda x: _where(alive, x, jnp.zeros_like(x)), extras),
        }
        if keep_states:
            record["env_state"] = env_state
        ending = jnp.logical_and(alive, new_ts.done)
        info = _where(ending, new_ts.info, info)
        env_state = _where(alive, new_state, env_state)
        ts = _where(alive, new_ts, ts)
        last_action = jax.nn.one_hot(actions, spec.n_actions)
        alive = jnp.logical_and(alive, ~new_ts.done)
        return (env_state, ts, hidden, last_action, alive, info), record

    carry0 = (env_state, ts, hidden, last_action, alive, zero_info)
    limit = spec.episode_limit
    keys = jax.random.split(k_run, limit)
    # Step until every episode has ended, not always to the episode limit: on SMAX's 3m
    # the episodes are ~20 of 100 steps. The stop is agreed across the vmapped seeds
    # (``seed_max``): a per-seed (batched) predicate would make vmap select between whole
    # carries at every step. Slots after the stop are filled below with what the steps
    # would have recorded there (the frozen last time step, no reward, mask 0).
    shapes = jax.eval_shape(step, carry0, keys[0])[1]
    rec0 = jax.tree.map(lambda s: jnp.zeros((limit, *s.shape), s.dtype), shapes)

    def body(loop):
        t, carry, rec = loop
        carry, record = step(carry, keys[t])
        rec = jax.tree.map(lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x, t, 0),
                           rec, record)
        return t + 1, carry, rec

    def running(loop):
        t, carry, _ = loop
        return (t < limit) & (seed_max((jnp.any(carry[4]) & active).astype(jnp.int32)) > 0)

    stop, (state_final, ts_final, *_, info), rec = jax.lax.while_loop(
        running, body, (jnp.zeros((), jnp.int32), carry0, rec0))
    after = jnp.arange(limit) >= stop  # [T] every episode had ended before these slots

    def frozen(buf: jax.Array, final: jax.Array) -> jax.Array:  # [T, E, ...], [E, ...]
        return jnp.where(after.reshape((limit,) + (1,) * final.ndim), final[None], buf)

    rec["obs"] = frozen(rec["obs"], ts_final.obs)
    rec["state"] = frozen(rec["state"], ts_final.state)
    rec["avail"] = frozen(rec["avail"], ts_final.avail)
    if keep_states:
        rec["env_state"] = jax.tree.map(frozen, rec["env_state"], state_final)
    rec = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rec)  # [T, E, ...] -> [E, T, ...]

    def with_final(x: jax.Array, final: jax.Array) -> jax.Array:  # [E, T, ...] -> [E, T+1, ...]
        return jnp.concatenate([x, final[:, None]], axis=1)

    episodes = Episodes(
        obs=with_final(rec["obs"], ts_final.obs),
        state=with_final(rec["state"], ts_final.state),
        avail=with_final(rec["avail"], ts_final.avail),
        actions=rec["actions"],
        reward=rec["reward"],
        terminated=rec["terminated"],
        mask=rec["mask"],
        extras=rec["extras"],
    )
    stats = EpisodeStats(
        returns=jnp.sum(rec["true_reward"], axis=1),
        shaped_returns=jnp.sum(rec["shaped"], axis=1),
        lengths=jnp.sum(rec["mask"], axis=1).astype(jnp.int32),
        info=info,
    )
    if keep_states:
        stats = stats.replace(env_states=jax.tree.map(with_final, rec["env_state"], state_final))
    return episodes, stats


def first_step(env: Env, key: jax.Array) -> TimeStep:
    """The time step after ``reset`` (used by the one-step-game diagnostics)."""
    _, ts = env.reset(key)
    return ts
