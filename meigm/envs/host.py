"""Environments that cannot be jitted: stepped on the host, in NumPy.

A :class:`HostEnv` is the host-side twin of :class:`~meigm.envs.base.Env`: the same
:class:`~meigm.envs.base.EnvSpec`, the same per-step arrays (obs [N, O], state [S],
avail [N, A], team reward, terminated vs truncated, scenario metrics), but NumPy in and
out and one environment per object. Adapters for foreign APIs (PettingZoo, SMACv2)
subclass it; :mod:`meigm.rollout.host` steps many of them — in this process or in
worker processes through Gymnasium's vector environments — and feeds the same replay
buffer and the same jitted update as the JAX roll-out.

Conventions every adapter keeps, so the learners need not know the source:

* no auto-reset: an episode ends with ``terminated`` (a true terminal, no bootstrap) or
  ``truncated`` (a time limit, bootstrap) and the roll-out decides what comes next;
* agents that have left the episode get a zero observation and only action 0
  available — the action chosen for them is never sent to the environment (SMAC's
  convention for dead units);
* the adapter itself truncates at ``spec.episode_limit`` so that episodes fit the
  buffer's padded length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from meigm.envs.base import EnvSpec
from meigm.errors import MeigmError


@dataclass
class HostStep:
    """One host time step. obs [N, O] float32, state [S] float32, avail [N, A] bool,
    reward/terminated/truncated scalars, info {metric: float} (meaningful at episode end)."""

    obs: np.ndarray
    state: np.ndarray
    avail: np.ndarray
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return bool(self.terminated or self.truncated)


class HostEnv:
    """One host-stepped environment; see the module docstring for the conventions."""

    spec: EnvSpec
    #: the registry arguments it was built with: :class:`HostVecEnv` rebuilds copies
    #: (in this process or in workers) as ``make_env(spec.name, env_args)``.
    env_args: dict[str, Any]

    def reset(self, seed: int) -> HostStep:
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> HostStep:
        """actions [N] int -> the next step (only called while the episode runs)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release external resources (a game process); idempotent."""


def dead_agent_avail(n_actions: int) -> np.ndarray:
    """Action mask [A] of an agent that has left the episode: only action 0."""
    row = np.zeros(n_actions, bool)
    row[0] = True
    return row


class EnvGroup(gymnasium.Env):
    """``k`` host environments stepped one after another, seen as one Gymnasium ``Env``
    whose observation is the dict of stacked arrays {obs [k, N, O], state [k, S],
    avail [k, N, A], reward [k], terminated [k], truncated [k], info [k, M]} (M scenario
    metrics, ``spec.info_keys`` order). Gymnasium's reward and flags are unused.

    It exists so that :class:`HostVecEnv` can put several copies in each worker process
    of Gymnasium's ``AsyncVectorEnv`` (which runs one ``Env`` per process, with shared
    memory for the observation). A copy whose episode has ended is frozen: stepping it
    returns its final step again with reward 0 and leaves the environment alone.
    """

    def __init__(self, name: str, env_args: dict[str, Any], k: int,
                 first: HostEnv | None = None) -> None:
        from meigm.envs.registry import make_env

        self.envs: list[HostEnv] = [first] if first is not None else []
        while len(self.envs) < k:
            env = make_env(name, env_args)
            if not isinstance(env, HostEnv):
                raise MeigmError(f"{name} is a JAX environment; it needs no host roll-out")
            self.envs.append(env)
        spec = self.envs[0].spec
        n, a, m = spec.n_agents, spec.n_actions, len(spec.info_keys)
        box = gymnasium.spaces.Box
        self.observation_space = gymnasium.spaces.Dict({
            "obs": box(-np.inf, np.inf, (k, n, spec.obs_dim), np.float32),
            "state": box(-np.inf, np.inf, (k, spec.state_dim), np.float32),
            "avail": gymnasium.spaces.MultiBinary((k, n, a)),
            "reward": box(-np.inf, np.inf, (k,), np.float32),
            "terminated": gymnasium.spaces.MultiBinary(k),
            "truncated": gymnasium.spaces.MultiBinary(k),
            "info": box(-np.inf, np.inf, (k, m), np.float32),
        })
        self.action_space = gymnasium.spaces.MultiDiscrete(np.full((k, n), a))
        self._last: list[HostStep | None] = [None] * k

    def _pack(self, rewards: list[float]) -> dict[str, np.ndarray]:
        steps = self._last
        keys = self.envs[0].spec.info_keys
        return {
            "obs": np.stack([s.obs for s in steps]).astype(np.float32),
            "state": np.stack([s.state for s in steps]).astype(np.float32),
            "avail": np.stack([s.avail for s in steps]).astype(np.int8),
            "reward": np.asarray(rewards, np.float32),
            "terminated": np.asarray([s.terminated for s in steps], np.int8),
            "truncated": np.asarray([s.truncated for s in steps], np.int8),
            "info": np.asarray([[s.info.get(k, 0.0) for k in keys] for s in steps],
                               np.float32).reshape(len(steps), len(keys)),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """options["seeds"]: the seeds of all groups' copies; ``seed``: this group's index
        in that list (so one seed list serves every worker)."""
        k = len(self.envs)
        group = seed or 0
        seeds = (options or {}).get("seeds") or list(range(group * k, (group + 1) * k))
        seeds = seeds[group * k:(group + 1) * k]
        self._last = [env.reset(int(s)) for env, s in zip(self.envs, seeds, strict=True)]
        return self._pack([0.0] * len(self.envs)), {}

    def step(self, action):
        rewards = []
        for i, (env, last) in enumerate(zip(self.envs, self._last, strict=True)):
            if last.done:
                rewards.append(0.0)
                continue
            self._last[i] = env.step(np.asarray(action[i], np.int64))
            rewards.append(self._last[i].reward)
        return self._pack(rewards), 0.0, False, False, {}

    def close(self) -> None:
        for env in self.envs:
            env.close()


class _GroupFactory:
    """Picklable ``() -> EnvGroup`` for a spawned worker: rebuilds its copies by name."""

    def __init__(self, name: str, env_args: dict[str, Any], k: int) -> None:
        self.name, self.env_args, self.k = name, dict(env_args), k

    def __call__(self) -> EnvGroup:
        return EnvGroup(self.name, self.env_args, self.k)


class HostVecEnv:
    """``n`` copies of a host environment stepped in lock-step; arrays lead with [n].

    workers 0: every copy in this process (the given ``env`` is the first copy);
    workers w > 0: Gymnasium's ``AsyncVectorEnv`` with w worker processes (started with
    ``spawn``: forking a process whose JAX thread pools are running can deadlock), each
    stepping n / w copies. Worth it when one step of the environment costs much more
    than passing its arrays between processes (StarCraft II; not MPE).
    """

    def __init__(self, env: HostEnv, n: int, workers: int = 0) -> None:
        if n < 1:
            raise MeigmError(f"need at least one environment, got {n}")
        if workers < 0:
            raise MeigmError(f"env_workers must be >= 0, got {workers}")
        self.n, self.spec = n, env.spec
        name, args = env.spec.name, getattr(env, "env_args", {})
        if workers == 0:
            self._group: EnvGroup | None = EnvGroup(name, args, n, first=env)
            self._vec = None
            return
        if n % workers:
            raise MeigmError(f"env_workers={workers} must divide the {n} host environments "
                             "(seeds x n_envs, or the test episodes)")
        self._group = None
        mode = gymnasium.vector.AutoresetMode.DISABLED
        self._vec = gymnasium.vector.AsyncVectorEnv(
            [_GroupFactory(name, args, n // workers) for _ in range(workers)],
            context="spawn", autoreset_mode=mode)
        self._workers = workers

    def _flat(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._vec is None:
            return out
        return {k: v.reshape(self.n, *v.shape[2:]) for k, v in out.items()}

    def reset(self, seeds: np.ndarray) -> dict[str, np.ndarray]:
        """seeds [n] int -> first steps, arrays [n, ...]."""
        seeds = [int(s) for s in np.asarray(seeds).reshape(self.n)]
        if self._vec is None:
            return self._group.reset(seed=0, options={"seeds": seeds})[0]
        # Every group gets the whole seed list and its own index as the reset seed.
        obs, _ = self._vec.reset(seed=list(range(self._workers)), options={"seeds": seeds})
        return self._flat(obs)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """actions [n, N] int -> next steps, arrays [n, ...] (finished copies frozen)."""
        actions = np.asarray(actions)
        if self._vec is None:
            return self._group.step(actions)[0]
        obs, *_ = self._vec.step(actions.reshape(self._workers, -1, actions.shape[-1]))
        return self._flat(obs)

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()
        elif self._group is not None:
            self._group.close()
