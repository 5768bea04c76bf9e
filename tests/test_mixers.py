"""Mixers (``meigm.networks.mixers``) and the IGM condition (spec Eq. 1).

Guards that ``argmax_a Q_tot(s, a)`` is attained at the tuple of per-agent argmaxes, by
enumerating every joint action for random per-agent Q tables, states and mixer
parameters (random seeds, scaled and sign-flipped so hyper-networks output large and
negative values), that QMIX is monotone (``dQ_tot/dQ_i >= 0``), and that VDN is exactly
the sum. A non-monotone mixing function is shown to fail the same IGM check, so the check
can fail.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_params
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meigm.networks.mixers import QMixer, VDNMixer, make_mixer

SETTINGS = settings(max_examples=40, deadline=None, database=None)

S = 4
EMBED, HYPER = 8, 8
#: Joint actions are padded to this many rows (A^N <= 4^3) so each N compiles once.
ROWS = 64


class Mixer:
    """A mixer with random numpy parameters and a jitted apply/grad (compiled per shape)."""

    def __init__(self, name: str, n_agents: int):
        self.module = make_mixer(name, n_agents, EMBED, HYPER)
        self.template = jax.eval_shape(
            self.module.init, jax.random.PRNGKey(0), jnp.zeros((1, n_agents)), jnp.zeros((1, S))
        )
        self.apply = jax.jit(self.module.apply)
        self.grad = jax.jit(
            jax.grad(lambda p, q, s: jnp.sum(self.module.apply(p, q, s)), argnums=1)
        )

    def params(self, seed: int, scale: float):
        return random_params(self.template, seed, scale)


MIXERS = {(name, n): Mixer(name, n) for name in ("vdn", "qmix") for n in (2, 3)}


def joint_table(q_local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, A] -> (joint actions [A^N, N] row-major, chosen Q-values [A^N, N])."""
    n, a = q_local.shape
    joint = np.array(list(itertools.product(range(a), repeat=n)))
    return joint, q_local[np.arange(n), joint]


def igm_gap(q_tot_fn, q_local: np.ndarray) -> float:
    """max_a Q_tot(a) - Q_tot(per-agent argmax), by enumerating every joint action."""
    joint, chosen = joint_table(q_local)
    q_tot = np.asarray(q_tot_fn(chosen))
    greedy = np.argmax(q_local, -1)
    row = int(np.flatnonzero(np.all(joint == greedy, -1))[0])
    return float(q_tot.max() - q_tot[row])


def _mixer_q_tot(mixer: Mixer, params, state: np.ndarray):
    def q_tot(chosen: np.ndarray) -> np.ndarray:
        j = chosen.shape[0]
        padded = np.concatenate([chosen, np.repeat(chosen[:1], ROWS - j, 0)]).astype(np.float32)
        states = np.broadcast_to(state, (ROWS, S))
        return np.asarray(mixer.apply(params, padded, states))[:j]

    return q_tot


@st.composite
def mixer_case(draw):
    n = draw(st.integers(2, 3))
    a = draw(st.integers(2, 4))
    q_local = draw(arrays(np.float32, (n, a), elements=st.floats(-10, 10, width=32)))
    state = draw(arrays(np.float32, (S,), elements=st.floats(-2, 2, width=32)))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.1, 10.0)) * draw(st.sampled_from([-1.0, 1.0]))
    return q_local, state, seed, scale


@SETTINGS
@given(st.sampled_from(["vdn", "qmix"]), mixer_case())
def test_mixers_satisfy_igm_by_enumeration(name, case):
    q_local, state, seed, scale = case
    mixer = MIXERS[(name, q_local.shape[0])]
    params = mixer.params(seed, scale)
    q_tot = _mixer_q_tot(mixer, params, state)
    joint, chosen = joint_table(q_local)
    values = q_tot(chosen)
    assert values.shape == (len(joint),)
    assert np.all(np.isfinite(values))
    gap = igm_gap(q_tot, q_local)
    assert gap <= 1e-5 * max(1.0, float(np.abs(values).max()))


def test_igm_check_catches_a_non_monotone_mixer():
    # Q_tot = q_1 * q_2 is not monotone for negative values: the per-agent argmax
    # (-1, -1) gives 1, while (-5, -4) gives 20. The enumeration must see the gap.
    q_local = np.array([[-5.0, -1.0], [-4.0, -1.0]], np.float32)
    gap = igm_gap(lambda chosen: chosen[:, 0] * chosen[:, 1], q_local)
    assert gap == pytest.approx(19.0)


@SETTINGS
@given(
    st.integers(2, 3),
    st.integers(0, 2**31 - 1),
    st.floats(0.1, 10.0),
    st.sampled_from([-1.0, 1.0]),
    st.data(),
)
def test_qmix_is_monotone_in_every_agent_value(n, seed, scale, sign, data):
    mixer = MIXERS[("qmix", n)]
    params = mixer.params(seed, scale * sign)
    q = data.draw(arrays(np.float32, (8, n), elements=st.floats(-10, 10, width=32)))
    state = data.draw(arrays(np.float32, (8, S), elements=st.floats(-2, 2, width=32)))
    grad = np.asarray(mixer.grad(params, q, state))
    assert grad.shape == (8, n)
    assert np.all(np.isfinite(grad))
    assert np.all(grad >= 0.0)


def test_qmix_gradient_is_positive_for_generic_parameters():
    # Guards against a mixer that is "monotone" only because it ignores q.
    mixer = MIXERS[("qmix", 3)]
    rng = np.random.default_rng(0)
    q = rng.uniform(-1, 1, size=(8, 3)).astype(np.float32)
    state = rng.uniform(-1, 1, size=(8, S)).astype(np.float32)
    grad = np.asarray(mixer.grad(mixer.params(0, 1.0), q, state))
    assert np.all(grad > 0.0)


def test_qmix_accepts_leading_batch_axes():
    mixer = MIXERS[("qmix", 2)]
    params = mixer.params(3, 1.0)
    rng = np.random.default_rng(1)
    q = rng.normal(size=(4, 2, 2)).astype(np.float32)
    state = rng.normal(size=(4, 2, S)).astype(np.float32)
    out = np.asarray(mixer.apply(params, q, state))
    flat = np.asarray(mixer.apply(params, q.reshape(8, 2), state.reshape(8, S)))
    assert out.shape == (4, 2)
    np.testing.assert_allclose(out.reshape(8), flat, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(st.integers(2, 3), st.data())
def test_vdn_is_exactly_the_sum(n, data):
    mixer = MIXERS[("vdn", n)]
    assert jax.tree.leaves(mixer.template) == []  # parameter-free
    # Quarter-integers: float32 sums are exact in any order, so equality is exact.
    q = data.draw(arrays(np.int32, (8, n), elements=st.integers(-400, 400))).astype(np.float32)
    q = q / 4
    state = np.zeros((8, S), np.float32)
    np.testing.assert_array_equal(np.asarray(mixer.apply({}, q, state)), q.sum(-1))
    np.testing.assert_array_equal(np.asarray(mixer.grad({}, q, state)), np.ones_like(q))


def test_make_mixer_by_name():
    assert isinstance(make_mixer("vdn", 3, 8, 8), VDNMixer)
    qmix = make_mixer("qmix", 3, 16, 32)
    assert isinstance(qmix, QMixer)
    assert (qmix.n_agents, qmix.embed_dim, qmix.hypernet_embed) == (3, 16, 32)
    with pytest.raises(ValueError, match="unknown mixer"):
        make_mixer("qplex", 3, 8, 8)
