"""Mixers (``meigm.networks.mixers``) and the IGM condition (spec Eq. 1).

Guards that ``argmax_a Q_tot(s, a)`` is attained at the tuple of per-agent argmaxes, by
enumerating every joint action for random per-agent Q tables (with unavailable actions),
states and mixer parameters (random seeds, scaled and sign-flipped so hyper-networks
output large and negative values), for every mixer; that QMIX is monotone
(``dQ_tot/dQ_i >= 0``), that VDN is exactly the sum, and that QPLEX equals its duplex
dueling form ``Σ V_i' + Σ λ_i A_i'`` with ``λ > 0`` depending on the joint action. A
non-monotone mixing function is shown to fail the same IGM check, so the check can fail.
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

from meigm.learners.common import init_mixer, mix
from meigm.networks.mixers import MIXERS as MIXER_NAMES
from meigm.networks.mixers import QMixer, QPLEXMixer, VDNMixer, make_mixer

SETTINGS = settings(max_examples=40, deadline=None, database=None)

S = 4
EMBED, HYPER = 8, 8
#: Joint actions are padded to this many rows (A^N <= 4^3) so each N compiles once.
ROWS = 64
#: Actions per agent as the networks see them; smaller games pad with unavailable ones.
A_MAX = 4


class Mixer:
    """A mixer with random numpy parameters and a jitted apply/grad (compiled per shape)."""

    def __init__(self, name: str, n_agents: int):
        self.module = make_mixer(name, n_agents, EMBED, HYPER, heads=2)
        self.template = jax.eval_shape(
            lambda k: init_mixer(self.module, k, n_agents, A_MAX, S), jax.random.PRNGKey(0)
        )
        self.apply = jax.jit(self.module.apply)
        # Q_tot of joint actions [J, N] from full tables q_all [J, N, A], avail, states [J, S].
        self.mix = jax.jit(lambda p, q_all, joints, avail, states: mix(
            self.module, p, q_all, joints, avail, states))
        self.grad = jax.jit(
            jax.grad(lambda p, q, s: jnp.sum(self.module.apply(p, q, s)), argnums=1)
        )

    def params(self, seed: int, scale: float):
        return random_params(self.template, seed, scale)


MIXERS = {(name, n): Mixer(name, n) for name in MIXER_NAMES for n in (2, 3)}


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


def _all_q_tot(mixer: Mixer, params, q_local: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Q_tot of every joint action of the [N, a] table (row-major), a <= A_MAX; the
    network sees A_MAX actions, the padded ones unavailable (and never chosen)."""
    n, a = q_local.shape
    joint, _ = joint_table(q_local)
    j = joint.shape[0]
    q_all = np.full((n, A_MAX), 1e3, np.float32)  # huge values on unavailable actions
    q_all[:, :a] = q_local
    avail = np.zeros((n, A_MAX), bool)
    avail[:, :a] = True
    joints = np.concatenate([joint, np.repeat(joint[:1], ROWS - j, 0)]).astype(np.int32)
    out = mixer.mix(params, np.broadcast_to(q_all, (ROWS, n, A_MAX)), joints,
                    np.broadcast_to(avail, (ROWS, n, A_MAX)), np.broadcast_to(state, (ROWS, S)))
    return np.asarray(out)[:j]


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
@given(st.sampled_from(MIXER_NAMES), mixer_case())
def test_mixers_satisfy_igm_by_enumeration(name, case):
    q_local, state, seed, scale = case
    mixer = MIXERS[(name, q_local.shape[0])]
    params = mixer.params(seed, scale)
    values = _all_q_tot(mixer, params, q_local, state)
    joint, _ = joint_table(q_local)
    assert values.shape == (len(joint),)
    assert np.all(np.isfinite(values))
    gap = igm_gap(lambda chosen: values, q_local)
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


