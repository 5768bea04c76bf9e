"""Overcooked: the shaping reward enters the learning reward only (annealed by the trainer),
returns and soups are sparse, and the registry rejects arguments it does not know.

The scripted episode below serves one soup in ``cramped_room``; its rewards are counted
by hand from JaxMARL's rules, so the tests pin the adapter's reading of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meigm import config
from meigm.envs import make_env
from meigm.errors import ConfigError
from meigm.program import make_program, shaping_coef
from meigm.rollout import greedy_act, rollout

UP, DOWN, RIGHT, LEFT, STAY, INTERACT = range(6)  # JaxMARL's Overcooked action indices


def _one_soup_script(length: int) -> np.ndarray:
    """Joint actions [length, 2] serving one soup in cramped_room.

    Kitchen (x right, y down): pot at (2,0), onion piles at (0,1) and (4,1), plates at
    (1,3), serving spot at (3,3); cook 0 starts at (1,1), cook 1 at (3,1). Every interact
    follows a move that turns the cook to face its target (a blocked move still turns), so
    the script works whatever the random start orientations. Cook 0 carries three onions
    to the pot (steps 4, 9, 14: shaping 3 each) and steps aside; cook 1 fetches a plate
    once the pot holds an onion (step 9: shaping 3), waits below the pot for the 20 cooking
    steps, picks the soup up (step 34: shaping 5) and serves it (step 38: sparse 20).
    """
    onion_trip = [LEFT, INTERACT, RIGHT, UP, INTERACT]
    cook0 = onion_trip * 3 + [LEFT]
    cook1 = [STAY] * 5 + [DOWN, LEFT, LEFT, DOWN, INTERACT, RIGHT] + [STAY] * 5 + [UP, UP]
    cook1 += [STAY] * (34 - len(cook1)) + [INTERACT, DOWN, RIGHT, DOWN, INTERACT]
    script = np.full((length, 2), STAY, np.int32)
    script[: len(cook0), 0] = cook0
    script[: len(cook1), 1] = cook1
    return script


#: Hand-counted from the script: (step, sparse reward, shaping reward) where non-zero.
EXPECTED_REWARDS = [(4, 0.0, 3.0), (9, 0.0, 6.0), (14, 0.0, 3.0), (34, 0.0, 5.0), (38, 20.0, 0.0)]


def _scripted_agent(n_actions: int):
    """Stands in for the agent network: the hidden state's first unit counts steps and the
    Q-values are one-hot on the script's action, so ``greedy_act`` plays the script.

    params: script [T, N]; hidden [E, N, H]; inputs [E, N, I] -> (hidden, q [E, N, A]).
    """
    def apply(script, hidden, inputs):
        del inputs
        t = hidden[:, 0, 0].astype(jnp.int32)  # [E]
        q = jax.nn.one_hot(script[t], n_actions)  # [E, N, A]
        return hidden + 1.0, q

    return apply


@pytest.fixture(scope="module")
def cramped():
    return make_env("overcooked:cramped_room")


def test_shaping_coefficient_schedule():
    horizon = 2_000
    for t_env, expected in [(0, 1.0), (500, 0.75), (1_000, 0.5), (2_000, 0.0), (3_500, 0.0)]:
        assert float(shaping_coef(jnp.asarray(t_env, jnp.int32), horizon)) == pytest.approx(expected)
    # 0 (the default of every scenario without shaping) and None switch shaping off.
    assert float(shaping_coef(jnp.asarray(0, jnp.int32), 0)) == 0.0
    assert float(shaping_coef(jnp.asarray(0, jnp.int32), None)) == 0.0


def test_scripted_soup_rewards_step_by_step(cramped):
    """Stepping the adapter: the sparse reward is 20 on the serving step only, the shaping
    reward is both cooks' JaxMARL shaping summed, and the episode is not over."""
    script = _one_soup_script(40)
    step = jax.jit(cramped.step)
    for reset_seed in (0, 1):  # start orientations are random; the script must not care
        state, ts = cramped.reset(jax.random.PRNGKey(reset_seed))
        assert float(ts.shaped) == 0.0
        got = []
        for t, actions in enumerate(script):
            state, ts = step(jax.random.PRNGKey(t), state, jnp.asarray(actions))
            if float(ts.reward) or float(ts.shaped):
                got.append((t, float(ts.reward), float(ts.shaped)))
            assert not bool(ts.done)
        assert got == EXPECTED_REWARDS


