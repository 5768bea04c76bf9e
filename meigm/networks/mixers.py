"""Mixers ``M_ψ -> Q_tot`` that satisfy IGM (Eq. 1).

Call signature for every mixer::

    mixer(q [..., N], state [..., S], q_max [..., N] | None, action_onehot [..., N, A] | None)
        -> Q_tot [...]

``q`` holds each agent's value of its action in the joint action being valued,
``q_max`` each agent's greedy value ``max_{available a} Q_i(τ_i, a)`` and
``action_onehot`` the joint action itself. VDN and QMIX only read ``q``: IGM holds
because they are monotone non-decreasing in every ``q_i`` (a sum; non-negative
hyper-weights and ELU). QPLEX needs the other two: it is *not* monotone in ``q`` — its
joint-action-dependent weights can reorder sub-optimal joint actions — but it keeps the
greedy joint action on top by construction (see :class:`QPLEXMixer`).
:func:`meigm.learners.common.mix` builds all inputs from the agents' full Q tables.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class VDNMixer(nn.Module):
    """VDN (Sunehag et al. 2017): ``Q_tot = Σ_i Q_i``; parameter-free."""

    @nn.compact
    def __call__(self, q: jax.Array, state: jax.Array, q_max: jax.Array | None = None,
                 action_onehot: jax.Array | None = None) -> jax.Array:
        del state, q_max, action_onehot
        return jnp.sum(q, axis=-1)


class QMixer(nn.Module):
    """QMIX (Rashid et al. 2020) as in pymarl2: two-layer hyper-networks, ``|·|`` weights.

    ``Q_tot = w2(s)ᵀ ELU(W1(s) q + b1(s)) + b2(s)`` with ``|W1|, |w2|``.
    """

    n_agents: int
    embed_dim: int = 32
    hypernet_embed: int = 64

    @nn.compact
    def __call__(self, q: jax.Array, state: jax.Array, q_max: jax.Array | None = None,
                 action_onehot: jax.Array | None = None) -> jax.Array:
        del q_max, action_onehot
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


class QPLEXMixer(nn.Module):
    """QPLEX's duplex dueling mixer (Wang et al. 2021), as used by the paper's ME-QPLEX.

    1. Per-agent transformation conditioned on the state:
       ``Q_i' = w_i(s) Q_i + b_i(s)``, ``V_i' = w_i(s) max_a Q_i + b_i(s)`` with
       ``w_i(s) = |·| + ε > 0`` — a positive affine map keeps each agent's argmax.
    2. Dueling split: ``A_i' = Q_i' − V_i' ≤ 0``, zero exactly at the agent's greedy
       action.
    3. ``Q_tot = Σ_i V_i' + Σ_i λ_i(s, a) A_i'`` with ``λ_i(s, a) > 0`` from a
       multi-head attention over the state and the joint action: per head k,
       ``λ_{k,i} = |key_k(s)|_i · σ(query_k(s))_i · σ(act_k(s, a))_i``, summed over
       heads, plus ε.

    IGM: every term of the second sum is ≤ 0 and equals 0 at the local argmaxes, so
    ``Q_tot(s, a) ≤ Σ_i V_i'`` with equality at the greedy joint action — whatever the
    weights, which is why ``λ`` may depend on the joint action (QMIX's may not). The
    pymarl implementation additionally stops the gradient through ``A_i'`` in the
    λ-weighted term; we keep the plain formula of the spec.
    """

    n_agents: int
    hypernet_embed: int = 64
    heads: int = 4
    eps: float = 1e-6

    @nn.compact
    def __call__(self, q: jax.Array, state: jax.Array, q_max: jax.Array | None = None,
                 action_onehot: jax.Array | None = None) -> jax.Array:
        if q_max is None or action_onehot is None:
            raise ValueError("QPLEX needs q_max and action_onehot (use meigm.learners.common.mix)")
        n, k = self.n_agents, self.heads

        def hyper(x: jax.Array, out: int, name: str) -> jax.Array:
            h = nn.relu(nn.Dense(self.hypernet_embed, name=f"{name}_0")(x))
            return nn.Dense(out, name=f"{name}_1")(h)

        # 1. positive affine transformation per agent: [..., N]
        w = jnp.abs(hyper(state, n, "hyper_w")) + self.eps
        b = hyper(state, n, "hyper_b")
        q_t, v_t = w * q + b, w * q_max + b
        adv = q_t - v_t  # [..., N], ≤ 0

        # 3. λ_i(s, a) > 0 from K heads over (state, joint action): [..., K, N]
        joint = action_onehot.reshape(*action_onehot.shape[:-2], -1)  # [..., N*A]
        state_action = jnp.concatenate([state, joint.astype(state.dtype)], axis=-1)
        batch = q.shape[:-1]
        key = jnp.abs(hyper(state, k * n, "lambda_key")).reshape(*batch, k, n)
        query = nn.sigmoid(hyper(state, k * n, "lambda_query")).reshape(*batch, k, n)
        act = nn.sigmoid(hyper(state_action, k * n, "lambda_action")).reshape(*batch, k, n)
        lam = jnp.sum(key * query * act, axis=-2) + self.eps  # [..., N]
        return jnp.sum(v_t, axis=-1) + jnp.sum(lam * adv, axis=-1)


MIXERS = ("vdn", "qmix", "qplex")


def make_mixer(name: str, n_agents: int, embed_dim: int, hypernet_embed: int,
               heads: int = 4) -> nn.Module:
    """Mixer by name; ``name`` is validated by the config, so an unknown one is a bug."""
    if name == "vdn":
        return VDNMixer()
    if name == "qmix":
        return QMixer(n_agents=n_agents, embed_dim=embed_dim, hypernet_embed=hypernet_embed)
    if name == "qplex":
        return QPLEXMixer(n_agents=n_agents, hypernet_embed=hypernet_embed, heads=heads)
    raise ValueError(f"unknown mixer {name!r}; expected one of {MIXERS}")