@SETTINGS
@given(mixer_case())
def test_qplex_is_the_duplex_dueling_form(case):
    q_local, state, seed, scale = case
    n = q_local.shape[0]
    mixer = MIXERS[("qplex", n)]
    params = mixer.params(seed, scale)
    values = _all_q_tot(mixer, params, q_local, state)
    joint, chosen = joint_table(q_local)
    # The greedy joint action scores Σ_i V_i'; with a = A_MAX padding none is chosen.
    v_tot = values[int(np.flatnonzero(np.all(joint == np.argmax(q_local, -1), -1))[0])]
    assert np.all(values <= v_tot + 1e-4 * max(1.0, abs(float(v_tot))))
    # Recompute w, b and λ from the raw parameters (numpy) and check the dueling form
    # Q_tot = Σ V' + Σ λ (Q' − V') with w > 0 and λ > 0.
    p = jax.tree.map(np.asarray, params["params"])
    eps = mixer.module.eps
    states = np.broadcast_to(state, (len(joint), S)).astype(np.float64)
    onehot = np.eye(A_MAX)[joint].reshape(len(joint), -1)

    def hyper(name, x):
        h = np.maximum(x @ p[f"{name}_0"]["kernel"] + p[f"{name}_0"]["bias"], 0.0)
        return h @ p[f"{name}_1"]["kernel"] + p[f"{name}_1"]["bias"]

    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))

    w = np.abs(hyper("hyper_w", states)) + eps  # [J, N]
    b = hyper("hyper_b", states)
    k = mixer.module.heads
    lam = np.sum(
        np.abs(hyper("lambda_key", states)).reshape(-1, k, n)
        * sigmoid(hyper("lambda_query", states)).reshape(-1, k, n)
        * sigmoid(hyper("lambda_action", np.concatenate([states, onehot], -1))).reshape(-1, k, n),
        axis=1,
    ) + eps
    assert np.all(w > 0) and np.all(lam > 0)
    q_max = np.broadcast_to(q_local.max(-1), chosen.shape)
    expected = np.sum(w * q_max + b, -1) + np.sum(lam * w * (chosen - q_max), -1)
    np.testing.assert_allclose(values, expected, rtol=1e-3, atol=1e-3 * max(1.0, np.abs(expected).max()))


def test_qplex_weights_depend_on_the_joint_action():
    # What sets QPLEX apart from QMIX: the same per-agent values mix differently under
    # different joint actions, so it can represent non-monotonic payoffs.
    mixer = MIXERS[("qplex", 2)]
    params = mixer.params(1, 1.0)
    state = np.ones((2, S), np.float32)
    q_all = np.array([[[0.0, -1.0, 0, 0], [0.0, -1.0, 0, 0]]] * 2, np.float32)
    avail = np.ones((2, 2, A_MAX), bool)
    # Both joint actions take one agent's sub-optimal action: values differ through λ.
    out = np.asarray(mixer.mix(params, q_all, np.array([[1, 0], [1, 2]], np.int32), avail, state))
    assert out[0] != out[1]


def test_qplex_requires_the_full_inputs():
    mixer = MIXERS[("qplex", 2)]
    with pytest.raises(ValueError, match="q_max"):
        mixer.apply(mixer.params(0, 1.0), np.zeros((1, 2), np.float32), np.zeros((1, S), np.float32))


def test_make_mixer_by_name():
    assert isinstance(make_mixer("vdn", 3, 8, 8), VDNMixer)
    qmix = make_mixer("qmix", 3, 16, 32)
    assert isinstance(qmix, QMixer)
    assert (qmix.n_agents, qmix.embed_dim, qmix.hypernet_embed) == (3, 16, 32)
    qplex = make_mixer("qplex", 3, 16, 32, heads=2)
    assert isinstance(qplex, QPLEXMixer) and (qplex.n_agents, qplex.heads) == (3, 2)
    with pytest.raises(ValueError, match="unknown mixer"):
        make_mixer("qatten", 3, 8, 8)