def test_rollout_learning_reward_and_sparse_stats(cramped):
    """Through ``rollout``: the stored reward is sparse + coef · shaped at every step, while
    the stats' return is the sparse one whatever the coefficient and the soup count read
    from it is the number of soups served."""
    spec = cramped.spec
    script = jnp.asarray(_one_soup_script(spec.episode_limit))
    expected_sparse = np.zeros(spec.episode_limit, np.float32)
    expected_shaped = np.zeros(spec.episode_limit, np.float32)
    for t, sparse, shaped in EXPECTED_REWARDS:
        expected_sparse[t], expected_shaped[t] = sparse, shaped

    run = jax.jit(lambda coef: rollout(cramped, _scripted_agent(spec.n_actions), script, greedy_act, None,
                                       4, jax.random.PRNGKey(0), 2, shaping_coef=coef))
    for coef in (0.0, 0.3, 1.0):
        episodes, stats = run(jnp.float32(coef))
        reward = np.asarray(episodes.reward)  # [E, T]
        for e in range(2):
            np.testing.assert_allclose(reward[e], expected_sparse + coef * expected_shaped, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(stats.returns), [20.0, 20.0])
        np.testing.assert_array_equal(np.asarray(stats.shaped_returns), [17.0, 17.0])
        np.testing.assert_array_equal(np.asarray(stats.lengths), [spec.episode_limit] * 2)
        soups = dict(spec.return_metrics)["soups"] * np.asarray(stats.returns)
        np.testing.assert_array_equal(soups, [1.0, 1.0])
    assert not np.asarray(episodes.terminated).any()  # the step limit is a truncation


def test_trainer_anneals_shaping_and_reports_sparse_metrics(cramped):
    cfg = config.build(None, ["reward_shaping_horizon=1000", "t_max=10", "batch_size=2",
                              "buffer_size=4", "n_envs=2", "test_episodes=2", "test_interval=1600",
                              "hidden_dim=16", "mixing_embed=8", "hypernet_embed=16"],
                       alg="qmix", env="overcooked:cramped_room")
    program = make_program(cfg, cramped)
    cfg, trainer = program.cfg, program.trainer
    assert cfg.reward_shaping_horizon == 1000  # explicit value wins over the scenario's
    ts = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    _, metrics = jax.jit(trainer.run)(ts, cfg.test_interval)
    assert int(metrics["t_env"]) == 1600  # two iterations of 2 x 400-step episodes
    # Averaged over the chunk's iterations: 1 at t=0, then 1 - 800/1000 = 0.2 at t=800.
    assert float(metrics["train/shaping_coef"]) == pytest.approx((1.0 + 0.2) / 2)
    assert float(metrics["train/shaped_return"]) >= 0.0
    assert float(metrics["train/info/soups"]) == pytest.approx(float(metrics["train/return"]) / 20)
    test = jax.jit(trainer.evaluate)(ts.learner.params, jax.random.PRNGKey(1))
    assert float(test["test/soups"]) == pytest.approx(float(test["test/return"]) / 20)


def test_scenario_default_horizon():
    spec = make_env("overcooked:asymm_advantages").spec
    assert config.build(None).resolve(1, dict(spec.config_defaults)).reward_shaping_horizon == 2_500_000
    assert config.build(None).resolve(1).reward_shaping_horizon == 0  # no shaping elsewhere
    with pytest.raises(ConfigError, match="reward_shaping_horizon"):
        config.build(None, ["reward_shaping_horizon=-5"])


def test_scenario_default_target_entropy_is_overcookeds_own():
    """Overcooked's ME-IGM target entropy is 1.4 per agent, not SMAC-v2's 0.24 (which
    stopped exploration there); an explicit value still wins."""
    defaults = dict(make_env("overcooked:cramped_room").spec.config_defaults)
    assert config.build(None).resolve(2, defaults).target_entropy == 1.4
    assert config.build(None, ["target_entropy=0.24"]).resolve(2, defaults).target_entropy == 0.24


def test_unknown_env_args_are_rejected():
    cfg = config.build(None, ["env_args.layout=forced_coord"], env="overcooked:cramped_room")
    with pytest.raises(ConfigError, match=r"env_args \['layout'\] not understood by overcooked:cramped_room"):
        make_env(cfg.env, cfg.env_args)
