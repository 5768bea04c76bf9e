"""Cooperative matrix games: every agent picks an action, the team gets ``payoff[a_1..a_n]``.

Non-monotonic payoffs (the optimum is surrounded by heavy penalties) are the classic
test of credit assignment: a monotonic mixer fitted to exploratory data prefers the
safe actions. Any payoff tensor works — ``n`` agents, agent ``i`` with ``shape[i]``
actions — and the game may be repeated for ``steps`` rounds (the same payoff each
round). Written as a JaxMARL ``MultiAgentEnv`` so it goes through the same adapter as
every other scenario.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxmarl.environments.spaces import Box, Discrete

from meigm.envs.base import MultiAgentEnv

#: Presets. ``table1`` is the paper's Table 1 (from QTRAN, Son et al. 2019);
#: ``released`` is the payoff active in the authors' released code (WentseChen/Soft-QMIX,
#: ``src/envs/one_step_matrix_game.py:7-9``, commented there "can be solved by qmix": the
#: miscoordination penalty is -0.1, not -12); ``climbing`` is Claus & Boutilier (1998);
#: ``penalty`` is their penalty game with k=-100.
PRESETS: dict[str, list[list[float]]] = {
    "table1": [[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]],
    "released": [[12.0, -0.1, -0.1], [-0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]],
    "climbing": [[11.0, -30.0, 0.0], [-30.0, 7.0, 6.0], [0.0, 0.0, 5.0]],
    "penalty": [[-100.0, 0.0, 10.0], [0.0, 2.0, 0.0], [10.0, 0.0, -100.0]],
}


@struct.dataclass
class MatrixState:
    t: jax.Array
    done: jax.Array


class MatrixGame(MultiAgentEnv):
    """A (repeated) cooperative normal-form game with payoff tensor ``[A_1, ..., A_n]``."""

    def __init__(self, payoff: np.ndarray | list, steps: int = 1) -> None:
        payoff = np.asarray(payoff, dtype=np.float32)
        if payoff.ndim < 1 or min(payoff.shape) < 1:
            raise ValueError(f"payoff must be a tensor with one axis per agent, got shape {payoff.shape}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        super().__init__(num_agents=payoff.ndim)
        self.payoff = payoff
        self.steps = int(steps)
        obs_dim = self.steps + 1
        for i, agent in enumerate(self.agents):
            self.action_spaces[agent] = Discrete(payoff.shape[i])
            self.observation_spaces[agent] = Box(0.0, 1.0, (obs_dim,))

    def _obs(self, t: jax.Array) -> dict[str, jax.Array]:
        o = jax.nn.one_hot(t, self.steps + 1)
        return {a: o for a in self.agents}

    def reset(self, key: jax.Array) -> tuple[dict[str, jax.Array], MatrixState]:
        del key
        state = MatrixState(t=jnp.zeros((), jnp.int32), done=jnp.zeros((), bool))
        return self._obs(state.t), state

    def step_env(self, key, state: MatrixState, actions: dict[str, jax.Array]):
        del key
        idx = tuple(actions[a] for a in self.agents)
        reward = jnp.asarray(self.payoff)[idx]
        t = state.t + 1
        done = t >= self.steps
        new = MatrixState(t=t, done=done)
        rewards = {a: reward for a in self.agents}
        dones = {a: done for a in self.agents} | {"__all__": done}
        return self._obs(t), new, rewards, dones, {}

    def get_obs(self, state: MatrixState) -> dict[str, jax.Array]:
        return self._obs(state.t)

    def get_avail_actions(self, state: MatrixState) -> dict[str, jax.Array]:
        return {a: jnp.ones(self.payoff.shape[i], bool) for i, a in enumerate(self.agents)}
