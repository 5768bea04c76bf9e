"""Which agents ME-IGM's temperature target counts (``entropy_agents``, issue 41 item 11).

With ``all`` (App. E) H̄ = target_entropy · n at every step; with ``alive`` it counts, per
step, the agents with more than one available action. A dead SMAX unit (one action, zero
entropy) then no longer makes the living agents carry its share."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meigm import config, ops
from meigm.envs import EnvSpec
from meigm.errors import ConfigError
from meigm.learners import make_learner
from meigm.types import Episodes

N, A, T, B = 3, 4, 3, 2
SPEC = EnvSpec(name="test:entropy", n_agents=N, n_actions=A, obs_dim=5, state_dim=6, episode_limit=T)


def make(entropy_agents: str):
    cfg = config.build(None, ["hidden_dim=8", "mixing_embed=4", "hypernet_embed=8", "opt_hidden=4",
                              "alpha_init=0.5", "target_entropy=0.3", f"entropy_agents={entropy_agents}"],
                       alg="me_qmix", env="matrix:table1").resolve(1000)
    learner = make_learner(cfg, SPEC)
    return learner, learner.init(jax.random.PRNGKey(0))


def batch(dead_from: int) -> Episodes:
    """Agent 2 dies (only no-op left) from step ``dead_from`` on; episode 1 is padded after
    its first step."""
    rng = np.random.default_rng(0)
    avail = np.ones((B, T + 1, N, A), bool)
    avail[:, dead_from:, 2] = False
    avail[:, dead_from:, 2, 0] = True
    actions = rng.integers(0, A, size=(B, T, N))
    actions[:, dead_from:, 2] = 0
    mask = np.ones((B, T), bool)
    mask[1, 1:] = False
    return Episodes(
        obs=jnp.asarray(rng.normal(size=(B, T + 1, N, SPEC.obs_dim)), jnp.float32),
        state=jnp.asarray(rng.normal(size=(B, T + 1, SPEC.state_dim)), jnp.float32),
        avail=jnp.asarray(avail), actions=jnp.asarray(actions, jnp.int32),
        reward=jnp.asarray(rng.normal(size=(B, T)), jnp.float32),
        terminated=jnp.zeros((B, T), bool), mask=jnp.asarray(mask))


def alpha_loss_by_hand(learner, params, ep: Episodes, count_alive: bool) -> float:
    """Eq. (11) with the exact expectation: mean over real steps of −α (−Σ_i H_i + H̄_t)."""
    from meigm.learners.common import unroll_agent

    q = unroll_agent(learner.agent, params["agent"], ep, learner.hidden_dim)
    f = learner.transform.apply(params["transform"], q, ep.state)
    alpha = float(jnp.exp(params["log_alpha"]))
    log_pi = ops.masked_log_softmax(f / alpha, ep.avail)[:, :-1]
    h = np.asarray(ops.entropy(log_pi, ep.avail[:, :-1]))  # [B, T, N]
    counted = (np.asarray(ep.avail[:, :-1]).sum(-1) > 1).sum(-1) if count_alive else np.full((B, T), N)
    per_step = -alpha * (-h.sum(-1) + 0.3 * counted)
    m = np.asarray(ep.mask)
    return float((per_step * m).sum() / m.sum())


@pytest.mark.parametrize("entropy_agents", ["all", "alive"])
def test_temperature_loss_counts_the_chosen_agents(entropy_agents):
    learner, ls = make(entropy_agents)
    ep = batch(dead_from=1)
    _, metrics = learner.loss(ls.params, ls.target_params, ep, jax.random.split(jax.random.PRNGKey(1), B))
    expected = alpha_loss_by_hand(learner, ls.params, ep, entropy_agents == "alive")
    np.testing.assert_allclose(float(metrics["loss_alpha"]), expected, rtol=1e-5)


def test_with_every_agent_alive_the_two_settings_agree():
    ep = batch(dead_from=T + 1)  # nobody dies
    keys = jax.random.split(jax.random.PRNGKey(1), B)
    out = {}
    for which in ("all", "alive"):
        learner, ls = make(which)
        out[which] = learner.loss(ls.params, ls.target_params, ep, keys)[1]
    np.testing.assert_allclose(float(out["all"]["loss_alpha"]), float(out["alive"]["loss_alpha"]), rtol=1e-6)
    np.testing.assert_allclose(float(out["all"]["entropy"]), float(out["all"]["entropy_alive"]), rtol=1e-6)


def test_dead_agents_pull_the_all_agent_entropy_down_but_not_the_alive_one():
    """``entropy`` averages a dead agent's zero in; ``entropy_alive`` leaves it out; a dead
    agent's step lowers H̄ under ``alive``, so α's gradient pushes it down, not up."""
    learner, ls = make("alive")
    keys = jax.random.split(jax.random.PRNGKey(1), B)
    _, m = learner.loss(ls.params, ls.target_params, batch(dead_from=0), keys)
    assert float(m["entropy_alive"]) == pytest.approx(float(m["entropy"]) * N / (N - 1), rel=1e-5)


def test_an_unknown_setting_is_one_line_naming_the_choices():
    with pytest.raises(ConfigError, match=r"entropy_agents.*all, alive"):
        config.build(None, ["entropy_agents=dead"], alg="me_qmix", env="matrix:table1")
