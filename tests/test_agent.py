"""The agent network's hand-fused GRU must be Flax's GRUCell, only faster."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from meigm.networks.agent import RNNAgent


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), hidden=st.sampled_from([3, 8, 64]))
def test_fused_gru_equals_flax_grucell(seed: int, hidden: int) -> None:
    """Same weights in both layouts -> same new hidden state and same Q-values."""
    k_agent, k_cell, k_h, k_x = jax.random.split(jax.random.PRNGKey(seed), 4)
    n_in, n_actions = 7, 5
    agent = RNNAgent(n_actions=n_actions, hidden_dim=hidden)
    h0 = jax.random.normal(k_h, (4, 3, hidden))  # [B, N, H]
    inputs = jax.random.normal(k_x, (4, 3, n_in))  # [B, N, I]
    params = agent.init(k_agent, h0, inputs)["params"]

    cell = nn.GRUCell(hidden)
    cp = cell.init(k_cell, h0, h0)["params"]  # random Flax weights, mapped into ours
    params = {
        **params,
        "gru_in": {"kernel": jnp.concatenate([cp[g]["kernel"] for g in ("ir", "iz", "in")], -1),
                   "bias": jnp.concatenate([cp[g]["bias"] for g in ("ir", "iz", "in")], -1)},
        "gru_hidden": {"kernel": jnp.concatenate([cp[g]["kernel"] for g in ("hr", "hz", "hn")], -1)},
        "gru_hn_bias": cp["hn"]["bias"],
    }
    h_ours, q_ours = agent.apply({"params": params}, h0, inputs)

    x = nn.relu(inputs @ params["fc1"]["kernel"] + params["fc1"]["bias"])
    h_flax, _ = cell.apply({"params": cp}, h0, x)
    q_flax = h_flax @ params["fc2"]["kernel"] + params["fc2"]["bias"]
    np.testing.assert_allclose(h_ours, h_flax, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q_ours, q_flax, rtol=1e-5, atol=1e-5)
