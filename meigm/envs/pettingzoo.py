"""Any PettingZoo ``ParallelEnv`` with discrete actions as a meigm host environment.

Config: ``env: pettingzoo:<module>`` where ``<module>`` has a ``parallel_env`` factory
(``pettingzoo:mpe2.simple_spread_v3``), or ``pettingzoo:<module>:<factory>`` for another
callable. ``env_args`` go to the factory, except meigm's own keys:

* ``team_reward``: ``mean`` (default) or ``sum`` of the agents' rewards at each step.
  meigm trains one cooperative team on that shared reward, which is meaningless for a
  competitive environment (predators and prey of ``simple_tag`` would be rewarded for
  each other's gains): the known competitive ones (:data:`COMPETITIVE`: MPE's
  adversary, crypto, push, tag and world-comm tasks) are refused unless
  ``team_reward`` is given explicitly, which says "train them as one team anyway";
* ``episode_limit``: steps after which an episode is truncated; default the
  environment's ``max_cycles`` / ``max_steps`` / ``max_episode_steps``, else required;
* ``t_max``: default training budget in env steps (default 1M).

How the PettingZoo interface is read:

* observations: a ``Box`` per agent, or a ``Dict`` with ``observation`` (and optionally
  ``action_mask``); flattened and zero-padded to the largest agent's size. An
  observation whose shape differs from its declared space is an error, not a silent
  reshape;
* action masks: ``action_mask`` in the observation dict or in the agent's ``info``,
  otherwise every action; padded with unavailable actions to the largest action count;
* global state: ``state()`` where the environment implements it, otherwise the
  concatenated padded observations;
* agents that left (no longer in ``env.agents``): zero observation, only action 0
  available, their action not sent (see :mod:`meigm.envs.host`);
* the episode ends when no agent is left or every agent is done; it is *truncated*
  (bootstrapped) if any agent was truncated at the last step or the episode limit was
  reached, *terminated* otherwise.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from meigm.envs.base import EnvSpec
from meigm.envs.host import HostEnv, HostStep, dead_agent_avail
from meigm.errors import ConfigError, MeigmError

TEAM_REWARDS = ("mean", "sum")
OWN_KEYS = ("team_reward", "episode_limit", "t_max")
#: Environments whose agents' rewards oppose each other (module name, version stripped).
COMPETITIVE = ("simple_adversary", "simple_crypto", "simple_push", "simple_tag",
               "simple_world_comm")


def competitive_name(target: str) -> str | None:
    """The :data:`COMPETITIVE` task ``target`` (``module[:factory]``) builds, if any."""
    leaf = target.split(":")[0].rsplit(".", 1)[-1]
    base = leaf.rsplit("_v", 1)[0] if leaf.rsplit("_v", 1)[-1].isdigit() else leaf
    return base if base in COMPETITIVE else None


def load_factory(target: str) -> Any:
    """``module`` or ``module:callable`` -> the callable (``parallel_env`` by default)."""
    module_name, _, attr = target.partition(":")
    attr = attr or "parallel_env"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MeigmError(
            f"pettingzoo:{target}: cannot import module {module_name!r} ({exc}); install the "
            "package that provides it (e.g. pip install mpe2 for mpe2.simple_spread_v3)"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise MeigmError(f"pettingzoo:{target}: module {module_name!r} has no callable {attr!r}")
    return factory


def _is_mpe(target: str) -> bool:
    module = target.partition(":")[0]
    return module.startswith(("mpe2.", "pettingzoo.mpe."))


def _space_size(space: Any) -> tuple[int, ...]:
    shape = getattr(space, "shape", None)
    if shape is None:
        raise MeigmError(f"unsupported observation space {space}: need a Box (or a Dict with "
                         "'observation')")
    return tuple(int(s) for s in shape)


class PettingZooEnv(HostEnv):
    """Adapter; see the module docstring. ``name`` is the registry name."""

    def __init__(self, name: str, target: str, env_args: dict[str, Any]) -> None:
        self.env_args = dict(env_args)
        own = {k: env_args[k] for k in OWN_KEYS if k in env_args}
        kwargs = {k: v for k, v in env_args.items() if k not in OWN_KEYS}
        self.team_reward = own.get("team_reward", "mean")
        if self.team_reward not in TEAM_REWARDS:
            raise ConfigError(f"env_args.team_reward must be one of {', '.join(TEAM_REWARDS)}, "
                              f"got {self.team_reward!r}")
        rival = competitive_name(target)
        if rival is not None and "team_reward" not in own:
            raise ConfigError(
                f"{name} is competitive ({rival}: its agents' rewards oppose each other) and "
                "meigm trains one team on a shared reward; set env_args.team_reward=mean or "
                "sum to train it as one team anyway")
        factory = load_factory(target)
        try:
            self.env = factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{name}: bad env_args {sorted(kwargs)} ({exc})") from None
        if not hasattr(self.env, "possible_agents") or not hasattr(self.env, "step"):
            raise MeigmError(f"{name}: {target} did not build a PettingZoo ParallelEnv "
                             f"(got {type(self.env).__name__})")
        self.agents = tuple(self.env.possible_agents)
        self._n_actions, self._obs_shapes = [], []
        for agent in self.agents:
            space = self.env.action_space(agent)
            n = getattr(space, "n", None)
            if n is None or getattr(space, "start", 0) != 0:
                raise MeigmError(
                    f"{name}: agent {agent!r} has action space {space}; meigm needs Discrete "
                    "actions (for MPE pass continuous_actions: false in env_args)")
            self._n_actions.append(int(n))
            obs_space = self.env.observation_space(agent)
            if hasattr(obs_space, "spaces") and "observation" in obs_space.spaces:
                obs_space = obs_space.spaces["observation"]
            self._obs_shapes.append(_space_size(obs_space))
        n_actions = max(self._n_actions)
        obs_dim = max(int(np.prod(s)) for s in self._obs_shapes)

        limit = own.get("episode_limit")
        if limit is None:
            for attr in ("max_cycles", "max_steps", "max_episode_steps"):
                limit = getattr(self.env, attr, None) or getattr(getattr(self.env, "unwrapped", None),
                                                                 attr, None)
                if limit:
                    break
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(f"{name}: set env_args.episode_limit (a positive integer): the "
                              "environment does not say how long its episodes are")
        self._limit = limit
        self._has_state = self._probe_state()
        first = self.reset(0)
        self.spec = EnvSpec(
            name=name, n_agents=len(self.agents), n_actions=n_actions, obs_dim=obs_dim,
            state_dim=int(first.state.shape[0]), episode_limit=limit, agents=self.agents,
            default_t_max=int(own.get("t_max", 1_000_000)),
            # MPE (mpe2, or PettingZoo's old copy): its time limit ends the episode, as in
            # meigm's JAX MPE (Config.bootstrap_truncated).
            config_defaults=(("bootstrap_truncated", False),) if _is_mpe(target) else (),
        )

    # -- conversion --------------------------------------------------------------------

    def _probe_state(self) -> bool:
        self.env.reset(seed=0)
        try:
            np.asarray(self.env.state())
        except (NotImplementedError, AttributeError):
            return False
        return True

    def _convert(self, obs: dict, infos: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_actions = max(self._n_actions)
        obs_dim = max(int(np.prod(s)) for s in self._obs_shapes)
        out = np.zeros((len(self.agents), obs_dim), np.float32)
        avail = np.zeros((len(self.agents), n_actions), bool)
        for i, agent in enumerate(self.agents):
            if agent not in obs:
                avail[i] = dead_agent_avail(n_actions)
                continue
            o, mask = obs[agent], None
            if isinstance(o, dict):
                mask = o.get("action_mask")
                o = o["observation"]
            o = np.asarray(o, np.float32)
            if o.shape != self._obs_shapes[i]:
                raise MeigmError(
                    f"{self.spec_name}: observation of agent {agent!r} has shape {o.shape}, its "
                    f"space declares {self._obs_shapes[i]}; meigm needs fixed observation shapes")
            out[i, :o.size] = o.reshape(-1)
            info = infos.get(agent) or {}
            if mask is None and isinstance(info, dict):
                mask = info.get("action_mask")
            if mask is None:
                avail[i, :self._n_actions[i]] = True
            else:
                avail[i, :self._n_actions[i]] = np.asarray(mask).reshape(-1)[:self._n_actions[i]] > 0
            if not avail[i].any():  # nothing legal: treat like an agent that has left
                avail[i] = dead_agent_avail(n_actions)
        state = np.asarray(self.env.state(), np.float32).reshape(-1) if self._has_state \
            else out.reshape(-1).copy()
        return out, state, avail

    @property
    def spec_name(self) -> str:
        return getattr(getattr(self, "spec", None), "name", "pettingzoo")

    # -- HostEnv -----------------------------------------------------------------------

    def reset(self, seed: int) -> HostStep:
        obs, infos = self.env.reset(seed=int(seed))
        self._t = 0
        o, s, a = self._convert(obs, infos or {})
        return HostStep(obs=o, state=s, avail=a)

    def step(self, actions: np.ndarray) -> HostStep:
        live = list(self.env.agents)
        act = {agent: int(actions[self.agents.index(agent)]) for agent in live}
        for agent, a in act.items():
            if a >= self._n_actions[self.agents.index(agent)]:
                raise MeigmError(f"{self.spec_name}: action {a} out of range for agent {agent!r}")
        obs, rewards, terms, truncs, infos = self.env.step(act)
        self._t += 1
        values = [float(rewards[a]) for a in live if a in rewards]
        reward = 0.0 if not values else (sum(values) if self.team_reward == "sum"
                                         else sum(values) / len(values))
        left = list(self.env.agents)
        all_done = all(terms.get(a, False) or truncs.get(a, False) for a in live)
        over = not left or all_done
        any_trunc = any(truncs.get(a, False) for a in live)
        at_limit = self._t >= self._limit
        terminated = over and not any_trunc
        truncated = (over and any_trunc) or (at_limit and not terminated)
        o, s, a = self._convert(obs, infos or {})
        return HostStep(obs=o, state=s, avail=a, reward=reward, terminated=terminated,
                        truncated=truncated)

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if close is not None:
            close()
