"""FOP (``meigm.learners.fop``): its soft values and targets, its mixer, masks, and Table 1.

Guards the pieces FOP is built from against hand computation — the soft value
``α log Σ exp(Q/α)`` over available actions, the soft TD(λ) target with the agents' mean
entropy bonus, the mixer's value ``Σ λ(Q − V) + Σ V + V(s)`` with the authors' gradient
routing, the actor objective's minimum at the Boltzmann policy — that the attention
weights λ stay positive for any parameters, that unavailable actions are never given
probability or sampled, and, end to end, that FOP reproduces what the ME-IGM paper
reports on Table 1: an accurate ``Q_tot`` whose best joint action (A,A) its local
policies do not pick (~0.2 on A, ~0.4 on B and C).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, random_params
from hypothesis import given, settings
from hypothesis import strategies as st

from meigm import config
from meigm.envs import EnvSpec
from meigm.experiments.run import train_run
from meigm.learners.fop import FOP, FOPMixer, actor_objective, soft_target, soft_value
from meigm.types import Episodes

SETTINGS = settings(max_examples=30, deadline=None, database=None)


# ---------------------------------------------------------------- hand-computed values
def test_soft_value_by_hand_over_available_actions_only():
    # α = 0.5, Q = [1, 2, 5] with the 5 unavailable: V = 0.5 log(e^2 + e^4)
    #   = 2 + 0.5 log(1 + e^-2) = 2 + 0.5 * 0.1269280 = 2.0634640
    v = soft_value(jnp.array([1.0, 2.0, 5.0]), jnp.array([True, True, False]), 0.5)
    np.testing.assert_allclose(v, 2.0634640, rtol=1e-6)
    # α -> 0: the hard maximum over available actions; no available action: 0 (padding).
    q, avail = jnp.array([[1.0, 2.0, 5.0]]), jnp.array([[True, True, False]])
    np.testing.assert_allclose(soft_value(q, avail, 1e-3), [2.0], atol=1e-6)
    assert float(soft_value(q, jnp.zeros_like(avail), 0.5)[0]) == 0.0


def test_soft_target_by_hand():
    """One episode of two steps, terminating after the second; N = 2 agents whose next
    actions have probabilities 0.5 and 0.25, α = 0.5, γ = 0.9."""
    r, term, mask = np.array([[1.0, 2.0]]), np.array([[0, 1]]), np.array([[1, 1]])
    q_next = np.array([[3.0, 100.0]])  # Q̄_tot(s_2, ·) is never used: terminal
    log_pi = np.log(np.array([[[0.5, 0.25], [0.5, 0.5]]]))  # [B, T, N]
    h1 = -0.5 * np.mean(np.log([0.5, 0.25]))  # 0.5 * (0.693147 + 1.386294) / 2 = 0.519860
    # λ = 0: y_0 = r_0 + γ (Q̄_1 + h_1) = 1 + 0.9 * 3.519860 = 4.167874; y_1 = r_1 = 2.
    y = soft_target(r, term, mask, q_next, log_pi, 0.5, 0.9, 0.0)
    np.testing.assert_allclose(y, [[1 + 0.9 * (3 + h1), 2.0]], rtol=1e-6)
    np.testing.assert_allclose(y[0, 0], 4.167874, rtol=1e-6)
    # λ = 0.5: y_0 = 1 + 0.9 (0.5 (3 + h_1) + 0.5 (y_1 + h_1)) = 3.717874
    y = soft_target(r, term, mask, q_next, log_pi, 0.5, 0.9, 0.5)
    np.testing.assert_allclose(y[0, 0], 1 + 0.9 * (0.5 * (3 + h1) + 0.5 * (2 + h1)), rtol=1e-6)
    np.testing.assert_allclose(y[0, 0], 3.717874, rtol=1e-6)


def _mixer_params(mixer: FOPMixer, key_bias, v_bias: float, n: int, a: int, s: int):
    """Every kernel 0: λ_i = Σ_k |key_bias_k| σ(0) σ(0) = Σ|key_bias| / 4, V(s) = v_bias."""
    template = jax.eval_shape(mixer.init, jax.random.PRNGKey(0), jnp.zeros((1, n)),
                              jnp.zeros((1, n)), jnp.zeros((1, s)), jnp.zeros((1, n, a)))
    params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), template)
    params["params"]["head_key"]["bias"] = jnp.asarray(key_bias, jnp.float32)
    params["params"]["v_out"]["bias"] = jnp.array([v_bias], jnp.float32)
    return params


def test_mixer_value_and_gradient_by_hand():
    n, a, s = 2, 3, 4
    mixer = FOPMixer(n_agents=n, heads=4, embed_dim=8)
    params = _mixer_params(mixer, [1.0, -2.0, 3.0, 2.0], 0.7, n, a, s)  # λ = 8 / 4 = 2
    q, v = jnp.array([1.0, 0.0]), jnp.array([2.0634640, 0.5])
    state, onehot = jnp.ones((s,)), jax.nn.one_hot(jnp.array([1, 0]), a)
    np.testing.assert_allclose(mixer.apply(params, state, onehot, method=FOPMixer.lambda_weights),
                               [2.0, 2.0], rtol=1e-6)
    # Q_tot = Σ λ (Q − V) + Σ V + V(s) = 2 (−1.063464 − 0.5) + 2.563464 + 0.7 = 0.136536
    q_tot = mixer.apply(params, q, v, state, onehot)
    np.testing.assert_allclose(q_tot, 2 * (1 - 2.063464 - 0.5) + 2.563464 + 0.7, rtol=1e-5)
    np.testing.assert_allclose(q_tot, 0.136536, atol=1e-5)
    # The authors' routing: Q_i receives gradient with weight 1, V_i none.
    dq, dv = jax.grad(lambda q, v: mixer.apply(params, q, v, state, onehot), argnums=(0, 1))(q, v)
    np.testing.assert_allclose(dq, [1.0, 1.0])
    np.testing.assert_allclose(dv, [0.0, 0.0])


def test_actor_objective_is_minimised_by_the_boltzmann_policy():
    """At π = softmax_avail(Q/α) the objective is −V; any other policy scores higher."""
    q, avail, alpha = jnp.array([1.0, -0.5, 2.0, 9.0]), jnp.array([True, True, True, False]), 0.3
    log_boltzmann = jax.nn.log_softmax(jnp.where(avail, q / alpha, -1e10))
    best = actor_objective(log_boltzmann, q, avail, alpha)
    np.testing.assert_allclose(best, -soft_value(q, avail, alpha), rtol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        other = jax.nn.log_softmax(jnp.where(avail, jnp.asarray(rng.normal(size=4) * 3), -1e10))
        assert actor_objective(other, q, avail, alpha) > best


# ---------------------------------------------------------------- λ > 0
N_MAX, A_MAX, S = 3, 4, 5
LAMBDA_MIXER = FOPMixer(n_agents=N_MAX, heads=4, embed_dim=8)
LAMBDA_TEMPLATE = jax.eval_shape(
    LAMBDA_MIXER.init, jax.random.PRNGKey(0), jnp.zeros((1, N_MAX)), jnp.zeros((1, N_MAX)),
    jnp.zeros((1, S)), jnp.zeros((1, N_MAX, A_MAX)))
_lambda = jax.jit(lambda p, s, onehot: LAMBDA_MIXER.apply(p, s, onehot,
                                                          method=FOPMixer.lambda_weights))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]))
def test_attention_weights_are_positive(seed, scale):
    """For random parameters (scaled far enough to saturate the sigmoids), states and
    joint actions, every λ_i(s, a) > 0 — the condition FOP's IGO argument rests on."""
    rng = np.random.default_rng(seed)
    params = random_params(LAMBDA_TEMPLATE, seed, scale)
    states = rng.normal(size=(16, S)).astype(np.float32) * scale
    actions = rng.integers(0, A_MAX, size=(16, N_MAX))
    lam = np.asarray(_lambda(params, states, jax.nn.one_hot(actions, A_MAX)))
    assert lam.shape == (16, N_MAX)
    assert np.all(np.isfinite(lam)) and np.all(lam > 0)


