"""Soft TD(λ) targets (spec: critic loss, Eq. 8, and Appendix A).

One episode per call, ``[T]`` arrays indexed by time; batch with ``jax.vmap``.
With ``h = 0`` the recursion is pymarl2's TD(λ) target, which the ε-greedy baselines
use; with ``λ = 0`` it is the one-step soft target
``r_t + γ (1 - d_t) (Q̄_{t+1} + h_{t+1})``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_lambda_returns(
    r_t: jax.Array,
    terminated_t: jax.Array,
    mask_t: jax.Array,
    q_next: jax.Array,
    h_next: jax.Array,
    gamma: float,
    lam: float,
) -> jax.Array:
    """Backward-view soft λ-returns ``G_t`` for one padded episode.

    Args:
      r_t: [T] team reward of step t.
      terminated_t: [T] 1 where step t ended the episode in a terminal state
        (not a time-limit truncation).
      mask_t: [T] 1 for real steps, 0 for padding after the episode ended.
      q_next: [T] ``Q̄_tot(s_{t+1}, a'_{t+1})`` from the target networks.
      h_next: [T] entropy bonus ``-α Σ_i log π_i(a'_{i,t+1})`` (0 for hard targets).
      gamma, lam: discount and trace parameter.

    Returns:
      [T] ``G_t = r_t + γ(1-d_t)[(1-λ)(Q̄_{t+1}+h_{t+1}) + λ(G_{t+1}+h_{t+1})]`` (App. A),
      where ``G_{t+1}`` is replaced by ``Q̄_{t+1}`` when step t+1 is not a real step
      (end of the buffer, or an episode that was truncated rather than terminated).
      Values at padded steps are meaningless; callers mask them out of the loss.
    """
    chex_t = r_t.shape
    for name, x in (("terminated_t", terminated_t), ("mask_t", mask_t), ("q_next", q_next),
                    ("h_next", h_next)):
        if x.shape != chex_t:
            raise ValueError(f"{name} has shape {x.shape}, expected {chex_t} like r_t")
    dtype = q_next.dtype
    # mask of step t+1; the step after the last buffer slot never exists.
    mask_next = jnp.concatenate([mask_t[1:], jnp.zeros((1,), mask_t.dtype)]).astype(bool)
    not_done = 1.0 - terminated_t.astype(dtype)

    def backward(g_next: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        r, nd, valid_next, qn, hn = xs
        g_next = jnp.where(valid_next, g_next, qn)  # bootstrap where the trace stops
        g = r + gamma * nd * ((1.0 - lam) * (qn + hn) + lam * (g_next + hn))
        return g, g

    xs = (r_t.astype(dtype), not_done, mask_next, q_next, h_next.astype(dtype))
    _, returns = jax.lax.scan(backward, jnp.zeros((), dtype), xs, reverse=True)
    return returns


def released_lambda_returns(
    r_t: jax.Array,
    terminated_t: jax.Array,
    mask_t: jax.Array,
    q_next: jax.Array,
    h_next: jax.Array,
    gamma: float,
    lam: float,
) -> jax.Array:
    """The soft TD(λ) target as the authors' released Soft-QMIX code computes it.

    Their recursion (``src/utils/rl_utils.py:5-15`` of WentseChen/Soft-QMIX, the entropy
    bonus passed in at ``src/learners/nq_learner.py:126``) is, for a real step t,
    ``G_t = γλ(G_{t+1} + h_{t+1}) + r_t + γ(1-λ)(1-d_t)(Q̄_{t+1} + h_{t+1})``: the
    λ-branch is not cut by termination, so at a terminal step (``d_t = 1``, ``G_{t+1} = 0``)
    the target is ``r_t + γλ h_{t+1}`` — the bonus of the policy in the state after the
    episode ended — where :func:`soft_lambda_returns` gives ``r_t``. Everywhere else the
    two agree, so this is :func:`soft_lambda_returns` with ``r_t + γλ d_t h_{t+1}`` in
    place of ``r_t`` (the extra term then flows back through the earlier steps' λ-branches
    as theirs does).

    Their code goes on summing ``(γλ)^k h`` over the padding slots after that one when the
    episode is shorter than the longest in its batch (zero-filled slots, where every
    action is unavailable and their masked softmax is uniform); those terms depend on the
    other episodes of the batch and are left out here. For the batch's longest episode and
    for every episode of a fixed-length game (the matrix games) the two are equal.

    Same arguments and shapes as :func:`soft_lambda_returns` (one padded episode, [T]).
    """
    dtype = q_next.dtype
    bonus = gamma * lam * terminated_t.astype(dtype) * h_next.astype(dtype)
    return soft_lambda_returns(r_t.astype(dtype) + bonus, terminated_t, mask_t, q_next, h_next,
                               gamma, lam)
