"""HASAC (``meigm.learners.hasac``): its target, temperatures, sequential actor update,
masks, per-agent export, and end to end on Table 1 with an exact resume.

The sequential update is checked against a plain Python loop written from the HASAC
scheme (agent after agent, each against the joint action in which the agents already
updated in this pass play their *new* policies), and against the simultaneous variant it
must differ from; a different order gives a different update in which the first agent's
step is the same.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TINY, metrics_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from meigm import config, numpy_policy, ops
from meigm.envs import EnvSpec
from meigm.experiments import checkpoint as ckpt
from meigm.experiments.export import export_run
from meigm.experiments.run import train_run
from meigm.learners.common import active_agents, last_action_onehot
from meigm.learners.hasac import (
    HASAC,
    gumbel_per_step,
    joint_temperature_loss,
    per_agent_rnn,
    soft_target,
    straight_through_sample,
    temperature_loss,
)
from meigm.networks.agent import agent_inputs
from meigm.ops import masked_mean
from meigm.types import Episodes

SETTINGS = settings(max_examples=25, deadline=None, database=None)
N, A, T, B = 3, 4, 3, 5
SPEC = EnvSpec(name="test:hasac", n_agents=N, n_actions=A, obs_dim=6, state_dim=7,
               episode_limit=T)
BASE = ["hidden_dim=8", "critic_hidden=16", "alpha_init=0.5"]


def make_cfg(*extra: str) -> config.Config:
    return config.build(None, [*BASE, *extra], alg="hasac", env="matrix:table1").resolve(1000)


CFG = make_cfg()


def batch(seed: int = 0, dead: int | None = None) -> Episodes:
    """Random episodes; agent 1 cannot use action 3; ``dead``: an agent that can only no-op
    (action 0) everywhere; episode 0 is padded after its second step."""
    rng = np.random.default_rng(seed)
    avail = np.ones((B, T + 1, N, A), bool)
    avail[:, :, 1, 3] = False
    if dead is not None:
        avail[:, :, dead] = False
        avail[:, :, dead, 0] = True
    mask = np.ones((B, T), bool)
    mask[0, 2:] = False
    actions = rng.integers(0, A, size=(B, T, N))
    actions = np.where(avail[:, :-1][np.arange(B)[:, None, None], np.arange(T)[None, :, None],
                                     np.arange(N)[None, None, :], actions], actions, 0)
    return Episodes(
        obs=jnp.asarray(rng.normal(size=(B, T + 1, N, SPEC.obs_dim)), jnp.float32),
        state=jnp.asarray(rng.normal(size=(B, T + 1, SPEC.state_dim)), jnp.float32),
        avail=jnp.asarray(avail),
        actions=jnp.asarray(actions, jnp.int32),
        reward=jnp.asarray(rng.normal(size=(B, T)), jnp.float32),
        terminated=jnp.zeros((B, T), bool).at[1, 2].set(True),
        mask=jnp.asarray(mask),
    )


# ---------------------------------------------------------------- hand-computed values
def test_soft_target_by_hand():
    """λ = 0: ``y_t = r_t + γ(1 − d_t)(Q̄_{t+1} − α_c Σ_i log π_i(a'_i))``; a terminal step
    takes no bootstrap."""
    reward = jnp.array([[1.0, 2.0]])
    terminated = jnp.array([[False, True]])
    mask = jnp.ones((1, 2), bool)
    q_next = jnp.array([[10.0, 99.0]])
    log_pi_next = jnp.log(jnp.array([[[0.5, 0.25], [0.1, 0.1]]]))  # [B, T, N]
    y = soft_target(reward, terminated, mask, q_next, log_pi_next, 0.2, 0.9, 0.0)
    expected0 = 1.0 + 0.9 * (10.0 - 0.2 * (math.log(0.5) + math.log(0.25)))
    np.testing.assert_allclose(y, [[expected0, 2.0]], rtol=1e-6)


def test_temperature_loss_gradient_is_entropy_minus_target():
    """``d/d log α`` of ``−log α (log π + H̄)`` is ``H − H̄`` (with ``E log π = −H``): negative
    (α rises) while the entropy is below its target, positive above; masked steps count
    for nothing."""
    log_pi = jnp.array([[-0.1, -0.3, -50.0]])
    mask = jnp.array([[True, True, False]])
    grad = jax.grad(temperature_loss)(jnp.log(0.3), log_pi, 0.5, mask)
    np.testing.assert_allclose(grad, 0.2 - 0.5, rtol=1e-6)  # H = 0.2 (mean of 0.1, 0.3)
    assert float(jax.grad(temperature_loss)(jnp.log(0.3), log_pi, 0.1, mask)) > 0


def test_critics_temperature_counts_only_the_alive_agents():
    """Two alive agents at entropy 0.3 and a dead one (one action, entropy 0), target 0.24
    per agent: the joint entropy 0.6 is above the alive agents' target 0.48, so α_c must
    fall (gradient 0.6 − 0.48 > 0); counting the dead agent (0.72) would raise it."""
    taken = jnp.array([[[-0.3, -0.3, 0.0]]])  # E[log π] = −H per agent, [B, T, N]
    alive = jnp.array([[[True, True, False]]])
    grad = jax.grad(joint_temperature_loss)(jnp.log(0.5), taken, alive, 0.24, jnp.ones((1, 1), bool))
    np.testing.assert_allclose(grad, 0.6 - 0.48, rtol=1e-5)


@SETTINGS
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([0.1, 1.0, 30.0]))
def test_straight_through_sample_is_an_exact_sample_with_the_softmax_gradient(seed, scale):
    rng = np.random.default_rng(seed)
    avail = jnp.asarray(rng.random((6, A)) < 0.7).at[:, 0].set(True)
    log_pi = ops.masked_log_softmax(jnp.asarray(rng.normal(size=(6, A)) * scale, jnp.float32), avail)
    g = jax.random.gumbel(jax.random.PRNGKey(seed), (6, A))
    y = straight_through_sample(log_pi, g)
    np.testing.assert_array_equal(y, jax.nn.one_hot(jnp.argmax(log_pi + g, -1), A))
    assert np.all(np.asarray(avail)[np.arange(6), np.argmax(np.asarray(y), -1)])  # available only
    c = jnp.asarray(rng.normal(size=(6, A)), jnp.float32)
    got = jax.grad(lambda lp: jnp.sum(c * straight_through_sample(lp, g)))(log_pi)
    want = jax.grad(lambda lp: jnp.sum(c * jax.nn.softmax(lp + g, -1)))(log_pi)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_gumbel_noise_of_a_step_does_not_depend_on_the_batch_length():
    key = jax.random.PRNGKey(3)
    long, short = gumbel_per_step(key, (2, 9, A)), gumbel_per_step(key, (2, 4, A))
    np.testing.assert_array_equal(long[:, :4], short)


def test_critics_target_takes_the_smaller_twin():
    """With twin 2 = twin 1 + 5 everywhere, the target bootstraps from twin 1."""
    learner = HASAC(make_cfg("td_lambda=0"), SPEC)
    ls = learner.init(jax.random.PRNGKey(0))
    critic = jax.tree.map(lambda x: jnp.stack([x[0], x[0]]), ls.params["critic"])
    bias = critic["params"]["Dense_2"]["bias"]
    critic["params"]["Dense_2"]["bias"] = bias.at[1].add(5.0)
    ep = batch()
    logits = jnp.zeros((B, T + 1, N, A))
    alpha_c = jnp.asarray(0.3)
    key = jax.random.PRNGKey(4)
    _, m = learner.critic_loss(critic, critic, ep, logits, alpha_c, key)
    # by hand: a' ~ uniform over available actions with the same per-step key, twin 1's value
    log_pi_next = ops.masked_log_softmax(logits[:, 1:], ep.avail[:, 1:])
    a_next = ops.sample_masked_per_step(jax.random.split(key, B), log_pi_next, ep.avail[:, 1:])
    q1 = learner.critic.apply(jax.tree.map(lambda x: x[0], critic), ep.state[:, 1:],
                              jax.nn.one_hot(a_next, A))
    logp = jnp.take_along_axis(log_pi_next, a_next[..., None], -1)[..., 0]
    y = ep.reward + CFG.gamma * (1 - ep.terminated) * (q1 - 0.3 * jnp.sum(logp, -1))
    np.testing.assert_allclose(m["target"], masked_mean(y, ep.mask), rtol=1e-5)


# ---------------------------------------------------------------- the sequential update
def reference_pass(learner: HASAC, ls, ep: Episodes, key, order, sequential: bool = True):
    """The sequential actor pass written as a Python loop over agents (same keys as the
    learner): returns the agents' new parameters. ``sequential=False`` is the
    simultaneous variant, every agent against the joint action drawn at the start."""
    agent_params = ls.params["agent"]
    opt = ls.opt_state["actor"]
    critic = ls.params["critic"]
    alpha = jnp.exp(ls.params["log_alpha"])
    inputs = agent_inputs(ep.obs, last_action_onehot(ep.actions, A))
    s_t, avail_t = ep.state[:, :-1], ep.avail[:, :-1]
    alive = active_agents(avail_t) & ep.mask[..., None]
    k_start, k_pass = jax.random.split(key)
    logits0 = np.stack([learner.unroll_one(jax.tree.map(lambda x, i=i: x[i], agent_params),
                                           inputs[:, :, i])[:, :-1] for i in range(N)], axis=2)
    joint = straight_through_sample(ops.masked_log_softmax(jnp.asarray(logits0), avail_t),
                                    gumbel_per_step(k_start, logits0.shape))
    start = joint
    new = agent_params
    for k, i in enumerate(order):
        key_i = jax.random.fold_in(k_pass, k)
        p_i = jax.tree.map(lambda x, i=i: x[i], agent_params)
        noise = gumbel_per_step(jax.random.fold_in(key_i, 0), avail_t[:, :, i].shape)
        seen = joint if sequential else start

        def loss(p, i=i, noise=noise, seen=seen):
            log_pi = ops.masked_log_softmax(learner.unroll_one(p, inputs[:, :, i])[:, :-1],
                                            avail_t[:, :, i])
            y = straight_through_sample(log_pi, noise)
            q = jnp.min(learner.q_values(critic, s_t, seen.at[:, :, i].set(y)), axis=0)
            logp = jnp.sum(y * jnp.where(avail_t[:, :, i], log_pi, 0.0), -1)
            return -masked_mean(q - alpha[i] * logp, alive[:, :, i])

        grads = jax.grad(loss)(p_i)
        updates, _ = learner.actor_opt.update(grads, jax.tree.map(lambda x, i=i: x[i], opt), p_i)
        p_i = optax.apply_updates(p_i, updates)
        new = jax.tree.map(lambda x, v, i=i: x.at[i].set(v), new, p_i)
        log_pi_new = ops.masked_log_softmax(learner.unroll_one(p_i, inputs[:, :, i])[:, :-1],
                                            avail_t[:, :, i])
        fresh = gumbel_per_step(jax.random.fold_in(key_i, 1), avail_t[:, :, i].shape)
        joint = joint.at[:, :, i].set(straight_through_sample(log_pi_new, fresh))
    return new


@pytest.fixture(scope="module")
def setup():
    learner = HASAC(make_cfg("actor_lr=0.05"), SPEC)
    ls = learner.init(jax.random.PRNGKey(1))
    return learner, ls, batch(), jax.random.PRNGKey(7)


def _pass(learner, ls, ep, key, order):
    return learner.actor_pass(ls.params["agent"], ls.opt_state["actor"], ls.params["critic"],
                              ls.params["log_alpha"], ep, key, jnp.asarray(order))


def test_sequential_pass_equals_the_agent_by_agent_loop(setup):
    learner, ls, ep, key = setup
    order = [2, 0, 1]
    got = _pass(learner, ls, ep, key, order)[0]
    want = reference_pass(learner, ls, ep, key, order)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    # ... and not the simultaneous variant: the later agents' losses saw new actions
    parallel = reference_pass(learner, ls, ep, key, order, sequential=False)
    first = jax.tree.leaves(jax.tree.map(lambda x: x[2], parallel))
    later = jax.tree.leaves(jax.tree.map(lambda x: x[1], parallel))
    for g, w in zip(jax.tree.leaves(jax.tree.map(lambda x: x[2], got)), first, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)  # the first agent: same
    assert any(not np.allclose(g, w) for g, w in
               zip(jax.tree.leaves(jax.tree.map(lambda x: x[1], got)), later, strict=True))


def test_another_order_gives_another_valid_update(setup):
    """Orders [0, 1, 2] and [0, 2, 1]: agent 0 goes first in both and makes the same
    step; agents 1 and 2 see different partners and end elsewhere; every agent moved
    and everything is finite."""
    learner, ls, ep, key = setup
    a = _pass(learner, ls, ep, key, [0, 1, 2])
    b = _pass(learner, ls, ep, key, [0, 2, 1])
    for x, y, old in zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0]),
                         jax.tree.leaves(ls.params["agent"]), strict=True):
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
        np.testing.assert_allclose(x[0], y[0], rtol=1e-6)
        assert all(not np.allclose(x[i], old[i]) for i in range(N))
    assert any(not np.allclose(x[1], y[1]) for x, y in
               zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0]), strict=True))
    assert np.isfinite(float(a[4])) and np.isfinite(float(b[4]))


def test_a_dead_agent_keeps_its_actor_and_everything_stays_finite(setup):
    """Agent 2 can only no-op (dead) at every step: its actor gets no gradient and does
    not move; unavailable actions and padded steps leave every metric finite."""
    learner, ls, _, key = setup
    ep = batch(seed=1, dead=2)
    new, metrics = learner.update(ls, ep, key)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values()), metrics
    for x, old in zip(jax.tree.leaves(new.params["agent"]), jax.tree.leaves(ls.params["agent"]),
                      strict=True):
        np.testing.assert_array_equal(x[2], old[2])
        assert not np.allclose(x[0], old[0])
    assert 0.0 <= float(metrics["entropy"]) <= math.log(A)
    # the logged entropies: over all agents the dead one's 0 counts; over the alive ones
    # it does not (what the temperatures track), so that one is exactly N/(N-1) larger
    # here, where agent 2 is dead at every real step
    np.testing.assert_allclose(float(metrics["entropy_alive"]),
                               float(metrics["entropy"]) * N / (N - 1), rtol=1e-5)


def test_unavailable_actions_get_zero_probability_and_are_never_sampled(setup):
    learner, ls, _, _ = setup
    avail = jnp.array([[True, False, True, False], [False, True, True, True], [True] * 4])
    logits = jnp.array([[0.0, 50.0, 1.0, 50.0], [90.0, 1.0, 0.0, -3.0], [0.0] * 4])
    probs = np.exp(learner.policy_log_probs({}, logits, jnp.zeros(7), avail))
    assert np.all(probs[~np.asarray(avail)] == 0.0)
    keys = jax.random.split(jax.random.PRNGKey(0), 500)
    acts = np.asarray(jax.vmap(lambda k: learner.explore(
        ls.params, logits, jnp.zeros(7), avail, k, jnp.asarray(0))[0])(keys))  # [draws, N]
    assert np.all(np.asarray(avail)[np.arange(N), acts])


def test_update_learns_the_temperatures_toward_their_targets(setup):
    """α_i and α_c both fall when the policies are more random than the target (the
    fresh actors are near uniform, entropy ≈ log 4 ≫ 0.24)."""
    learner, ls, ep, key = setup
    new, _ = learner.update(ls, ep, key)
    assert np.all(np.asarray(new.params["log_alpha"]) < np.asarray(ls.params["log_alpha"]))
    assert float(new.params["log_alpha_critic"]) < float(ls.params["log_alpha_critic"])


def _equations(jaxpr):
    """Every equation of a jaxpr, nested ones (pjit, custom derivatives) included."""
    for e in jaxpr.eqns:
        yield e
        for value in e.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def test_per_agent_actors_initialise_without_a_batched_qr():
    """A batched QR (the GRU's orthogonal initialiser under ``nn.vmap``) can deadlock XLA's
    CPU thread pool (seen: a 10-seed Table 1 run hung at its first chunk); the per-agent
    actors are initialised with unbatched ones, and their shapes are the vmapped module's."""
    learner = HASAC(CFG, SPEC)
    qr = [e for e in _equations(jax.make_jaxpr(learner.init)(jax.random.PRNGKey(0)).jaxpr)
          if e.primitive.name in ("qr", "geqrf", "householder_product")]
    assert qr and all(e.invars[0].aval.ndim == 2 for e in qr), qr
    ls = learner.init(jax.random.PRNGKey(0))
    want = jax.eval_shape(lambda: learner.agent.init(
        jax.random.PRNGKey(0), jnp.zeros((1, N, 8)), jnp.zeros((1, N, SPEC.obs_dim + N + A))))
    assert jax.tree.map(jnp.shape, ls.params["agent"]) == jax.tree.map(lambda x: x.shape, want)


# ---------------------------------------------------------------- export of per-agent actors
@SETTINGS
@given(seed=st.integers(0, 1000))
def test_numpy_network_equals_the_per_agent_actors(seed):
    module = per_agent_rnn(N, A, 8)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, N, 8)), jnp.zeros((1, N, 13)))
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(2, N, 8)).astype(np.float32)
    inputs = rng.normal(size=(2, N, 13)).astype(np.float32)
    h, q = module.apply(params, hidden, inputs)
    weights = {name: np.asarray(params["params"][layer][leaf]) if leaf else
               np.asarray(params["params"][layer]) for name, (layer, leaf) in {
        "fc1.kernel": ("fc1", "kernel"), "fc1.bias": ("fc1", "bias"),
        "gru_in.kernel": ("gru_in", "kernel"), "gru_in.bias": ("gru_in", "bias"),
        "gru_hidden.kernel": ("gru_hidden", "kernel"), "gru_hn_bias": ("gru_hn_bias", None),
        "fc2.kernel": ("fc2", "kernel"), "fc2.bias": ("fc2", "bias")}.items()}
    h_np, q_np = numpy_policy.rnn_step(weights, hidden, inputs)
    np.testing.assert_allclose(h_np, h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q_np, q, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- end to end
#: Table 1's observation at its first step: the one-hot of step 0 (of 2), per agent.
FIRST_OBS = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)

