"""Soft TD(λ) targets (``meigm.ops.targets.soft_lambda_returns``, spec Eq. 8 / App. A).

Guards the critic's regression target: hand-computed returns for a padded terminated
episode and a truncated one, the two limits the spec names (λ = 0: one-step soft target;
α = 0: pymarl2's TD(λ), checked against an independent reference and a literal port of
pymarl2's ``build_td_lambda_targets``), agreement of the ``lax.scan`` with a plain Python
reverse loop on random padded inputs, and the shape check.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meigm.ops.targets import soft_lambda_returns

SETTINGS = settings(max_examples=40, deadline=None, database=None)

#: gamma and lam are traced arguments, so one compilation per buffer length T.
_returns = jax.jit(soft_lambda_returns)
BUFFER_LENGTHS = (1, 3, 6)


def _run(r, terminated, mask, q_next, h_next, gamma, lam) -> np.ndarray:
    args = [np.asarray(x, np.float32) for x in (r, terminated, mask, q_next, h_next)]
    return np.asarray(_returns(*args, np.float32(gamma), np.float32(lam)))


def test_padded_terminated_episode_by_hand():
    # 3 real steps in a buffer of 5; the episode terminates at step 2. Padding holds junk
    # (7s, 50s, 9s) that must not leak into G_0..G_2.
    r = [1.0, -0.5, 2.0, 7.0, 7.0]
    terminated = [0, 0, 1, 0, 0]
    mask = [1, 1, 1, 0, 0]
    q_next = [3.0, 4.0, 100.0, 50.0, 50.0]  # q_next[2] is never used: terminal
    h_next = [0.2, 0.4, 9.0, 9.0, 9.0]
    g = _run(r, terminated, mask, q_next, h_next, gamma=0.9, lam=0.5)
    # G_2 = r_2 = 2.0                                    (d_2 = 1: no bootstrap)
    # G_1 = -0.5 + 0.9 * (0.5 * (4.0 + 0.4) + 0.5 * (2.0 + 0.4))
    #     = -0.5 + 0.9 * (2.2 + 1.2) = -0.5 + 3.06 = 2.56
    # G_0 = 1.0 + 0.9 * (0.5 * (3.0 + 0.2) + 0.5 * (2.56 + 0.2))
    #     = 1.0 + 0.9 * (1.6 + 1.38) = 1.0 + 2.682 = 3.682
    np.testing.assert_allclose(g[:3], [3.682, 2.56, 2.0], atol=1e-5)


def test_truncated_episode_bootstraps_from_last_next_value():
    # Not terminated: the last step bootstraps from Q̄_3 + h_3 = q_next[2] + h_next[2].
    r = [1.0, 0.0, -1.0]
    q_next = [2.0, 3.0, 5.0]
    h_next = [0.1, 0.2, 0.3]
    g = _run(r, [0, 0, 0], [1, 1, 1], q_next, h_next, gamma=0.9, lam=0.5)
    # G_2 = -1 + 0.9 * (0.5 * (5 + 0.3) + 0.5 * (5 + 0.3)) = -1 + 4.77 = 3.77
    # G_1 = 0 + 0.9 * (0.5 * (3 + 0.2) + 0.5 * (3.77 + 0.2)) = 0.9 * 3.585 = 3.2265
    # G_0 = 1 + 0.9 * (0.5 * (2 + 0.1) + 0.5 * (3.2265 + 0.1)) = 1 + 0.9 * 2.71325
    #     = 3.441925
    expected = [3.441925, 3.2265, 3.77]
    np.testing.assert_allclose(g, expected, atol=1e-5)
    # The same episode truncated inside a longer buffer (padding after it) is unchanged.
    padded = _run([*r, 8.0, 8.0, 8.0], [0] * 6, [1, 1, 1, 0, 0, 0], [*q_next, 60.0, 60.0, 60.0],
                  [*h_next, 6.0, 6.0, 6.0], gamma=0.9, lam=0.5)
    np.testing.assert_allclose(padded[:3], expected, atol=1e-5)


def test_batches_with_vmap():
    rng = np.random.default_rng(0)
    r, q, h = (rng.normal(size=(4, 6)).astype(np.float32) for _ in range(3))
    term = np.zeros((4, 6), np.float32)
    term[1, 2] = 1.0
    mask = (np.arange(6) < np.array([[6], [3], [1], [4]])).astype(np.float32)
    batched = np.asarray(
        jax.vmap(soft_lambda_returns, in_axes=(0, 0, 0, 0, 0, None, None))(
            r, term, mask, q, h, 0.99, 0.4
        )
    )
    for b in range(4):
        np.testing.assert_allclose(
            batched[b], _run(r[b], term[b], mask[b], q[b], h[b], 0.99, 0.4), rtol=1e-6, atol=1e-6
        )


# ----------------------------------------------------------------- random episodes

VALUE = st.floats(-10, 10, width=32)
UNIT = st.floats(0.0, 1.0)


@st.composite
def padded_episode(draw, random_padding: bool = False):
    """A [T] episode: real steps a prefix of length L; terminal only at step L-1 (or never).

    random_padding: mask and terminal flags arbitrary (not a prefix), to test the
    recursion itself rather than episode semantics.
    """
    t = draw(st.sampled_from(BUFFER_LENGTHS))
    r, q_next = (draw(arrays(np.float32, (t,), elements=VALUE)) for _ in range(2))
    h_next = draw(arrays(np.float32, (t,), elements=st.floats(0.0, 5.0, width=32)))
    if random_padding:
        mask = draw(arrays(np.bool_, (t,))).astype(np.float32)
        terminated = draw(arrays(np.bool_, (t,))).astype(np.float32)
        length = t
    else:
        length = draw(st.integers(1, t))
        mask = (np.arange(t) < length).astype(np.float32)
        terminated = np.zeros(t, np.float32)
        if draw(st.booleans()):
            terminated[length - 1] = 1.0
    return r, terminated, mask, q_next, h_next, length


@SETTINGS
@given(padded_episode(random_padding=True), UNIT)
def test_lambda_zero_is_the_one_step_soft_target(episode, gamma):
    r, terminated, mask, q_next, h_next, _ = episode
    g = _run(r, terminated, mask, q_next, h_next, gamma, 0.0)
    one_step = r + gamma * (1.0 - terminated) * (q_next + h_next)
    np.testing.assert_allclose(g, one_step, rtol=1e-5, atol=1e-4)


def td_lambda_reference(r, terminated, q_next, length, gamma, lam) -> np.ndarray:
    """Textbook recursive λ-return over the L real steps (float64).

    G_{L-1} = r + γ(1-d) Q̄_L (bootstrap at the end unless terminal);
    G_t = r_t + γ [(1-λ) Q̄_{t+1} + λ G_{t+1}] before that (no terminal inside).
    """
    g = np.zeros(length)
    g[-1] = r[length - 1] + gamma * (1.0 - terminated[length - 1]) * q_next[length - 1]
    for t in range(length - 2, -1, -1):
        g[t] = r[t] + gamma * ((1.0 - lam) * q_next[t] + lam * g[t + 1])
    return g


def pymarl2_td_lambda(r, terminated, mask, q_next, gamma, lam) -> np.ndarray:
    """Literal port of pymarl2 ``build_td_lambda_targets`` for one episode (float64).

    pymarl2 indexes target Q by state, ``target_qs[t + 1] = Q̄_{t+1} = q_next[t]``.
    Only valid for episodes that terminate or fill the buffer (pymarl2 bootstraps a
    shorter truncated episode through its padding).
    """
    t_len = len(r)
    target_qs = np.concatenate([[0.0], q_next]).astype(np.float64)
    ret = np.zeros(t_len + 1)
    ret[-1] = target_qs[-1] * (1 - np.sum(terminated))
    for t in range(t_len - 1, -1, -1):
        ret[t] = lam * gamma * ret[t + 1] + mask[t] * (
            r[t] + (1 - lam) * gamma * target_qs[t + 1] * (1 - terminated[t])
        )
    return ret[:-1]


@SETTINGS
@given(padded_episode(), UNIT, UNIT)
def test_zero_entropy_bonus_is_plain_td_lambda(episode, gamma, lam):
    r, terminated, mask, q_next, _, length = episode
    g = _run(r, terminated, mask, q_next, np.zeros_like(r), gamma, lam)
    expected = td_lambda_reference(r, terminated, q_next, length, gamma, lam)
    np.testing.assert_allclose(g[:length], expected, rtol=1e-5, atol=1e-4)
    if terminated.any() or length == len(r):
        pymarl2 = pymarl2_td_lambda(r, terminated, mask, q_next, gamma, lam)
        np.testing.assert_allclose(g[:length], pymarl2[:length], rtol=1e-5, atol=1e-4)


def soft_reference(r, terminated, mask, q_next, h_next, gamma, lam) -> np.ndarray:
    """Plain reverse loop of the documented soft recursion (float64)."""
    t_len = len(r)
    g = np.zeros(t_len)
    for t in range(t_len - 1, -1, -1):
        next_is_real = t + 1 < t_len and mask[t + 1] > 0
        g_next = g[t + 1] if next_is_real else q_next[t]
        g[t] = r[t] + gamma * (1.0 - terminated[t]) * (
            (1.0 - lam) * (q_next[t] + h_next[t]) + lam * (g_next + h_next[t])
        )
    return g


@SETTINGS
@given(st.booleans().flatmap(padded_episode), UNIT, UNIT)
def test_scan_matches_a_python_reverse_loop(episode, gamma, lam):
    r, terminated, mask, q_next, h_next, _ = episode
    g = _run(r, terminated, mask, q_next, h_next, gamma, lam)
    expected = soft_reference(r, terminated, mask, q_next, h_next, gamma, lam)
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bad", ["terminated_t", "mask_t", "q_next", "h_next"])
def test_shape_mismatch_raises(bad):
    args = {name: jnp.zeros(4) for name in ("r_t", "terminated_t", "mask_t", "q_next", "h_next")}
    args[bad] = jnp.zeros(5)
    with pytest.raises(ValueError, match=bad):
        soft_lambda_returns(**args, gamma=0.99, lam=0.4)
    args[bad] = jnp.zeros((4, 1))
    with pytest.raises(ValueError, match=bad):
        soft_lambda_returns(**args, gamma=0.99, lam=0.4)
