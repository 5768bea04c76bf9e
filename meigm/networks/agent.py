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
    """obs ⊕ id ⊕ last action -> Dense+ReLU -> GRU(H) -> Q_i(τ_i, ·) ∈ R^A.

    The GRU is written out (same equations as ``flax.linen.GRUCell``, tested) so that the
    three gates' products are fused into one ``[·, 3H]`` matrix each for input and hidden
    state (~7% faster update). ``embed`` and ``head`` do not depend on the hidden state,
    but the unroll over stored episodes still applies them step by step inside its scan:
    hoisting them into one product over all steps measured ~20% slower on CPU
    (:func:`meigm.learners.common.unroll_agent`; benchmarks/notes/throughput_smax.md, issue 3).
    """

    n_actions: int
    hidden_dim: int = 64

    def setup(self) -> None:
        h = self.hidden_dim
        self.fc1 = nn.Dense(h)
        self.gru_in = nn.Dense(3 * h)  # W_i[r, z, n] x + b_[r, z, in]
        self.gru_hidden = nn.Dense(3 * h, use_bias=False,  # W_h[r, z, n] h
                                   kernel_init=_orthogonal_blocks(3))
        self.gru_hn_bias = self.param("gru_hn_bias", nn.initializers.zeros_init(), (h,))
        self.fc2 = nn.Dense(self.n_actions)

    def __call__(self, hidden: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """hidden [..., H], inputs [..., I] -> (new hidden [..., H], q [..., A])."""
        hidden = self.recur(hidden, self.embed(inputs))
        return hidden, self.head(hidden)

    def embed(self, inputs: jax.Array) -> jax.Array:
        """inputs [..., I] -> the GRU's input projection [..., 3H]."""
        return self.gru_in(nn.relu(self.fc1(inputs)))

    def recur(self, hidden: jax.Array, x_proj: jax.Array) -> jax.Array:
        """hidden [..., H], input projection [..., 3H] -> new hidden [..., H]."""
        xr, xz, xn = jnp.split(x_proj, 3, axis=-1)
        hr, hz, hn = jnp.split(self.gru_hidden(hidden), 3, axis=-1)
        r = nn.sigmoid(xr + hr)
        z = nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * (hn + self.gru_hn_bias))
        return (1.0 - z) * n + z * hidden

    def head(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., H] -> Q_i(τ_i, ·) [..., A]."""
        return self.fc2(hidden)


def _orthogonal_blocks(n: int) -> nn.initializers.Initializer:
    """Flax GRUCell's recurrent initialisation for a fused kernel: n orthogonal
    [H, H] blocks side by side (one per gate), so the fused cell starts where the
    unfused one would."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        rows, cols = shape
        keys = jax.random.split(key, n)
        return jnp.concatenate(
            [nn.initializers.orthogonal()(k, (rows, cols // n), dtype) for k in keys], axis=-1)

    return init


def agent_inputs(obs: jax.Array, last_action_onehot: jax.Array) -> jax.Array:
    """obs [..., N, O], last action [..., N, A] -> inputs [..., N, O + N + A]."""
    n_agents = obs.shape[-2]
    agent_id = jnp.broadcast_to(jnp.eye(n_agents, dtype=obs.dtype), (*obs.shape[:-1], n_agents))
    return jnp.concatenate([obs, agent_id, last_action_onehot.astype(obs.dtype)], axis=-1)
