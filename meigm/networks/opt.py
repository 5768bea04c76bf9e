"""Policy transforms: map each agent's Q-values to policy logits, ``f_i(Q_i(τ_i,·); s)``.

* :class:`OPT` — the order-preserving transformation of Eq. (2), one per agent, its
  weights produced by hyper-networks from the global state ``s``. It acts on each
  action's value separately, so ``q[a] ≥ q[b] ⇒ f_i(q)[a] ≥ f_i(q)[b]``; with strictly
  positive weights (see ``min_weight``) the order is kept *strictly* in exact
  arithmetic, which is what makes the local policies' mode the local Q argmax (no
  misalignment).

  The guarantee in float32 is weaker, and this is the one meigm relies on: for
  ``|Q| ≤ 1e4`` a higher Q never gets a logit more than a few float32 spacings below a
  lower one's (tested with near-ties and scaled hyper-networks), but distinct Q-values
  can get *equal* logits (two-layer form at large ``|Q|``: ELU saturates, and the
  ``1e-3·q`` skip term is below the logits' spacing). Greedy execution takes the argmax
  of ``Q_i`` itself, and every place that reads the policy's mode (the IGM gap, the
  Table 1 view) uses :func:`meigm.ops.policy_mode`, which counts actions within rounding
  of the best logit as modes and lets ``Q_i`` decide among them.
* :class:`IdentityTransform` — ``f_i(q) = q``: the ``+Entropy`` ablation (Table 3).
* :class:`MLPTransform` — an unconstrained 3-layer MLP in the OPT's place (Table 4).

Call signature: ``q [..., N, A]`` and ``state [..., S]`` -> logits ``[..., N, A]``.
Eq. (9) applies the transform to the whole (detached) ``Q_i(τ_i, ·)`` and then takes
the taken action's entry, so the MLP ablation (which mixes actions) is fitted the
same way as the OPT.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class OPT(nn.Module):
    """Order-preserving transformation, Eq. (2).

    Two layers: ``f_i(q)[a] = Σ_h W2_{i,h} ELU(W1_{i,h} q[a] + b1_{i,h}) + b2_i
    + min_weight · q[a]``.
    One layer (the paper's SMAC-v2 choice): ``f_i(q) = w_i(s) q + b_i(s)``.
    Weights are ``|hyper(s)| + min_weight``: the ``|·|`` of the paper plus a small floor
    (spec, open choice) so no weight can reach 0 and tie two actions. In the two-layer
    form that floor is not enough: ELU saturates at −1 in float32 once its input is below
    about −17, so every hidden unit can go flat and different Q-values would get equal
    logits. The ``min_weight · q`` skip term keeps ``f`` strictly increasing everywhere
    (found by the property test ``test_two_layer_opt_keeps_strict_order_...``).
    """

    n_agents: int
    layers: int = 2
    hidden: int = 32
    hypernet_embed: int = 64
    min_weight: float = 1e-3

    @nn.compact
    def __call__(self, q: jax.Array, state: jax.Array) -> jax.Array:
        n = self.n_agents
        batch = state.shape[:-1]
        width = 1 if self.layers == 1 else self.hidden

        def hyper(out: int, name: str) -> jax.Array:
            h = nn.relu(nn.Dense(self.hypernet_embed, name=f"{name}_0")(state))
            return nn.Dense(out, name=f"{name}_1")(h)

        w1 = (jnp.abs(hyper(n * width, "hyper_w1")) + self.min_weight).reshape(*batch, n, 1, width)
        b1 = hyper(n * width, "hyper_b1").reshape(*batch, n, 1, width)
        if self.layers == 1:
            # f_i(q) = |w_i(s)| q + b_i(s)
            return (q[..., None] * w1 + b1)[..., 0]
        w2 = (jnp.abs(hyper(n * width, "hyper_w2")) + self.min_weight).reshape(*batch, n, 1, width)
        b2 = hyper(n, "hyper_b2").reshape(*batch, n, 1)
        hidden = nn.elu(q[..., None] * w1 + b1)  # [..., N, A, H]
        return jnp.sum(hidden * w2, axis=-1) + b2 + self.min_weight * q


class IdentityTransform(nn.Module):
    """``f_i(q) = q``: policies ``softmax(Q_i/α)`` with no OPT (the +Entropy ablation)."""

    @nn.compact
    def __call__(self, q: jax.Array, state: jax.Array) -> jax.Array:
        del state
        return q


class MLPTransform(nn.Module):
    """Unconstrained 3-layer MLP over ``(Q_i(τ_i,·), s, one-hot i)`` -> logits (Table 4).

    Nothing ties its output order to ``Q_i``'s, which is exactly what the ablation tests.
    """

    n_agents: int
    hidden: int = 64

    @nn.compact
    def __call__(self, q: jax.Array, state: jax.Array) -> jax.Array:
        n, a = q.shape[-2], q.shape[-1]
        state_n = jnp.broadcast_to(state[..., None, :], (*q.shape[:-1], state.shape[-1]))
        agent_id = jnp.broadcast_to(jnp.eye(n, dtype=q.dtype), (*q.shape[:-1], n))
        x = jnp.concatenate([q, state_n, agent_id], axis=-1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(a)(x)


TRANSFORMS = ("opt", "none", "mlp")


def make_transform(
    name: str, n_agents: int, layers: int, hidden: int, hypernet_embed: int, min_weight: float
) -> nn.Module:
    """Transform by config name: ``opt`` (Eq. 2), ``none`` (+Entropy), ``mlp`` (Table 4)."""
    if name == "opt":
        return OPT(n_agents=n_agents, layers=layers, hidden=hidden,
                   hypernet_embed=hypernet_embed, min_weight=min_weight)
    if name == "none":
        return IdentityTransform()
    if name == "mlp":
        return MLPTransform(n_agents=n_agents, hidden=hypernet_embed)
    raise ValueError(f"unknown transform {name!r}; expected one of {TRANSFORMS}")
