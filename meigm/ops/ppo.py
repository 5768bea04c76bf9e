"""The PPO family's per-example maths: GAE, the clipped surrogate, the clipped value
loss and value normalisation (Schulman et al. 2017; Yu et al. 2022, "The Surprising
Effectiveness of PPO in Cooperative Multi-Agent Games", whose MAPPO defaults these are).

GAE works on one padded episode, ``[T]`` arrays indexed by time (batch with
``jax.vmap``); the losses take any shape and a mask of the entries that count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from meigm.ops.policy import masked_mean


def gae(
    r_t: jax.Array,
    terminated_t: jax.Array,
    mask_t: jax.Array,
    v_t: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimates and their returns for one padded episode.

    Args:
      r_t: [T] team reward of step t.
      terminated_t: [T] 1 where step t ended the episode in a terminal state (a cut by
        the time limit is not terminal: its last step bootstraps from the next value).
      mask_t: [T] 1 for real steps, 0 for the padding after the episode.
      v_t: [T+1] state values; ``v_t[t+1]`` after the last real step is the value of the
        state the episode was left in (the roll-outs keep it in the final slot).
      gamma, lam: discount and GAE's λ.

    Returns:
      ([T] ``A_t = δ_t + γλ(1-d_t) A_{t+1}`` with ``δ_t = r_t + γ(1-d_t) V_{t+1} − V_t``,
      the trace cut after the last real step; [T] returns ``A_t + V_t``), both 0 at
      padded steps. λ = 0 gives ``δ_t``; λ = 1 the discounted return to the end of the
      episode (bootstrapped from ``V`` where it was cut) minus ``V_t``.
    """
    if v_t.shape != (r_t.shape[0] + 1,):
        raise ValueError(f"v_t has shape {v_t.shape}, expected ({r_t.shape[0] + 1},)")
    dtype = v_t.dtype
    mask = mask_t.astype(dtype)
    not_done = 1.0 - terminated_t.astype(dtype)
    mask_next = jnp.concatenate([mask[1:], jnp.zeros((1,), dtype)])
    delta = r_t.astype(dtype) + gamma * not_done * v_t[1:] - v_t[:-1]

    def backward(a_next: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        d, nd, valid_next = xs
        a = d + gamma * lam * nd * valid_next * a_next
        return a, a

    _, adv = jax.lax.scan(backward, jnp.zeros((), dtype), (delta, not_done, mask_next), reverse=True)
    adv = adv * mask
    return adv, (adv + v_t[:-1]) * mask


def normalise_advantages(adv: jax.Array, mask: jax.Array, eps: float = 1e-5) -> jax.Array:
    """``(A − mean) / (std + eps)`` over the masked entries (MAPPO's advantage
    normalisation); masked-out entries become 0."""
    mean = masked_mean(adv, mask)
    std = jnp.sqrt(masked_mean((adv - mean) ** 2, mask))
    return jnp.where(mask, (adv - mean) / (std + eps), 0.0)


def clipped_surrogate(log_probs: jax.Array, old_log_probs: jax.Array, adv: jax.Array,
                      mask: jax.Array, clip: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's policy loss ``−E[min(ρ A, clip(ρ, 1−ε, 1+ε) A)]``, ``ρ = π/π_old``, over the
    masked entries; with the approximate KL ``E[log π_old − log π]`` and the fraction of
    entries where the clip is active."""
    ratio = jnp.exp(log_probs - old_log_probs)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * adv)
    stats = {"approx_kl": masked_mean(old_log_probs - log_probs, mask),
             "clip_fraction": masked_mean((jnp.abs(ratio - 1.0) > clip).astype(adv.dtype), mask)}
    return -masked_mean(surrogate, mask), stats


def huber(x: jax.Array, delta: float) -> jax.Array:
    """Huber loss of an error: quadratic ``x²/2`` within ``±delta``, linear beyond."""
    a = jnp.abs(x)
    return jnp.where(a <= delta, 0.5 * x**2, delta * (a - 0.5 * delta))


def clipped_value_loss(values: jax.Array, old_values: jax.Array, targets: jax.Array,
                       mask: jax.Array, clip: float, delta: float) -> jax.Array:
    """MAPPO's value loss: the larger of the Huber losses of the new value and of the
    value clipped to ``old ± clip``, over the masked entries (all in the normalised
    space when value normalisation is on)."""
    clipped = old_values + jnp.clip(values - old_values, -clip, clip)
    loss = jnp.maximum(huber(targets - values, delta), huber(targets - clipped, delta))
    return masked_mean(loss, mask)


@struct.dataclass
class ValueNorm:
    """Running, debiased mean and variance of the value targets (MAPPO's ``ValueNorm``):
    the critic predicts normalised values, so one learning rate suits returns of any
    scale."""

    mean: jax.Array  # [] running mean (biased towards 0 early; see ``stats``)
    mean_sq: jax.Array  # [] running mean of squares
    debias: jax.Array  # [] 1 − β^k after k updates

    @staticmethod
    def zeros() -> ValueNorm:
        z = jnp.zeros((), jnp.float32)
        return ValueNorm(mean=z, mean_sq=z, debias=z)


def value_norm_update(vn: ValueNorm, x: jax.Array, mask: jax.Array, beta: float) -> ValueNorm:
    """Fold the masked entries of ``x`` into the running statistics with weight 1 − β."""
    return ValueNorm(mean=beta * vn.mean + (1 - beta) * masked_mean(x, mask),
                     mean_sq=beta * vn.mean_sq + (1 - beta) * masked_mean(x**2, mask),
                     debias=beta * vn.debias + (1 - beta))


def value_norm_stats(vn: ValueNorm, eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
    """Debiased (mean, std), the variance floored at 1e-2 as MAPPO does (so before any
    update, and for near-constant targets, std is 0.1)."""
    d = jnp.maximum(vn.debias, eps)
    mean = vn.mean / d
    var = jnp.maximum(vn.mean_sq / d - mean**2, 1e-2)
    return mean, jnp.sqrt(var)


def normalise(vn: ValueNorm, x: jax.Array) -> jax.Array:
    mean, std = value_norm_stats(vn)
    return (x - mean) / std


def denormalise(vn: ValueNorm, x: jax.Array) -> jax.Array:
    mean, std = value_norm_stats(vn)
    return x * std + mean
