"""The environment interface every meigm scenario implements.

It is JaxMARL's ``MultiAgentEnv`` seen through one thin adapter: scenarios are
written (or taken from JaxMARL) as ordinary ``MultiAgentEnv`` subclasses — jitted
``reset``/``step_env``, dicts keyed by agent name, ``get_avail_actions`` — and
:class:`JaxMARLEnv` stacks those dicts into arrays with a leading agent axis, adds the
global state, and separates *terminated* from *truncated* at the episode limit. The
learners only ever see :class:`TimeStep`.

Shapes: N agents, A actions (the largest action count; smaller ones are padded with
unavailable actions), O observation size, S state size.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


def _import_jaxmarl_quietly() -> type:
    """Import JaxMARL's base class without its import-time banner on stdout.

    The banner is printed after something in JaxMARL's import chain rebinds
    ``sys.stdout``, so a ``redirect_stdout`` cannot catch it; silence the descriptor.
    The rebinding is undone too: whatever ``sys.stdout`` and ``sys.stderr`` were (a
    caller's capture, pytest's ``capsys``) they are again after the import.
    """
    streams = sys.stdout, sys.stderr
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        from jaxmarl.environments.multi_agent_env import MultiAgentEnv

        sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
        sys.stdout, sys.stderr = streams
    return MultiAgentEnv


MultiAgentEnv = _import_jaxmarl_quietly()


@dataclass(frozen=True)
class EnvSpec:
    """Static sizes of a scenario; everything a network or buffer needs to allocate."""

    name: str
    n_agents: int
    n_actions: int
    obs_dim: int
    state_dim: int
    episode_limit: int
    #: names of the per-episode scalar metrics in ``TimeStep.info`` (e.g. ``won``).
    info_keys: tuple[str, ...] = ()
    #: default training budget in env steps when the config leaves ``t_max`` unset.
    default_t_max: int = 1_000_000
    #: agent names, in the order of the agent axis.
    agents: tuple[str, ...] = field(default=())
    #: the paper's per-scenario settings, ((config key, value), ...), applied to config
    #: fields the user left unset (:meth:`meigm.config.Config.resolve`).
    config_defaults: tuple[tuple[str, Any], ...] = ()
    #: metrics that are a fixed multiple of the episode's return, ((name, scale), ...),
    #: e.g. Overcooked's soups = return / 20; reported beside the return.
    return_metrics: tuple[tuple[str, float], ...] = ()


@struct.dataclass
class TimeStep:
    """What the learner sees after ``reset`` or ``step``.

    obs [N, O], state [S], avail [N, A] bool, reward [], terminated [] bool (a true
    terminal state: no bootstrap), truncated [] bool (episode limit reached: bootstrap),
    info: dict of [] float scenario metrics, meaningful when the episode ends;
    shaped [] float: an auxiliary shaping reward (0 where a scenario has none), added to
    the learning reward with a coefficient the trainer anneals (``reward_shaping_horizon``).
    """

    obs: jax.Array
    state: jax.Array
    avail: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    info: dict[str, jax.Array]
    shaped: jax.Array

    @property
    def done(self) -> jax.Array:
        return jnp.logical_or(self.terminated, self.truncated)


@struct.dataclass
class EnvState:
    """Adapter state: the wrapped environment's state and the step counter."""

    inner: Any
    t: jax.Array


class Env:
    """Array-in, array-out environment used by roll-outs (no auto-reset: episodes are
    collected whole and padded, so the roll-out decides what happens after ``done``)."""

    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[EnvState, TimeStep]:
        raise NotImplementedError

    def step(self, key: jax.Array, state: EnvState, actions: jax.Array) -> tuple[EnvState, TimeStep]:
        """actions [N] int32 -> (next state, time step)."""
        raise NotImplementedError


def _stack(d: dict[str, jax.Array], agents: tuple[str, ...]) -> jax.Array:
    return jnp.stack([d[a] for a in agents])


def team_mean(rewards: dict[str, jax.Array]) -> jax.Array:
    """Team reward = mean of the agents' rewards (identical in SMAX; MPE adds per-agent
    collision penalties, which the mean spreads over the team)."""
    return jnp.mean(jnp.stack([r for k, r in rewards.items() if k != "__all__"]))


