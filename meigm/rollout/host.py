"""Host-side roll-out: whole episodes from environments stepped outside JAX.

The twin of :func:`meigm.rollout.collect.rollout` for :class:`~meigm.envs.host.HostEnv`s
(PettingZoo, SMACv2). Environments are stepped on the host through a
:class:`~meigm.envs.host.HostVecEnv`; the agents' recurrent forward pass and action
selection are one jitted call per time step for every seed and environment at once;
the episodes come back in exactly the layout the JAX roll-out produces — padded to the
episode limit, ``mask = 0`` after the end, the slot after the last real step holding
the final observation, finished episodes frozen — so the same replay buffer and the
same jitted update consume them.

Shapes: S seeds, E environments per seed, T episode limit, N agents, A actions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from meigm.envs.host import HostVecEnv
from meigm.networks.agent import agent_inputs
from meigm.rollout.collect import EpisodeStats
from meigm.types import Episodes, Params

#: (params, q [E,N,A], state [E,S], avail [E,N,A], key, t_env []) -> (actions [E,N],
#: extras {name: [E,N,...]}), as :data:`meigm.rollout.collect.ActFn` with the env steps
HostActFn = Callable[[Params, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array],
                     tuple[jax.Array, dict[str, jax.Array]]]


def make_policy_step(agent_apply: Callable, act: HostActFn) -> Callable:
    """One jitted decision for all seeds and environments.

    (params [S, ...], hidden [S,E,N,H], obs [S,E,N,O], last action [S,E,N,A],
    state [S,E,Sd], avail [S,E,N,A], key [S,2], t_env [S], t []) -> (hidden, (actions
    [S,E,N], extras {name: [S,E,N,...]})); step ``t``'s key is ``fold_in(key, t)``,
    folded inside the program so a step costs one dispatch.
    """

    def one_seed(params, hidden, obs, last_action, state, avail, key, t_env, t):
        hidden, q = agent_apply(params["agent"], hidden, agent_inputs(obs, last_action))
        return hidden, act(params, q, state, avail, jax.random.fold_in(key, t), t_env)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, None)))


def reset_seeds(keys: jax.Array, n_envs: int) -> np.ndarray:
    """Environment reset seeds from the collection keys: keys [S, 2] -> [S, E] int.

    Host environments take integer seeds; deriving them from the run's key stream keeps
    a host run as reproducible as its environment allows."""
    return np.asarray(_draw_seeds(keys, n_envs))


@functools.partial(jax.jit, static_argnums=1)
def _draw_seeds(keys: jax.Array, n_envs: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 0x5EED), (n_envs,),
                                                 0, 2**31 - 1))(keys)


def host_rollout(
    vec: HostVecEnv,
    policy_step: Callable,
    params: Params,
    hidden_dim: int,
    keys: jax.Array,
    t_env: jax.Array,
    n_seeds: int,
) -> tuple[Episodes, EpisodeStats]:
    """One episode from each of the ``vec.n = S·E`` environments (seed-major order).

    keys [S, 2] (the seeds' collection keys), t_env [S] (for exploration schedules).
    Returns Episodes with leaves [S, E, ...] and EpisodeStats with leaves [S, E], as
    NumPy arrays (the caller moves them to the device with the update).
    """
    spec = vec.spec
    s_, e_ = n_seeds, vec.n // n_seeds
    t_lim, n, a = spec.episode_limit, spec.n_agents, spec.n_actions
    ts = vec.reset(reset_seeds(keys, e_).reshape(-1))

    def shaped(x: np.ndarray) -> np.ndarray:  # [S·E, ...] -> [S, E, ...]
        return x.reshape(s_, e_, *x.shape[1:])

    obs = np.zeros((s_, e_, t_lim + 1, n, spec.obs_dim), np.float32)
    state = np.zeros((s_, e_, t_lim + 1, spec.state_dim), np.float32)
    avail = np.zeros((s_, e_, t_lim + 1, n, a), bool)
    actions = np.zeros((s_, e_, t_lim, n), np.int32)
    reward = np.zeros((s_, e_, t_lim), np.float32)
    terminated = np.zeros((s_, e_, t_lim), bool)
    mask = np.zeros((s_, e_, t_lim), bool)
    info = np.zeros((s_, e_, len(spec.info_keys)), np.float32)
    extras: dict[str, np.ndarray] = {}  # [S, E, T, N, ...] each, as the act function names them

    hidden = jnp.zeros((s_, e_, n, hidden_dim), jnp.float32)
    last_action = np.zeros((s_, e_, n, a), np.float32)
    alive = np.ones((s_, e_), bool)
    t = 0
    for t in range(t_lim):
        obs[:, :, t], state[:, :, t] = shaped(ts["obs"]), shaped(ts["state"])
        avail[:, :, t] = shaped(ts["avail"]).astype(bool)
        hidden, (act, step_extras) = policy_step(params, hidden, obs[:, :, t], last_action,
                                                 state[:, :, t], avail[:, :, t], keys, t_env, t)
        act = np.asarray(act, np.int32)  # [S, E, N]
        for k, v in step_extras.items():
            v = np.asarray(v)
            if k not in extras:
                extras[k] = np.zeros((s_, e_, t_lim, *v.shape[2:]), v.dtype)
            extras[k][:, :, t] = v
        actions[:, :, t] = act
        ts = vec.step(act.reshape(s_ * e_, n))
        done = shaped(ts["terminated"]).astype(bool) | shaped(ts["truncated"]).astype(bool)
        reward[:, :, t] = np.where(alive, shaped(ts["reward"]), 0.0)
        terminated[:, :, t] = alive & shaped(ts["terminated"]).astype(bool)
        mask[:, :, t] = alive
        ending = alive & done
        info[ending] = shaped(ts["info"])[ending]
        last_action = np.eye(a, dtype=np.float32)[act]
        alive = alive & ~done
        if not alive.any():
            break
    # Final slot and the padding after it: the frozen last step, as the JAX roll-out has.
    obs[:, :, t + 1:] = shaped(ts["obs"])[:, :, None]
    state[:, :, t + 1:] = shaped(ts["state"])[:, :, None]
    avail[:, :, t + 1:] = shaped(ts["avail"]).astype(bool)[:, :, None]

    episodes = Episodes(obs=obs, state=state, avail=avail, actions=actions, reward=reward,
                        terminated=terminated, mask=mask, extras=extras)
    stats = EpisodeStats(
        returns=reward.sum(-1),
        shaped_returns=np.zeros((s_, e_), np.float32),
        lengths=mask.sum(-1).astype(np.int32),
        info={k: info[..., i] for i, k in enumerate(spec.info_keys)},
    )
    return episodes, stats
