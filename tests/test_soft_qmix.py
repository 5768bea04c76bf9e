"""``soft_qmix``: the algorithm of the authors' released Soft-QMIX code.

Guards each piece against values computed by hand on a tiny batch — the additive critic
over transformed utilities ``Σ_i g_i(Q_i)``, the OPT residual, the ½-re-weighted TD loss
and the released TD(λ) target with its entropy bonus past termination — and the
properties the variant must keep: every policy's order is ``Q_i``'s (IGM between the
executed argmax and the policies), ``Q_tot`` is additive and increasing in every ``Q_i``,
α stays at the authors' 0.03. End to end: a short run on ``matrix:released``, and the
export of its team.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, random_params

from meigm import config
from meigm.envs import make_env
from meigm.errors import ConfigError
from meigm.experiments.diagnostics import joint_actions
from meigm.learners import make_learner
from meigm.learners.common import take
from meigm.learners.soft_qmix import SoftQMIX, UtilityTransform
from meigm.ops.targets import released_lambda_returns, soft_lambda_returns
from meigm.rollout.collect import first_step
from meigm.types import Episodes

GAMMA, LAM, ALPHA = 0.99, 0.4, 0.03
E = math.exp(-1.0)


def _learner(*extra: str, env: str = "matrix:custom", payoff="[[1,0],[0,2]]") -> SoftQMIX:
    overrides = [*TINY, f"env_args.payoff={payoff}", *extra] if env == "matrix:custom" else \
        [*TINY, *extra]
    cfg = config.build(None, overrides, alg="soft_qmix", env=env).resolve(1000)
    e = make_env(cfg.env, cfg.env_args)
    learner = make_learner(cfg, e.spec)
    assert isinstance(learner, SoftQMIX)
    return learner


# ---------------------------------------------------------------- config
def test_alpha_defaults_to_the_authors_fixed_value_over_the_scenarios():
    for env in ("matrix:released", "smax:3m"):  # SMAX's own default for ME-IGM is 0.01
        cfg = config.build(None, [], alg="soft_qmix", env=env).resolve(1000, dict(
            make_env(env).spec.config_defaults))
        assert cfg.alpha_init == 0.03 and cfg.mixer == "sum_g"
    explicit = config.build(None, ["alpha_init=0.1"], alg="soft_qmix").resolve(1000)
    assert explicit.alpha_init == 0.1
    assert config.build(None, [], alg="me_qmix").resolve(1000).alpha_init == 1.0  # unchanged
    with pytest.raises(ConfigError, match="mixer"):
        config.build(None, ["mixer=qmix"], alg="soft_qmix")


def test_released_payoff_is_registered_beside_table1():
    released = make_env("matrix:released")
    np.testing.assert_array_equal(released.payoff, np.float32([[12, -0.1, -0.1], [-0.1, 0, 0],
                                                               [-0.1, 0, 0]]))
    assert make_env("matrix:table1").payoff[0, 0] == 8.0


# ---------------------------------------------------------------- target
def _their_recursion(r, d, mask, q_next, h_next, gamma, lam):
    """The released recursion written out for an episode that fills its buffer (no
    padding after the slot following its last step): G after the last slot is Q̄ there
    when nothing terminated, else 0, and the λ-branch is never cut by termination."""
    T = len(r)
    g_next = q_next[-1] * (1.0 - max(d))
    out = np.zeros(T)
    for t in reversed(range(T)):
        out[t] = gamma * lam * (g_next + h_next[t]) + mask[t] * (
            r[t] + (1 - lam) * gamma * (q_next[t] + h_next[t]) * (1 - d[t]))
        g_next = out[t]
    return out


def test_released_target_by_hand():
    # 3 steps, terminated at the last; q_next[t] = Q̄_{t+1}, h_next[t] = h_{t+1}
    r, d, m = [1.0, 0.5, 2.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]
    q_next, h_next = [3.0, 4.0, 100.0], [0.1, 0.2, 0.3]
    g2 = 2.0 + 0.9 * 0.5 * 0.3  # r + γλ h after termination: 2.135
    g1 = 0.5 + 0.9 * (0.5 * (4.0 + 0.2) + 0.5 * (g2 + 0.2))  # 3.44075
    g0 = 1.0 + 0.9 * (0.5 * (3.0 + 0.1) + 0.5 * (g1 + 0.1))  # 3.9883375
    args = [jnp.asarray(x, jnp.float32) for x in (r, d, m, q_next, h_next)]
    got = np.asarray(released_lambda_returns(*args, 0.9, 0.5))
    np.testing.assert_allclose(got, [g0, g1, g2], rtol=1e-6)
    np.testing.assert_allclose(got, _their_recursion(r, d, m, q_next, h_next, 0.9, 0.5), rtol=1e-6)
    # the spec's target differs only by the bonus at the terminal step, carried back by λ
    spec = np.asarray(soft_lambda_returns(*args, 0.9, 0.5))
    np.testing.assert_allclose(got - spec, [0.45**3 * 0.3, 0.45**2 * 0.3, 0.45 * 0.3], rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_released_target_reduces_to_the_spec_without_termination_or_bonus(seed):
    rng = np.random.default_rng(seed)
    T = 5
    r, q, h = (jnp.asarray(rng.normal(size=T), jnp.float32) for _ in range(3))
    mask = jnp.asarray([1, 1, 1, 1, 0], jnp.float32)
    truncated = jnp.zeros(T)
    terminated = jnp.asarray([0, 0, 0, 1, 0], jnp.float32)
    np.testing.assert_allclose(released_lambda_returns(r, truncated, mask, q, h, GAMMA, LAM),
                               soft_lambda_returns(r, truncated, mask, q, h, GAMMA, LAM), rtol=1e-6)
    zero = jnp.zeros(T)
    np.testing.assert_allclose(released_lambda_returns(r, terminated, mask, q, zero, GAMMA, LAM),
                               soft_lambda_returns(r, terminated, mask, q, zero, GAMMA, LAM), rtol=1e-6)
    full = jnp.ones(T)  # and the written-out recursion, on a terminated episode filling its buffer
    got = released_lambda_returns(r, terminated.at[-1].set(1).at[3].set(0), full, q, h, GAMMA, LAM)
    ref = _their_recursion(*(np.asarray(x, np.float64) for x in
                             (r, terminated.at[-1].set(1).at[3].set(0), full, q, h)), GAMMA, LAM)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the loss on a tiny batch
def _dense(params, name, bias):
    """Make a hyper-network's output layer state-independent: kernel 0, bias ``bias``."""
    layer = params[name]
    return {**params, name: {"kernel": jnp.zeros_like(layer["kernel"]),
                             "bias": jnp.full_like(layer["bias"], bias)}}


