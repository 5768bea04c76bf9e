"""Mixers ``M_ψ(q, s) -> Q_tot`` that satisfy IGM (Eq. 1).

Call signature for every mixer: ``q [..., N]`` (one value per agent, usually of the
taken action) and ``state [..., S]`` -> ``Q_tot [...]``. IGM holds because each mixer is
monotone non-decreasing in every ``q_i`` (VDN: sum; QMIX: non-negative hyper-weights
and ELU), so the joint argmax is the tuple of local argmaxes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class VDNMixer(nn.Module):
    """VDN (Sunehag et al. 2017): ``Q_tot = Σ_i Q_i``; parameter-free."""

    @nn.compact
    def __call__(self, q: jax.Array, state: jax.Array) -> jax.Array:
        del state
        return jnp.sum(q, axis=-1)


class QMixer(nn.Module):
    """QMIX (Rashid et al. 2020) as in pymarl2: two-layer hyper-networks, ``|·|`` weights.

    ``Q_tot = w2(s)ᵀ ELU(W1(s) q + b1(s)) + b2(s)`` with ``|W1|, |w2|``.
    """

    n_agents: int
    embed_dim: int = 32
    hypernet_embed: int = 64

    @nn.compact
    def __call__(self, q: jax.Array, state: jax.Array) -> jax.Array:
        n, e = self.n_agents, self.embed_dim
        batch = q.shape[:-1]

        def hyper(out: int, name: str) -> jax.Array:
            h = nn.relu(nn.Dense(self.hypernet_embed, name=f"{name}_0")(state))
            return nn.Dense(out, name=f"{name}_1")(h)

        w1 = jnp.abs(hyper(n * e, "hyper_w1")).reshape(*batch, n, e)  # [..., N, E]
        b1 = nn.Dense(e, name="hyper_b1")(state)  # [..., E]
        w2 = jnp.abs(hyper(e, "hyper_w2"))  # [..., E]
        b2 = hyper(1, "hyper_b2")[..., 0]  # [...]
        hidden = nn.elu(jnp.einsum("...n,...ne->...e", q, w1) + b1)  # [..., E]
        return jnp.sum(hidden * w2, axis=-1) + b2


MIXERS = ("vdn", "qmix")


def make_mixer(name: str, n_agents: int, embed_dim: int, hypernet_embed: int) -> nn.Module:
    """Mixer by name; ``name`` is validated by the config, so an unknown one is a bug."""
    if name == "vdn":
        return VDNMixer()
    if name == "qmix":
        return QMixer(n_agents=n_agents, embed_dim=embed_dim, hypernet_embed=hypernet_embed)
    raise ValueError(f"unknown mixer {name!r}; expected one of {MIXERS}")
