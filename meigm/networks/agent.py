"""The agent network shared by all agents (spec, Networks 1; pymarl2's ``n_rnn``).

Input per agent: own observation, one-hot agent id and one-hot last action, so one
set of weights serves every agent while still letting them specialise.
Shapes: ``[..., N, ·]`` with N agents; the GRU carries ``[..., N, H]``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class RNNAgent(nn.Module):
    """obs ⊕ id ⊕ last action -> Dense+ReLU -> GRU(H) -> Q_i(τ_i, ·) ∈ R^A."""

    n_actions: int
    hidden_dim: int = 64

    @nn.compact
    def __call__(self, hidden: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """hidden [..., H], inputs [..., I] -> (new hidden [..., H], q [..., A])."""
        x = nn.relu(nn.Dense(self.hidden_dim, name="fc1")(inputs))
        hidden, x = nn.GRUCell(self.hidden_dim, name="gru")(hidden, x)
        q = nn.Dense(self.n_actions, name="fc2")(x)
        return hidden, q


def agent_inputs(obs: jax.Array, last_action_onehot: jax.Array) -> jax.Array:
    """obs [..., N, O], last action [..., N, A] -> inputs [..., N, O + N + A]."""
    n_agents = obs.shape[-2]
    agent_id = jnp.broadcast_to(jnp.eye(n_agents, dtype=obs.dtype), (*obs.shape[:-1], n_agents))
    return jnp.concatenate([obs, agent_id, last_action_onehot.astype(obs.dtype)], axis=-1)