class JaxMARLEnv(Env):
    """Adapter from a JaxMARL ``MultiAgentEnv`` to :class:`Env`.

    Args:
      env: the JaxMARL environment (its ``step_env`` is used, without auto-reset).
      name: registry name, for messages.
      state_fn: inner state -> global state [S]; defaults to the concatenated
        observations (what pymarl uses when a scenario has no state of its own).
      reward_fn: reward dict -> team reward []; defaults to the first agent's reward
        (JaxMARL's cooperative scenarios give every agent the team reward).
      info_fn: (info dict, inner state) -> {metric: []} scenario metrics.
      episode_limit: steps after which an episode is truncated.
      default_t_max: training budget used when the config leaves ``t_max`` unset.
      config_defaults: the paper's settings for this scenario (see ``EnvSpec``).
      shaped_fn: step info dict -> [] shaping reward (``TimeStep.shaped``).
      return_metrics: {name: scale} metrics equal to scale × return (see ``EnvSpec``).
      limit_is_truncation: the wrapped environment itself reports ``done`` when its
        step limit is reached (JaxMARL's SMAX and MPE do) and that ``done`` is a time
        limit, not a terminal state: a ``done`` at ``t >= episode_limit`` is then
        *truncated* (bootstrapped). A terminal state reached exactly at the limit is
        also treated as truncated, a small, documented bias. False for games whose
        last step is a true terminal (matrix games).
    """

    def __init__(
        self,
        env: MultiAgentEnv,
        name: str,
        episode_limit: int,
        state_fn: Callable[[Any], jax.Array] | None = None,
        reward_fn: Callable[[dict[str, jax.Array]], jax.Array] | None = None,
        info_fn: Callable[[dict[str, Any], Any], dict[str, jax.Array]] | None = None,
        info_keys: tuple[str, ...] = (),
        default_t_max: int = 1_000_000,
        limit_is_truncation: bool = False,
        config_defaults: dict[str, Any] | None = None,
        shaped_fn: Callable[[dict[str, Any]], jax.Array] | None = None,
        return_metrics: dict[str, float] | None = None,
    ) -> None:
        self._shaped_fn = shaped_fn or (lambda info: 0.0)
        self._limit_is_truncation = limit_is_truncation
        self.env = env
        self.agents = tuple(env.agents)
        self._state_fn = state_fn
        self._reward_fn = reward_fn or (lambda r: r[self.agents[0]])
        self._info_fn = info_fn or (lambda info, state: {})
        self._action_counts = tuple(int(env.action_space(a).n) for a in self.agents)
        n_actions = max(self._action_counts)
        obs_dims = [int(jnp.prod(jnp.array(env.observation_space(a).shape))) for a in self.agents]
        if len(set(obs_dims)) != 1:
            raise ValueError(f"{name}: agents have different observation sizes {obs_dims}")
        def reset_state(key: jax.Array) -> jax.Array:
            obs, inner = env.reset(key)
            return self._global_state(inner, obs)

        # Shapes only: tracing without compiling keeps `meigm envs` and start-up fast.
        state_dim = int(jax.eval_shape(reset_state, jax.random.PRNGKey(0)).shape[-1])
        self.spec = EnvSpec(
            name=name,
            n_agents=len(self.agents),
            n_actions=n_actions,
            obs_dim=obs_dims[0],
            state_dim=state_dim,
            episode_limit=episode_limit,
            info_keys=info_keys,
            default_t_max=default_t_max,
            agents=self.agents,
            config_defaults=tuple(sorted((config_defaults or {}).items())),
            return_metrics=tuple(sorted((return_metrics or {}).items())),
        )

    def _global_state(self, inner: Any, obs: dict[str, jax.Array]) -> jax.Array:
        if self._state_fn is not None:
            return self._state_fn(inner).astype(jnp.float32)
        return jnp.concatenate([obs[a].reshape(-1) for a in self.agents]).astype(jnp.float32)

    def _avail(self, inner: Any) -> jax.Array:
        try:
            avail = self.env.get_avail_actions(inner)
        except NotImplementedError:  # scenarios without masks (MPE): every action available
            return jnp.ones((self.spec.n_agents, self.spec.n_actions), bool)
        rows = []
        for agent, count in zip(self.agents, self._action_counts, strict=True):
            row = jnp.asarray(avail[agent], bool).reshape(count)
            rows.append(jnp.pad(row, (0, self.spec.n_actions - count)))
        return jnp.stack(rows)

    def _timestep(self, inner, obs, reward, terminated, truncated, info, shaped=0.0) -> TimeStep:
        obs_arr = jnp.stack([obs[a].reshape(-1) for a in self.agents]).astype(jnp.float32)
        return TimeStep(
            obs=obs_arr,
            state=self._global_state(inner, obs),
            avail=self._avail(inner),
            reward=jnp.asarray(reward, jnp.float32),
            terminated=jnp.asarray(terminated, bool),
            truncated=jnp.asarray(truncated, bool),
            info={k: jnp.asarray(v, jnp.float32) for k, v in info.items()},
            shaped=jnp.asarray(shaped, jnp.float32),
        )

    def reset(self, key: jax.Array) -> tuple[EnvState, TimeStep]:
        obs, inner = self.env.reset(key)
        zero_info = {k: jnp.zeros((), jnp.float32) for k in self.spec.info_keys}
        ts = self._timestep(inner, obs, 0.0, False, False, zero_info)
        return EnvState(inner=inner, t=jnp.zeros((), jnp.int32)), ts

    def step(self, key: jax.Array, state: EnvState, actions: jax.Array) -> tuple[EnvState, TimeStep]:
        act = {a: actions[i] for i, a in enumerate(self.agents)}
        obs, inner, rewards, dones, info = self.env.step_env(key, state.inner, act)
        t = state.t + 1
        at_limit = t >= self.spec.episode_limit
        terminated = jnp.asarray(dones["__all__"], bool)
        if self._limit_is_truncation:
            terminated = jnp.logical_and(terminated, ~at_limit)
        truncated = jnp.logical_and(at_limit, ~terminated)
        metrics = self._info_fn(info, inner)
        metrics = {k: jnp.asarray(metrics.get(k, 0.0), jnp.float32) for k in self.spec.info_keys}
        ts = self._timestep(inner, obs, self._reward_fn(rewards), terminated, truncated, metrics,
                            self._shaped_fn(info))
        return EnvState(inner=inner, t=t), ts
