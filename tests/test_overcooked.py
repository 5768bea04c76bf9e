"""Overcooked: shaping reward annealed into the learning reward only, soups metric,
and the shaping schedule of the trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meigm import config, ops
from meigm.envs import make_env
from meigm.errors import ConfigError
from meigm.learners import make_learner
from meigm.rollout import rollout
from meigm.train import make_train


def _random(params, q, state, avail, key):
    return ops.sample_masked(key, jnp.zeros(avail.shape), avail)


def _zero_agent(n_actions):
    def apply(params, hidden, inputs):
        return hidden, jnp.zeros((*inputs.shape[:-1], n_actions))
    return apply


@pytest.fixture(scope="module")
def cramped():
    return make_env("overcooked:cramped_room")


def test_learning_reward_is_sparse_plus_coef_times_shaped(cramped):
    spec = cramped.spec
    run = jax.jit(lambda k, c: rollout(cramped, _zero_agent(spec.n_actions), None, _random, None, 4, k,
                                       16, shaping_coef=c))
    key = jax.random.PRNGKey(0)
    (ep0, st0), (ep1, st1), (ep_half, _) = (run(key, c) for c in (0.0, 1.0, 0.5))
    shaped = np.asarray(ep1.reward) - np.asarray(ep0.reward)  # same key: same actions
    assert shaped.sum() > 0  # random cooks put onions in pots / pick dishes sometimes
    np.testing.assert_allclose(np.asarray(ep_half.reward), np.asarray(ep0.reward) + 0.5 * shaped,
                               rtol=1e-6, atol=1e-6)
    # Returns in the stats are the sparse delivery return whatever the coefficient.
    np.testing.assert_array_equal(np.asarray(st0.returns), np.asarray(st1.returns))
    assert np.all(np.asarray(st0.returns) % 20 == 0)


def test_shaping_schedule_and_soups_metric(cramped):
    cfg = config.build(None, ["reward_shaping_horizon=1000", "t_max=10", "batch_size=2",
                              "buffer_size=4", "n_envs=2", "test_episodes=2", "test_interval=1600"],
                       alg="qmix", env="overcooked:cramped_room")
    cfg = cfg.resolve(cramped.spec.default_t_max, dict(cramped.spec.config_defaults))
    assert cfg.reward_shaping_horizon == 1000  # explicit value wins over the scenario's
    trainer = make_train(cfg, cramped, make_learner(cfg, cramped.spec))
    ts = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    _, metrics = jax.jit(trainer.run)(ts)
    assert int(metrics["t_env"]) == 1600  # two iterations of 2 x 400-step episodes
    # Averaged over the chunk's iterations: 1 at t=0, then 1 - 800/1000 = 0.2 at t=800.
    assert float(metrics["train/shaping_coef"]) == pytest.approx((1.0 + 0.2) / 2)
    test = jax.jit(trainer.evaluate)(ts.learner.params, jax.random.PRNGKey(1))
    assert float(test["test/soups"]) == pytest.approx(float(test["test/return"]) / 20)


def test_scenario_default_horizon():
    spec = make_env("overcooked:asymm_advantages").spec
    assert config.build(None).resolve(1, dict(spec.config_defaults)).reward_shaping_horizon == 2_500_000
    assert config.build(None).resolve(1).reward_shaping_horizon == 0  # no shaping elsewhere
    with pytest.raises(ConfigError, match="reward_shaping_horizon"):
        config.build(None, ["reward_shaping_horizon=-5"])


def test_unknown_env_args_are_rejected():
    with pytest.raises(ConfigError, match="not understood"):
        make_env("overcooked:cramped_room", {"layout": "x"})