def _hand_params(learner: SoftQMIX, q_values):
    """Q_i = ``q_values`` for every agent and step; g(q) = ELU(q) + q (one hidden unit,
    w1 = w2 = 1, b1 = b2 = 0); f(x) = 0.5 for every x (weight 0): a uniform policy."""
    params = learner.init(jax.random.PRNGKey(0)).params
    agent = _dense(params["agent"]["params"], "fc2", 0.0)
    agent["fc2"]["bias"] = jnp.asarray(q_values, jnp.float32)
    g = params["mixer"]["params"]["g"]
    for name, b in (("hyper_w1_1", 1.0), ("hyper_b1", 0.0), ("hyper_w2_1", 1.0), ("hyper_b2_1", 0.0)):
        g = _dense(g, name, b)
    f = params["transform"]["params"]
    f = _dense(_dense(f, "hyper_w1_1", 0.0), "hyper_b1_1", 0.5)
    return {"agent": {"params": agent}, "mixer": {"params": {"g": g}},
            "transform": {"params": f}}


def _tiny_batch() -> Episodes:
    """Two one-step episodes of a 2-agent, 2-action game: joint actions (0,1) and (1,1)."""
    b, n, a = 2, 2, 2
    return Episodes(obs=jnp.zeros((b, 2, n, 2)), state=jnp.zeros((b, 2, 2)),
                    avail=jnp.ones((b, 2, n, a), bool),
                    actions=jnp.asarray([[[0, 1]], [[1, 1]]], jnp.int32),
                    reward=jnp.asarray([[0.0], [2.0]]), terminated=jnp.ones((b, 1), bool),
                    mask=jnp.ones((b, 1), bool))