@pytest.fixture(scope="module")
def table1_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("hasac") / "run"
    cfg = config.build(None, [*TINY, "critic_hidden=16", "t_max=800", "test_interval=200",
                              "checkpoint_interval=200", "keep_checkpoints=5"],
                       alg="hasac", env="matrix:table1", seeds=2)
    return run, cfg, train_run(cfg, run, progress=False, echo=lambda _: None)


def test_table1_metrics_view_and_exact_resume(table1_run):
    """Logged metrics are finite; the Table 1 view has HASAC's joint values and its
    misalignment figure; a run resumed from its 600-step checkpoint ends with the
    uninterrupted run's metrics, bit for bit."""
    run, cfg, results = table1_run
    for rec in results["history"]:
        for key in ("train/loss_q", "train/loss_pi", "train/alpha", "train/alpha_critic",
                    "train/entropy", "train/igm_gap", "test/return"):
            assert np.isfinite(rec[key]), (key, rec)
    view = results["first_step"]
    assert view["has_policy"] and view["has_q_tot"]
    for e in view["per_seed"]:
        assert np.asarray(e["q_tot"]).shape == (3, 3) and e["igm_gap"] >= 0.0
    records = metrics_rows(run)
    (run / "results.json").unlink()
    (run / "checkpoints" / "final.safetensors").unlink()
    assert [p.name for p in ckpt.list_checkpoints(run)][-1].startswith("step_")
    for newest in ckpt.list_checkpoints(run)[-1:]:
        newest.unlink()  # resume from the one before (600 steps)
    resumed = train_run(cfg, run, progress=False, echo=lambda _: None, resume=True)
    assert metrics_rows(run) == records
    assert records[-1]["t_env"] == resumed["history"][-1]["t_env"]
    # the per-agent actors export for NumPy-only deployment, one network per agent
    out = export_run(run, run.parent / "team.npz", seed_index=1)
    policy = numpy_policy.Policy.load(out)
    assert policy.weights["fc1.kernel"].shape[0] == 2  # [N, I, H]
    greedy = results["first_step"]["per_seed"][1]["greedy"]
    assert policy.act(np.asarray(FIRST_OBS)).tolist() == greedy