# ---------------------------------------------------------------- masks
SPEC = EnvSpec(name="test:masks", n_agents=2, n_actions=4, obs_dim=3, state_dim=5, episode_limit=2)
CFG = config.build(None, TINY, alg="fop", env="matrix:table1").resolve(1000)
LEARNER = FOP(CFG, SPEC)
AVAIL = jnp.array([[True, False, True, False], [False, False, False, True]])  # [N, A]


def test_unavailable_actions_get_zero_probability_and_are_never_sampled():
    logits = jnp.array([[0.0, 50.0, 1.0, 50.0], [3.0, 9.0, -2.0, -5.0]])  # masked ones largest
    probs = np.exp(LEARNER.policy_log_probs({}, logits, jnp.zeros((5,)), AVAIL))
    assert np.all(probs[~np.asarray(AVAIL)] == 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    params = LEARNER.init(jax.random.PRNGKey(0)).params
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    for t_env in (0, 25_000, 10**7):  # ε = 1 (uniform), midway, 0.05
        actions = jax.vmap(lambda k, t=t_env: LEARNER.explore(
            params, logits[None], jnp.zeros((1, 5)), AVAIL[None], k, jnp.asarray(t))[0])(keys)
        actions = np.asarray(actions)[:, 0]  # [draws, N]
        assert np.all(np.asarray(AVAIL)[np.arange(2), actions])
    # ε = 1: uniform over agent 0's two available actions.
    actions = np.asarray(jax.vmap(lambda k: LEARNER.explore(
        params, logits[None], jnp.zeros((1, 5)), AVAIL[None], k, jnp.asarray(0))[0])(keys))[:, 0, 0]
    assert abs(np.mean(actions == 0) - 0.5) < 0.05


def test_loss_is_finite_with_masked_actions_and_padding():
    """A batch with unavailable actions, a padded step and a padded slot where no action
    is available: every metric and gradient stays finite."""
    b, t, n, a = 3, SPEC.episode_limit, SPEC.n_agents, SPEC.n_actions
    rng = np.random.default_rng(0)
    avail = np.broadcast_to(np.asarray(AVAIL), (b, t + 1, n, a)).copy()
    avail[0, 2] = False  # no action available in the last slot of episode 0
    ep = Episodes(
        obs=jnp.asarray(rng.normal(size=(b, t + 1, n, SPEC.obs_dim)), jnp.float32),
        state=jnp.asarray(rng.normal(size=(b, t + 1, SPEC.state_dim)), jnp.float32),
        avail=jnp.asarray(avail),
        actions=jnp.broadcast_to(jnp.array([0, 3]), (b, t, n)).astype(jnp.int32),
        reward=jnp.asarray(rng.normal(size=(b, t)), jnp.float32),
        terminated=jnp.array([[False, True], [True, False], [False, False]]),
        mask=jnp.array([[True, True], [True, False], [True, True]]),
    )
    ls = LEARNER.init(jax.random.PRNGKey(0))
    grads, metrics = jax.grad(LEARNER.loss, has_aux=True)(
        ls.params, ls.target_params, ep, jax.random.split(jax.random.PRNGKey(2), b))
    assert all(np.isfinite(np.asarray(v)) for v in metrics.values()), metrics
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert 0.0 <= float(metrics["entropy"]) <= math.log(2) + 1e-6  # at most 2 actions available
    assert float(metrics["alpha"]) == CFG.fop_alpha_start
    new, _ = LEARNER.update(ls, ep, jax.random.PRNGKey(2))
    assert float(new.params["alpha"]) == CFG.fop_alpha_start  # never trained, only scheduled
    scheduled = LEARNER.schedule(new, jnp.asarray(CFG.fop_alpha_anneal_steps // 2))
    np.testing.assert_allclose(scheduled.params["alpha"],
                               (CFG.fop_alpha_start + CFG.fop_alpha_finish) / 2, rtol=1e-6)


# ---------------------------------------------------------------- Table 1, end to end
@pytest.fixture(scope="module")
def table1_run():
    """3 seeds, tiny networks, 20k env steps (~10 s): long enough for FOP's attention
    weights to grow and Q_tot to fit the payoff; ε is still ~0.6, α ~0.4."""
    cfg = config.build(None, [*TINY, "t_max=20000", "test_interval=10000"],
                       alg="fop", env="matrix:table1", seeds=3)
    return train_run(cfg, progress=False)


def test_table1_metrics_are_finite_and_logged(table1_run):
    for rec in table1_run["history"]:
        for key in ("train/loss_q", "train/loss_pi", "train/alpha", "train/entropy",
                    "train/igm_gap", "test/return"):
            assert np.isfinite(rec[key]), (key, rec)
        assert 0.0 <= rec["train/entropy"] <= math.log(3) + 1e-6


def test_table1_fop_values_the_optimum_but_its_policies_miss_it(table1_run):
    """The paper's Table 1 for FOP: Q_tot is close to the payoff and peaks at (A,A), yet
    each local policy puts less on A than on B or C, so the greedy (decentralised)
    joint action is not (A,A) — misalignment, in every seed."""
    view = table1_run["first_step"]
    payoff = np.array([[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]])
    assert view["misaligned_seeds"] == 3 and view["fraction_optimal"] == 0.0
    for e in view["per_seed"]:
        q_tot, policy = np.asarray(e["q_tot"]), np.asarray(e["policy"])
        assert e["q_tot_argmax"] == [0, 0], q_tot
        assert np.mean(np.abs(q_tot - payoff)) < 2.0, q_tot
        assert np.all(policy[:, 0] < policy[:, 1:].max(axis=1)), policy
        assert e["greedy"] == e["policy_mode"] != [0, 0]
        assert e["igm_gap"] > 1.0
