"""Masked discrete policies (``meigm.ops.policy``).

Guards the spec's "Setting" rule that an unavailable action is never sampled, never the
argmax and never enters a softmax normaliser: its probability must be exactly 0.0 (not
just tiny), the available probabilities must sum to one, the exact entropy must lie in
``[0, log |A_avail|]`` and stay differentiable (finite gradients) when actions are
masked, and both the soft sampler and ε-greedy must only ever return available actions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meigm.ops.policy import (
    MASKED_LOGIT,
    entropy,
    epsilon_greedy,
    masked_argmax,
    masked_log_softmax,
    masked_mean,
    policy_mode,
    sample_masked,
)

SETTINGS = settings(max_examples=40, deadline=None, database=None)
DRAWS = 2000

# Jitted once: a handful of fixed shapes keeps the number of compilations small.
_log_softmax = jax.jit(masked_log_softmax)
_entropy = jax.jit(lambda logits, avail: entropy(masked_log_softmax(logits, avail), avail))
_argmax = jax.jit(masked_argmax)
_mode = jax.jit(policy_mode)


@jax.jit
def _draws(key, logits, avail):
    """sample_masked, ε=0 and ε=1 draws in one program (threefry compiles slowly on CPU)."""
    k_soft, k_greedy, k_uniform = jax.random.split(key, 3)
    return (
        sample_masked(k_soft, logits, avail),
        epsilon_greedy(k_greedy, logits, avail, 0.0),
        epsilon_greedy(k_uniform, logits, avail, 1.0),
    )


@jax.jit
def _entropy_grad(logits, avail):
    return jax.grad(lambda x: jnp.sum(entropy(masked_log_softmax(x, avail), avail)))(logits)


def _broadcast(x: np.ndarray) -> jnp.ndarray:
    """[N, A] -> [DRAWS, N, A]: one batch holds DRAWS independent draws per row."""
    return jnp.broadcast_to(jnp.asarray(x), (DRAWS, *x.shape))


#: [N, A] shapes of the deterministic checks; samplers use one shape (threefry compiles slowly).
SHAPES = ((1, 2), (4, 5), (6, 3))
SAMPLE_SHAPE = ((6, 5),)


@st.composite
def policy_inputs(draw, shapes=SHAPES):
    """(logits [N, A] float32 in [-50, 50], avail [N, A] bool, >= 1 available per row).

    No subnormal logits: XLA on the CPU flushes them to zero, so 0 and 2e-42 compare
    equal inside a compiled program (hypothesis found that tie once) — a property of
    the backend, not of the masking these tests are about."""
    n, a = draw(st.sampled_from(shapes))
    logits = draw(arrays(np.float32, (n, a), elements=st.floats(
        -50, 50, width=32, allow_nan=False, allow_subnormal=False)))
    avail = draw(arrays(np.bool_, (n, a)))
    forced = draw(arrays(np.int64, (n,), elements=st.integers(0, a - 1)))
    avail[np.arange(n), forced] = True
    return logits, avail


@SETTINGS
@given(policy_inputs())
def test_unavailable_actions_get_exactly_zero_probability(inputs):
    logits, avail = inputs
    log_probs = np.asarray(_log_softmax(logits, avail))
    probs = np.exp(log_probs)
    assert np.all(np.isfinite(log_probs))
    assert np.all(probs[~avail] == 0.0)
    # The masked log-probability is the (finite) masking constant, not -inf.
    assert np.all(log_probs[~avail] <= 0.99 * MASKED_LOGIT)
    np.testing.assert_allclose(np.where(avail, probs, 0.0).sum(-1), 1.0, atol=1e-5)


@SETTINGS
@given(policy_inputs(), st.floats(-1e6, 1e6, allow_nan=False))
def test_unavailable_logits_never_enter_the_normaliser(inputs, junk):
    logits, avail = inputs
    changed = np.where(avail, logits, np.float32(junk))
    np.testing.assert_array_equal(
        np.asarray(_log_softmax(logits, avail))[avail],
        np.asarray(_log_softmax(changed, avail))[avail],
    )


@SETTINGS
@given(policy_inputs())
def test_masked_argmax_is_the_best_available_action(inputs):
    logits, avail = inputs
    greedy = np.asarray(_argmax(logits, avail))
    rows = np.arange(logits.shape[0])
    assert greedy.dtype == np.int32
    assert np.all(avail[rows, greedy])
    best = np.where(avail, logits, -np.inf).max(-1)
    np.testing.assert_array_equal(logits[rows, greedy], best)


@SETTINGS
@given(policy_inputs())
def test_entropy_is_between_zero_and_log_available_count(inputs):
    logits, avail = inputs
    h = np.asarray(_entropy(logits, avail))
    n_avail = avail.sum(-1)
    assert h.shape == (logits.shape[0],)
    assert np.all(h >= 0.0)
    assert np.all(h <= np.log(n_avail) + 1e-5)


@SETTINGS
@given(policy_inputs(), st.floats(-50, 50, width=32))
def test_entropy_of_equal_logits_is_log_available_count(inputs, value):
    _, avail = inputs
    logits = np.full(avail.shape, value, np.float32)
    h = np.asarray(_entropy(logits, avail))
    np.testing.assert_allclose(h, np.log(avail.sum(-1)), atol=1e-5)


def test_entropy_of_a_known_masked_policy():
    # Available logits [0, log 3] -> probabilities [1/4, 3/4]; the masked 100 must not count.
    # (Tiled to one of the shapes compiled above.)
    logits = jnp.tile(jnp.array([0.0, math.log(3.0), 100.0]), (6, 1))
    avail = jnp.tile(jnp.array([True, True, False]), (6, 1))
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(np.asarray(_entropy(logits, avail)), [expected] * 6, atol=1e-6)


@SETTINGS
@given(policy_inputs())
def test_entropy_gradient_is_finite_with_masked_actions(inputs):
    logits, avail = inputs
    grad = np.asarray(_entropy_grad(logits, avail))
    assert np.all(np.isfinite(grad))
    # Masked logits do not influence the policy at all.
    assert np.all(grad[~avail] == 0.0)


def test_entropy_gradient_matches_finite_differences():
    logits = jnp.tile(jnp.array([0.3, -1.2, 0.8, 2.0, 40.0]), (4, 1))
    avail = jnp.tile(jnp.array([True, False, True, True, False]), (4, 1))
    grad = np.asarray(_entropy_grad(logits, avail))
    eps = 1e-3
    for a in (0, 2, 3):
        bump = jnp.zeros_like(logits).at[0, a].set(eps)
        fd = (_entropy(logits + bump, avail) - _entropy(logits - bump, avail))[0] / (2 * eps)
        np.testing.assert_allclose(grad[0, a], float(fd), atol=2e-3)
    assert grad[0, 1] == 0.0 and grad[0, 4] == 0.0


@SETTINGS
@given(policy_inputs(SAMPLE_SHAPE), st.integers(0, 2**31 - 1))
def test_sample_masked_never_returns_unavailable_actions(inputs, seed):
    logits, avail = inputs
    actions = np.asarray(_draws(jax.random.PRNGKey(seed), _broadcast(logits), _broadcast(avail))[0])
    assert actions.shape == (DRAWS, logits.shape[0])
    assert np.all(avail[np.arange(logits.shape[0]), actions])


def test_sample_masked_follows_the_masked_softmax():
    # One policy in all 6 rows of the [DRAWS, 6, 5] batch: 12000 draws from it.
    logits = np.tile(np.array([0.0, 1.0, 5.0, 0.5, 9.0], np.float32), (6, 1))
    avail = np.tile(np.array([True, True, False, True, False]), (6, 1))
    actions = np.asarray(_draws(jax.random.PRNGKey(0), _broadcast(logits), _broadcast(avail))[0])
    freq = np.bincount(actions.ravel(), minlength=5) / actions.size
    expected = np.exp(np.asarray(_log_softmax(logits[:1], avail[:1])))[0]
    assert freq[2] == 0.0 and freq[4] == 0.0
    np.testing.assert_allclose(freq, expected, atol=0.02)


@SETTINGS
@given(policy_inputs(SAMPLE_SHAPE), st.integers(0, 2**31 - 1))
def test_epsilon_zero_is_greedy(inputs, seed):
    q, avail = inputs
    actions = np.asarray(_draws(jax.random.PRNGKey(seed), _broadcast(q), _broadcast(avail))[1])
    greedy = np.asarray(_argmax(q, avail))
    np.testing.assert_array_equal(actions, np.broadcast_to(greedy, actions.shape))


@SETTINGS
@given(policy_inputs(SAMPLE_SHAPE), st.integers(0, 2**31 - 1))
def test_epsilon_one_is_uniform_over_available_actions(inputs, seed):
    q, avail = inputs
    n, a = q.shape
    actions = np.asarray(_draws(jax.random.PRNGKey(seed), _broadcast(q), _broadcast(avail))[2])
    assert np.all(avail[np.arange(n), actions])
    for i in range(n):
        freq = np.bincount(actions[:, i], minlength=a) / DRAWS
        uniform = np.where(avail[i], 1.0 / avail[i].sum(), 0.0)
        # Every available action shows up; 2000 draws put each within ~6 sd of 1/|A_avail|.
        assert np.all((freq > 0) == avail[i])
        np.testing.assert_allclose(freq, uniform, atol=0.07)


def test_policy_mode_breaks_ties_of_the_scores_by_q():
    """Issue 16's case: distinct Q-values whose float32 logits are equal; the plain argmax
    picks the lowest index, the mode picks the better Q. Unavailable actions never count,
    however high their score or Q."""
    scores = np.array([[-33.79131, -33.79131, -40.0], [1.0, 1.0, 5.0]], np.float32)
    q = np.array([[-100.0, -99.998, 7.0], [2.0, 3.0, 9.0]], np.float32)
    avail = np.array([[True, True, True], [True, True, False]])
    assert _argmax(scores, avail).tolist() == [0, 0]
    assert _mode(scores, q, avail).tolist() == [1, 1]


def test_policy_mode_counts_actions_within_rounding_of_the_best_score():
    """Scores one spacing apart in the wrong order (a rounding reversal): both are modes
    and Q decides; scores far beyond rounding are not overruled by Q."""
    best = np.float32(-0.07170755)
    below = np.nextafter(best, np.float32(-1.0))
    scores = np.array([[below, best], [-1.0, -0.9]], np.float32)
    q = np.array([[-1.4954705, -1.4954706], [5.0, 0.0]], np.float32)
    avail = np.ones((2, 2), bool)
    assert _mode(scores, q, avail).tolist() == [0, 1]


@SETTINGS
@given(policy_inputs(), st.data())
def test_policy_mode_is_an_available_action_of_maximal_score(inputs, data):
    """Whatever Q says, the mode is available and its score is within MODE_ULPS spacings of
    the best available score; without near-ties it is the plain argmax."""
    from meigm.ops.policy import MODE_ULPS

    scores, avail = inputs
    q = data.draw(arrays(np.float32, scores.shape, elements=st.floats(-1e4, 1e4, width=32)))
    mode = np.asarray(_mode(scores, q, avail))
    rows = np.arange(len(mode))
    assert avail[rows, mode].all()
    best = np.where(avail, scores, -np.inf).max(-1)
    tol = MODE_ULPS * np.finfo(np.float32).eps * np.maximum(np.abs(best), 1.0)
    assert (scores[rows, mode] >= best - tol).all()
    gaps = np.sort(np.where(avail, scores, -np.inf), -1)
    clear = (gaps[:, -1] - gaps[:, -2] > 2 * tol) | (avail.sum(-1) == 1)
    np.testing.assert_array_equal(mode[clear], np.asarray(_argmax(scores, avail))[clear])


@SETTINGS
@given(x=arrays(np.float32, (3, 5), elements=st.floats(-1e6, 1e6, width=32)),
       mask=arrays(np.bool_, (3, 5)))
def test_masked_mean_is_the_mean_of_the_kept_entries_and_0_for_padding_only(x, mask):
    """Padded steps (and their possibly huge stale values) never leak into a loss; a batch
    of padding only gives 0, not NaN."""
    got = float(masked_mean(jnp.asarray(x), jnp.asarray(mask)))
    want = float(np.mean(x[mask].astype(np.float64))) if mask.any() else 0.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(x).max()))
    leaked = np.where(mask, x, np.float32(3e30))  # garbage where masked out
    assert float(masked_mean(jnp.asarray(leaked), jnp.asarray(mask))) == got
