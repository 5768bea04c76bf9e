"""Order-preserving transformation (``meigm.networks.opt``, spec Eq. 2).

Guards the property the whole method rests on: ``f_i(q; s)`` keeps the order of each
agent's Q-values, for any state and any hyper-network parameters (random seeds, and
parameters scaled up or sign-flipped so the hyper-networks output large and negative
values), so the argmax of the policy logits is the argmax of ``Q_i`` (no misalignment).
The same order check is shown to catch the unconstrained ``MLPTransform`` (Table 4), so
it is not vacuous, and the ``IdentityTransform`` (+Entropy ablation) must return ``q``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_params
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meigm.networks.opt import OPT, IdentityTransform, MLPTransform, make_transform

SETTINGS = settings(max_examples=40, deadline=None, database=None)

B, N, A, S = 3, 3, 5, 4
HIDDEN, EMBED = 8, 8


class Scaled:
    """A transform with random parameters: jitted ``apply`` compiled once per module.

    Parameters come from numpy (init-like scale: kernels N(0, 1/fan_in), biases N(0, 0.5²)),
    times a scale; drawing them outside jit keeps examples fast (no PRNG compile per test).
    """

    def __init__(self, module):
        self.template = jax.eval_shape(
            module.init, jax.random.PRNGKey(0), jnp.zeros((B, N, A)), jnp.zeros((B, S))
        )
        self.apply = jax.jit(module.apply)

    def params(self, seed: int, scale: float):
        return random_params(self.template, seed, scale)

    def __call__(self, seed: int, scale: float, q, state) -> np.ndarray:
        return np.asarray(self.apply(self.params(seed, scale), q, state))


_OPT = {
    layers: Scaled(OPT(n_agents=N, layers=layers, hidden=HIDDEN, hypernet_embed=EMBED))
    for layers in (1, 2)
}
_MLP = Scaled(MLPTransform(n_agents=N, hidden=16))


def _pairwise(x: np.ndarray):
    """[..., A] -> ([..., A, A] x[a] > x[a'], [..., A, A] x[a] == x[a'])."""
    return x[..., :, None] > x[..., None, :], x[..., :, None] == x[..., None, :]


def order_violations(q: np.ndarray, f: np.ndarray, strict: bool = True) -> int:
    """Pairs (b, i, a, a') where f breaks q's order.

    strict: q[a] > q[a'] must give f[a] > f[a'], and q[a] == q[a'] must give equal f.
    weak: q[a] > q[a'] must give f[a] >= f[a'], and equal q equal f.
    """
    q_gt, q_eq = _pairwise(q)
    f_gt, f_eq = _pairwise(f)
    kept = f_gt if strict else (f_gt | f_eq)
    return int(np.sum(q_gt & ~kept) + np.sum(q_eq & ~f_eq))


def _q(limit: int):
    """Q-values on a 0.25 grid in [-limit, limit] (ties happen; distinct values are resolvable)."""
    return arrays(np.int32, (B, N, A), elements=st.integers(-4 * limit, 4 * limit)).map(
        lambda x: (x * 0.25).astype(np.float32)
    )


def _state(limit: float):
    return arrays(np.float32, (B, S), elements=st.floats(-limit, limit, width=32))


def _scale(lo: float, hi: float):
    """Magnitude in [lo, hi], either sign (a negative scale flips every hyper output)."""
    return st.tuples(st.floats(lo, hi), st.sampled_from([-1.0, 1.0])).map(lambda t: t[0] * t[1])


SEEDS = st.integers(0, 2**31 - 1)


@SETTINGS
@given(st.sampled_from([1, 2]), SEEDS, _scale(0.1, 1.5), _q(5), _state(2.0))
def test_opt_preserves_order_strictly(layers, seed, scale, q, state):
    f = _OPT[layers](seed, scale, q, state)
    assert f.shape == (B, N, A)
    assert np.all(np.isfinite(f))
    assert order_violations(q, f, strict=True) == 0
    np.testing.assert_array_equal(np.argmax(f, -1), np.argmax(q, -1))


@SETTINGS
@given(st.sampled_from([1, 2]), SEEDS, _scale(0.1, 30.0), _q(20), _state(3.0))
def test_opt_never_reverses_order_under_large_hyper_outputs(layers, seed, scale, q, state):
    # Large scales push hyper outputs to ~1e3 and beyond: the order must never flip and
    # equal Q must still give equal logits. (Strictness under saturation: see the xfail.)
    f = _OPT[layers](seed, scale, q, state)
    assert np.all(np.isfinite(f))
    assert order_violations(q, f, strict=False) == 0
    # The best-Q action always has the (possibly shared) best logit.
    at_best_q = np.take_along_axis(f, np.argmax(q, -1)[..., None], -1)[..., 0]
    np.testing.assert_array_equal(at_best_q, f.max(-1))


@SETTINGS
@given(st.sampled_from([1, 2]), SEEDS, _scale(0.1, 1.5), _q(5), _state(2.0),
       st.permutations(range(A)))
def test_opt_acts_on_each_action_separately(layers, seed, scale, q, state, perm):
    # f_i(q)[a] depends on q[a] only: permuting the actions permutes the logits.
    perm = np.array(perm)
    f = _OPT[layers](seed, scale, q, state)
    f_perm = _OPT[layers](seed, scale, q[..., perm], state)
    np.testing.assert_allclose(f_perm, f[..., perm], rtol=1e-6, atol=1e-6)


def test_opt_depends_on_state_and_agent():
    # Guards against a degenerate "OPT" (e.g. identity): logits differ across states and
    # agents for the same Q-values.
    q = np.tile(np.linspace(-1.0, 1.0, A, dtype=np.float32), (B, N, 1))
    state = np.array([[0.5, -1.0, 2.0, 0.0], [-1.5, 0.3, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]],
                     np.float32)
    for layers in (1, 2):
        f = _OPT[layers](0, 1.0, q, state)
        assert not np.allclose(f[0], f[1])
        assert not np.allclose(f[0, 0], f[0, 1])
        assert not np.allclose(f, q)


def test_two_layer_opt_keeps_strict_order_when_hidden_units_saturate():
    # Ordinary hyper-network outputs: w1 = w2 = |1| + min_weight, b1 = -10, b2 = 0 for
    # every state (kernels 0). For Q in [-20, -12] every pre-activation w1*q + b1 is below
    # -22, where float32 ELU(x) = exp(x) - 1 rounds to exactly -1: without the OPT's
    # min_weight * q skip term all five logits were equal (-8 * 1.001), the policy uniform
    # and its argmax action 0, not the best (4). This guards that fix.
    # Random parameters hit it too, e.g. _OPT[2](35, 1.0, q, state) with this q and
    # state = default_rng(35).uniform(-2, 2, (B, S)).round(2): batch 1, agent 2 ties.
    params = jax.tree.map(np.zeros_like, _OPT[2].params(0, 1.0))
    for name, value in (("hyper_w1_1", 1.0), ("hyper_b1_1", -10.0), ("hyper_w2_1", 1.0)):
        params["params"][name]["bias"] = np.full_like(params["params"][name]["bias"], value)
    q = np.tile(np.array([-20.0, -18.0, -16.0, -14.0, -12.0], np.float32), (B, N, 1))
    state = np.ones((B, S), np.float32)
    f = np.asarray(_OPT[2].apply(params, q, state))
    # Sanity of the construction: the closed form of Eq. (2) with these weights, in float64.
    w = 1.0 + 1e-3
    exact = HIDDEN * w * np.expm1(w * q.astype(np.float64) - 10.0) + 1e-3 * q
    assert np.all(np.diff(exact, axis=-1) > 0)
    np.testing.assert_allclose(f, exact, rtol=1e-6)
    assert order_violations(q, f, strict=True) == 0
    np.testing.assert_array_equal(np.argmax(f, -1), np.argmax(q, -1))


def test_mlp_transform_does_not_preserve_order():
    # The same checks must fail for an unconstrained MLP (Table 4 ablation).
    rng = np.random.default_rng(0)
    q = (rng.integers(-20, 21, size=(B, N, A)) * 0.25).astype(np.float32)
    state = rng.uniform(-2, 2, size=(B, S)).astype(np.float32)
    f = _MLP(0, 1.0, q, state)
    assert f.shape == (B, N, A)
    assert order_violations(q, f, strict=False) > 0
    assert np.any(np.argmax(f, -1) != np.argmax(q, -1))


def test_identity_transform_returns_q():
    module = IdentityTransform()
    q = jnp.asarray(np.random.default_rng(1).normal(size=(B, N, A)), jnp.float32)
    state = jnp.ones((B, S))
    params = module.init(jax.random.PRNGKey(0), q, state)
    assert jax.tree.leaves(params) == []
    np.testing.assert_array_equal(np.asarray(module.apply(params, q, state)), np.asarray(q))


def test_make_transform_by_name():
    assert isinstance(make_transform("opt", 2, 1, 8, 8, 1e-3), OPT)
    opt = make_transform("opt", 2, 2, 8, 16, 0.01)
    assert (opt.n_agents, opt.layers, opt.hidden, opt.hypernet_embed, opt.min_weight) == (
        2, 2, 8, 16, 0.01)
    assert isinstance(make_transform("none", 2, 2, 8, 8, 1e-3), IdentityTransform)
    assert isinstance(make_transform("mlp", 2, 2, 8, 8, 1e-3), MLPTransform)
    with pytest.raises(ValueError, match="unknown transform"):
        make_transform("relu", 2, 2, 8, 8, 1e-3)


def test_default_two_layer_opt_ties_at_large_q_and_the_policy_mode_resolves_it():
    """Issue 16's reproduction: the default two-layer OPT (hidden 32, embed 64, floor 1e-3)
    at PRNGKey(14) gives Q = [-100, -99.998] equal float32 logits (ELU saturated, and the
    1e-3·q skip term is below the logits' spacing). The order is kept in exact arithmetic
    (float64 below) and the policy's mode — the action the IGM gap and the Table 1 view
    use — is still Q's argmax."""
    from meigm.ops import masked_argmax, policy_mode

    m = make_transform("opt", 1, 2, 32, 64, 1e-3)
    s = jnp.asarray(np.random.default_rng(14).normal(size=(1, 6)), jnp.float32)
    q = jnp.array([[[-100.0, -99.998]]], jnp.float32)
    params = m.init(jax.random.PRNGKey(14), q, s)
    f = np.asarray(m.apply(params, q, s))
    assert f[0, 0, 0] == f[0, 0, 1]  # float32 cannot tell them apart ...
    avail = jnp.ones(q.shape, bool)
    assert int(masked_argmax(f, avail)[0, 0]) == 0  # ... so a first-index argmax is wrong
    assert int(policy_mode(f, q, avail)[0, 0]) == 1
    with jax.enable_x64(True):
        f64 = np.asarray(m.apply(jax.tree.map(lambda x: x.astype(np.float64), params),
                                 q.astype(np.float64), s.astype(np.float64)))
    assert f64[0, 0, 1] > f64[0, 0, 0]


def _near_ties(limit: float):
    """Q-values [B, N, A] around a centre of either sign, 1e-2 to ``limit`` in magnitude, a
    few float32 spacings (or a few thousand) apart: near-ties and exact ties at large |Q|.
    (Not nearer 0: float64, the stand-in for exact arithmetic, cannot resolve a spacing
    of a tiny q next to the O(1) biases.)"""
    magnitude = st.floats(0.01, limit).map(np.float32)
    centre = arrays(np.float32, (B, N, 1), elements=st.tuples(
        magnitude, st.sampled_from([-1.0, 1.0])).map(lambda t: t[0] * t[1]))
    steps = arrays(np.int64, (B, N, A), elements=st.integers(0, 6))
    unit = st.sampled_from([1.0, 1e3])
    return st.tuples(centre, steps, unit).map(
        lambda t: (t[0] + t[1] * t[2] * np.spacing(np.abs(t[0]))).astype(np.float32))


@SETTINGS
@given(st.sampled_from([1, 2]), SEEDS, _scale(0.1, 30.0), _near_ties(1e4), _state(3.0),
       arrays(np.bool_, (B, N, A)))
def test_opt_order_at_large_q_exact_in_float64_and_to_rounding_in_float32(
        layers, seed, scale, q, state, avail):
    """The guarantee meigm documents (``meigm.ops.policy_mode``): for |Q| ≤ 1e4, near-ties
    and scaled hyper-networks, (1) Eq. (2) is increasing in float64 (strictly wherever
    float64 can resolve the difference), (2) in float32 a higher Q never gets a logit
    more than MODE_ULPS spacings below a lower Q's, so (3) the policy's mode is the
    argmax of Q over the available actions — both forms."""
    from meigm.ops import masked_argmax, policy_mode
    from meigm.ops.policy import MODE_ULPS

    avail[..., 0] = True
    params = _OPT[layers].params(seed, scale)
    module = OPT(n_agents=N, layers=layers, hidden=HIDDEN, hypernet_embed=EMBED)
    with jax.enable_x64(True):
        f64 = np.asarray(module.apply(jax.tree.map(lambda x: np.asarray(x, np.float64), params),
                                      q.astype(np.float64), state.astype(np.float64)))
    q_gt, q_eq = _pairwise(q)
    f64_gt, f64_eq = _pairwise(f64)
    # no reversal and equal Q equal logits; strictness where float64 can resolve it (a
    # float32 spacing of q times a 1e-3 weight can be below float64's spacing of a
    # logit of 1e4, which scaled hyper-networks reach)
    assert not np.any(q_gt & ~(f64_gt | f64_eq)) and not np.any(q_eq & ~f64_eq)
    resolvable = np.abs(q[..., :, None] - q[..., None, :]) * 1e-3 > 1e-9 * (
        1.0 + np.abs(f64).max(-1)[..., None, None])
    assert not np.any(q_gt & resolvable & ~f64_gt)

    f = np.asarray(_OPT[layers].apply(params, q, state))
    assert np.all(np.isfinite(f))
    tol = MODE_ULPS * np.finfo(np.float32).eps * np.maximum(np.abs(f).max(-1), 1.0)[..., None, None]
    assert not np.any(q_gt & (f[..., :, None] < f[..., None, :] - tol))
    np.testing.assert_array_equal(np.asarray(policy_mode(f, q, avail)),
                                  np.asarray(masked_argmax(q, avail)))
