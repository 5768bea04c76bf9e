"""Masked discrete policies, and the masked mean every loss over padded steps takes.

Shapes: ``[..., A]`` — any leading batch axes, ``A`` actions; ``avail`` is a boolean
mask of the same shape. Unavailable actions must never be sampled, never be the
argmax and never enter a softmax normaliser (spec, "Setting").

Masking uses a large *finite* negative logit rather than ``-inf``: ``exp`` underflows
to exactly ``0.0`` in float32, so unavailable actions get probability exactly 0, and
gradients stay finite (``0 * -inf`` would put NaNs into the backward pass of the
entropy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASKED_LOGIT = -1e10


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``x`` over the entries where ``mask`` is set, 0 when none is (a batch of
    padding only). x, mask: the same shape, any -> []."""
    m = mask.astype(x.dtype)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def mask_logits(logits: jax.Array, avail: jax.Array) -> jax.Array:
    """[..., A], [..., A] bool -> [..., A] logits with unavailable actions pushed to -1e10."""
    return jnp.where(avail, logits, MASKED_LOGIT)


def masked_log_softmax(logits: jax.Array, avail: jax.Array) -> jax.Array:
    """log π over available actions only: [..., A] -> [..., A] (≈ -1e10 where unavailable)."""
    return jax.nn.log_softmax(mask_logits(logits, avail), axis=-1)


def entropy(log_probs: jax.Array, avail: jax.Array) -> jax.Array:
    """Exact entropy ``-Σ_a π log π`` of a masked policy: [..., A] -> [...].

    Unavailable actions contribute exactly 0, so ``0 <= H <= log |A_avail|``.
    """
    p = jnp.exp(log_probs)
    return -jnp.sum(jnp.where(avail, p * log_probs, 0.0), axis=-1)


def masked_argmax(values: jax.Array, avail: jax.Array) -> jax.Array:
    """Greedy action among available ones: [..., A] -> [...] int32."""
    return jnp.argmax(mask_logits(values, avail), axis=-1).astype(jnp.int32)


#: How far below the best logit (in float32 spacings of its magnitude) an action still
#: counts as a mode of the policy; see :func:`policy_mode`.
MODE_ULPS = 16


def policy_mode(
    scores: jax.Array, q: jax.Array, avail: jax.Array, ulps: int = MODE_ULPS
) -> jax.Array:
    """The policy's most likely action, ties broken by ``q``: [..., A] x3 -> [...] int32.

    Why not the plain argmax of the scores: an order-preserving transform (Eq. 2) keeps
    ``Q_i``'s order exactly, but float32 cannot. At large ``|Q|`` two distinct Q-values
    may map to equal logits (two-layer OPT: ELU saturates and only the ``1e-3·q`` skip
    term is left, below the logits' resolution), or one spacing apart in the wrong order
    from rounding in the sum over hidden units. Such actions are equally likely to float
    precision, so each is a mode; the first index is not a principled pick. The modes
    are the available actions whose score is within ``ulps`` float32 spacings of the
    best score's magnitude, or of 1 where that is smaller (exact ties always count);
    among them the one with the largest ``q`` is returned (then the lowest index).
    With ``q = Q_i`` and OPT logits the result is therefore ``argmax Q_i`` wherever
    rounding is what separates them: the guarantee the IGM gap and the Table 1 view
    rely on. A transform that really reorders (the MLP ablation) is still caught,
    since its gaps are far beyond rounding.
    """
    masked = mask_logits(scores, avail)
    best = jnp.max(masked, axis=-1, keepdims=True)  # [..., 1]
    # relative to |best|, but never below ulps spacings of 1: near 0 an absolute floor
    # keeps the tolerance a normal float (a subnormal one flushes to 0 on XLA's CPU)
    tol = ulps * jnp.finfo(masked.dtype).eps * jnp.maximum(jnp.abs(best), 1.0)
    return masked_argmax(q, avail & (masked >= best - tol))


def sample_masked(key: jax.Array, logits: jax.Array, avail: jax.Array) -> jax.Array:
    """Sample from ``softmax(logits)`` restricted to available actions: [..., A] -> [...]."""
    return jax.random.categorical(key, mask_logits(logits, avail), axis=-1).astype(jnp.int32)


def sample_masked_per_step(keys: jax.Array, logits: jax.Array, avail: jax.Array) -> jax.Array:
    """Sample every step of a batch of episodes, episode ``b``'s step ``t`` with its own
    key ``fold_in(keys[b], t)``: keys [B] (one per episode, e.g. ``random.split(key, B)``),
    logits, avail [B, T, ..., A] -> [B, T, ...] int32.

    Why a key per episode and step: a draw then depends neither on how many steps the
    batch is cut to nor on which other episodes share it, so an update on a batch
    trimmed to its longest episode (:func:`meigm.rollout.buffer.trim_episodes`), or split
    into length-sorted groups (:func:`meigm.schemes.bucketed_update`), samples exactly
    the actions the whole full-length batch would.
    """
    steps = jnp.arange(logits.shape[1])

    def episode(key: jax.Array, logits: jax.Array, avail: jax.Array) -> jax.Array:
        step_keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(steps)
        return jax.vmap(sample_masked)(step_keys, logits, avail)

    return jax.vmap(episode)(keys, logits, avail)


def epsilon_greedy(
    key: jax.Array, q: jax.Array, avail: jax.Array, epsilon: jax.Array | float
) -> jax.Array:
    """pymarl's ε-greedy: with probability ε a uniform *available* action, else argmax.

    q, avail: [..., A] -> actions [...] int32.
    """
    k_explore, k_random = jax.random.split(key)
    greedy = masked_argmax(q, avail)
    random = sample_masked(k_random, jnp.zeros_like(q), avail)
    explore = jax.random.uniform(k_explore, greedy.shape) < epsilon
    return jnp.where(explore, random, greedy)