def test_critic_opt_weighted_td_loss_and_target_by_hand():
    learner = _learner("mixing_embed=2", "opt_min_weight=0")  # g: one hidden unit; f: weight 0
    assert learner.alpha == ALPHA
    params = _hand_params(learner, [1.0, -1.0])
    ep = _tiny_batch()
    loss, m = jax.jit(learner.loss)(params, params, ep, jax.random.split(jax.random.PRNGKey(1), 2))

    g = {0: 1.0 + 1.0, 1: (E - 1.0) - 1.0}  # g(Q(a)) = ELU(q) + q, Q = [1, -1]
    q_tot = np.array([g[0] + g[1], g[1] + g[1]])  # Σ_i g_i(Q_i(a_i)): [e⁻¹, 2e⁻¹ − 4]
    bonus = GAMMA * LAM * ALPHA * 2 * math.log(2)  # γλ h after termination, uniform π
    y = np.array([0.0, 2.0]) + bonus
    td = q_tot - y  # [0.351, -5.280]
    residual = q_tot - 2 * 0.5  # Σ_i f_i = 1
    assert residual[0] <= 0 and td[0] >= 0  # the TD step would widen the residual: weight ½
    assert residual[1] <= 0 and td[1] < 0  # it would shrink it: weight 1
    w = np.array([0.5, 1.0])
    np.testing.assert_allclose(m["q_tot"], q_tot.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["target"], y.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["loss_q"], np.sum(w * 0.5 * td**2) / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(m["loss_td"], np.mean(0.5 * td**2), rtol=1e-5)
    np.testing.assert_allclose(m["loss_opt"], np.mean(0.5 * residual**2), rtol=1e-5)
    np.testing.assert_allclose(loss, m["loss_q"] + m["loss_opt"], rtol=1e-6)
    assert float(m["td_downweighted"]) == 0.5 and float(m["alpha"]) == pytest.approx(ALPHA)
    np.testing.assert_allclose(m["entropy"], math.log(2), rtol=1e-5)

    # the critic by itself, through the mixer signature every tool uses
    q_taken = jnp.asarray([[1.0, -1.0], [-1.0, -1.0]])
    np.testing.assert_allclose(learner.mixer.apply(params["mixer"], q_taken, jnp.zeros((2, 2))),
                               q_tot, rtol=1e-6)

    # each loss trains only its own networks: f's bias b_i gets −mean(residual) from
    # L_OPT (∂/∂b_i of ½(Q_tot − Σ_j b_j)²), and nothing from the TD loss
    grads = jax.grad(lambda p: learner.loss(p, params, ep, jax.random.split(
        jax.random.PRNGKey(1), 2))[0])(params)
    np.testing.assert_allclose(grads["transform"]["params"]["hyper_b1_1"]["bias"],
                               [-residual.mean()] * 2, rtol=1e-5)
    only_td = jax.grad(lambda p: learner.loss(p, params, ep, jax.random.split(
        jax.random.PRNGKey(1), 2))[1]["loss_q"])(params)
    assert not np.any(np.asarray(only_td["transform"]["params"]["hyper_b1_1"]["bias"]))
    # ∂L_wtd/∂Q(a) through g'(q) = ELU'(q) + 1: Q(0) is taken once, in episode 0
    g_prime0 = 2.0
    np.testing.assert_allclose(only_td["agent"]["params"]["fc2"]["bias"][0],
                               0.5 * td[0] * g_prime0 / w.sum(), rtol=1e-5)


# ---------------------------------------------------------------- properties
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_policy_order_is_q_order_and_q_tot_is_additive(seed, scale):
    """IGM holds for the released variant: each π_i orders actions as Q_i does, so the
    policies' mode is the executed argmax, and that is the argmax of the enumerated
    Q_tot, which is Σ_i g_i(Q_i(a_i)) exactly."""
    learner = _learner(env="matrix:climbing")  # 2 agents, 3 actions
    n, a, s = 2, 3, learner.spec.state_dim
    template = jax.eval_shape(learner.init, jax.random.PRNGKey(0)).params
    params = random_params(template, seed, scale)
    rng = np.random.default_rng(100 + seed)
    q = jnp.asarray(rng.normal(size=(n, a)) * 10 * scale, jnp.float32)
    state = jnp.asarray(rng.normal(size=(s,)), jnp.float32)
    avail = jnp.ones((n, a), bool)

    scores = np.asarray(learner.policy_scores(params, q, state))
    probs = np.exp(np.asarray(learner.policy_log_probs(params, q, state, avail)))
    for i in range(n):
        order = np.argsort(np.asarray(q[i]))
        assert np.all(np.diff(scores[i][order]) > 0), (scores[i], q[i])
        assert np.all(np.diff(probs[i][order]) >= 0)

    joints = joint_actions(n, a)  # [A^N, N]
    q_tot = learner.mixer.apply(params["mixer"], take(jnp.broadcast_to(q, (len(joints), n, a)),
                                                      joints), jnp.broadcast_to(state, (len(joints), s)))
    u = np.asarray(learner.utilities(params, q, state))  # g_i(Q_i(·)) [N, A]
    additive = u[0][:, None] + u[1][None, :]
    np.testing.assert_allclose(np.asarray(q_tot).reshape(a, a), additive, rtol=1e-5, atol=1e-4)
    greedy = np.argmax(np.asarray(q), axis=-1)
    assert np.unravel_index(int(np.argmax(q_tot)), (a, a)) == tuple(greedy)


@pytest.mark.parametrize("seed", range(3))
def test_utility_transform_has_slope_at_least_one(seed):
    g = UtilityTransform(n_agents=2, hidden=4, hypernet_embed=8)
    state = jnp.ones((3,))
    template = jax.eval_shape(g.init, jax.random.PRNGKey(0), jnp.zeros((2, 1)), state)
    params = random_params(template, seed, 3.0)
    q = jnp.linspace(-50.0, 50.0, 41)

    def per_value(x):
        return g.apply(params, jnp.full((2, 1), x), state)[:, 0]  # [N]

    slopes = jax.vmap(jax.jacfwd(per_value))(q)  # [41, N]
    assert np.all(np.asarray(slopes) >= 1.0 - 1e-5)


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def released_run(tmp_path_factory):
    from meigm.experiments.run import train_run

    out = tmp_path_factory.mktemp("runs") / "soft_qmix"
    cfg = config.build(None, [*TINY, "t_max=400", "test_interval=200"], alg="soft_qmix",
                       env="matrix:released", seeds=2)
    return train_run(cfg, out, progress=False, echo=lambda _: None), out


def test_trains_on_the_released_matrix_game(released_run):
    results, _ = released_run
    history = results["history"]
    assert history
    for rec in history:
        assert rec["train/alpha"] == pytest.approx(ALPHA)  # never learned
        assert rec["train/igm_gap"] == 0.0
        for key in ("train/loss_q", "train/loss_opt", "train/q_tot", "test/return"):
            assert np.isfinite(rec[key]), key
    view = results["first_step"]
    assert view["optimum"] == [0, 0] and view["misaligned_seeds"] == 0
    for entry in view["per_seed"]:
        np.testing.assert_allclose(np.sum(entry["policy"], axis=-1), 1.0, atol=1e-3)


def test_export_round_trip(released_run, tmp_path):
    """The exported team acts like meigm's greedy execution: argmax of Q_i."""
    from meigm import numpy_policy
    from meigm.experiments.export import export_run
    from meigm.networks.agent import agent_inputs

    results, run_dir = released_run
    out = tmp_path / "team.npz"
    export_run(run_dir, out, seed_index=1)
    policy = numpy_policy.Policy.load(out)
    env = make_env("matrix:released")
    obs = np.asarray(first_step(env, jax.random.PRNGKey(0)).obs)  # [N, O]
    avail = np.ones((2, 3), bool)
    params = jax.tree.map(lambda x: x[1], results["final_params"])
    learner = _learner(env="matrix:released")
    _, q = learner.agent.apply(params["agent"], jnp.zeros((2, learner.hidden_dim)),
                               agent_inputs(jnp.asarray(obs), jnp.zeros((2, 3))))
    np.testing.assert_array_equal(policy.act(obs, avail), np.argmax(np.asarray(q), axis=-1))
