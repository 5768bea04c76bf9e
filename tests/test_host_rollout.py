"""Host environments: the PettingZoo adapter against the real MPE2 ``simple_spread``, the
host roll-out's episode layout, worker processes, and clear errors for bad environments."""

from __future__ import annotations

import functools

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import metrics_rows
from pettingzoo import ParallelEnv

from meigm import config as config_mod
from meigm.config import Config
from meigm.envs import make_env
from meigm.envs.host import HostVecEnv
from meigm.errors import ConfigError, MeigmError
from meigm.experiments.run import train_run
from meigm.rollout import greedy_act
from meigm.rollout.host import host_rollout, make_policy_step

pytest.importorskip("mpe2")
import mpe2.simple_spread_v3 as spread

SPREAD = "pettingzoo:mpe2.simple_spread_v3"
DISCRETE = {"continuous_actions": False}


# -- a small real ParallelEnv with the features MPE lacks -------------------------------

class Relay(ParallelEnv):
    """Three agents; agent i leaves after ``2 + i`` steps; dict observations with
    ``action_mask`` for agent_0, masks in ``info`` for agent_1, none for agent_2 (which
    has 3 actions, the others 4). Reward = number of agents choosing action 1.
    ``bad_shape_at`` makes the observations change shape at that step."""

    metadata = {"name": "relay_v0"}  # noqa: RUF012 (PettingZoo's own convention)

    def __init__(self, bad_shape_at: int | None = None, max_steps: int = 10) -> None:
        self.possible_agents = ["agent_0", "agent_1", "agent_2"]
        self.bad_shape_at, self.max_steps = bad_shape_at, max_steps
        self._n = {"agent_0": 4, "agent_1": 4, "agent_2": 3}

    def observation_space(self, agent):
        box = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
        if agent == "agent_0":
            return gymnasium.spaces.Dict({"observation": box,
                                          "action_mask": gymnasium.spaces.MultiBinary(4)})
        return box

    def action_space(self, agent):
        return gymnasium.spaces.Discrete(self._n[agent])

    def _obs(self):
        out = {}
        for i, a in enumerate(self.agents):
            size = 3 if self.bad_shape_at is not None and self.t >= self.bad_shape_at else 2
            o = np.full(size, self.t / 10 + i, np.float32)
            if a == "agent_0":
                out[a] = {"observation": o, "action_mask": np.array([0, 1, 1, 0], np.int8)}
            else:
                out[a] = o
        return out

    def _infos(self):
        return {a: ({"action_mask": np.array([1, 0, 1, 1])} if a == "agent_1" else {})
                for a in self.agents}

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return self._obs(), self._infos()

    def step(self, actions):
        self.t += 1
        rewards = {a: float(sum(v == 1 for v in actions.values())) for a in self.agents}
        terms = {a: self.t >= 2 + int(a[-1]) for a in self.agents}
        truncs = {a: False for a in self.agents}
        obs, infos = self._obs(), self._infos()
        self.agents = [a for a in self.agents if not terms[a]]
        return obs, rewards, terms, truncs, infos


class Continuous(Relay):
    def action_space(self, agent):
        return gymnasium.spaces.Box(-1, 1, (2,), np.float32)


def relay(**kw):
    return Relay(**kw)


def continuous(**kw):
    return Continuous(**kw)


# -- the adapter on MPE2 simple_spread --------------------------------------------------

def test_simple_spread_spec_and_steps_match_the_raw_environment():
    env = make_env(SPREAD, DISCRETE)
    spec = env.spec
    assert (spec.n_agents, spec.n_actions, spec.obs_dim, spec.state_dim, spec.episode_limit) == \
        (3, 5, 18, 54, 25)
    raw = spread.parallel_env(continuous_actions=False)
    obs, _ = raw.reset(seed=7)
    ts = env.reset(7)
    np.testing.assert_array_equal(ts.obs, np.stack([obs[a] for a in raw.possible_agents]))
    np.testing.assert_array_equal(ts.state, raw.state())
    assert ts.avail.all()
    rng = np.random.default_rng(0)
    for t in range(25):
        acts = rng.integers(0, 5, 3)
        obs, rew, *_ = raw.step(dict(zip(raw.possible_agents, acts.tolist(), strict=True)))
        ts = env.step(acts)
        np.testing.assert_array_equal(ts.obs, np.stack([obs[a] for a in raw.possible_agents]))
        assert ts.reward == pytest.approx(np.mean(list(rew.values())))
        assert not ts.terminated
        assert ts.truncated == (t == 24)


def test_team_reward_sum_option():
    mean = make_env(SPREAD, DISCRETE)
    total = make_env(SPREAD, {**DISCRETE, "team_reward": "sum"})
    mean.reset(3), total.reset(3)
    a = np.array([1, 2, 3])
    assert total.step(a).reward == pytest.approx(3 * mean.step(a).reward)


def test_host_rollout_records_what_the_environment_did():
    """Episodes from the host roll-out, replayed action by action on a fresh raw
    environment with the same reset seed, give the recorded observations and rewards."""
    cfg = Config(alg="qmix", env=SPREAD, env_args=DISCRETE, hidden_dim=8)
    env = make_env(SPREAD, DISCRETE)
    from meigm.learners import make_learner

    learner = make_learner(cfg.resolve(10_000, {}), env.spec)
    params = jax.tree.map(lambda x: x[None], learner.init(jax.random.PRNGKey(0)).params)
    vec = HostVecEnv(env, 2)
    step = make_policy_step(learner.agent.apply, learner.explore)
    keys = jax.random.PRNGKey(1)[None]
    eps, stats = host_rollout(vec, step, params, 8, keys, jnp.zeros(1, jnp.int32), 1)
    assert eps.obs.shape == (1, 2, 26, 3, 18) and eps.actions.shape == (1, 2, 25, 3)
    assert eps.mask.all() and (stats.lengths == 25).all()
    assert not eps.terminated.any()
    from meigm.rollout.host import reset_seeds

    seeds = reset_seeds(keys, 2)[0]
    for e in range(2):
        raw = spread.parallel_env(continuous_actions=False)
        obs, _ = raw.reset(seed=int(seeds[e]))
        for t in range(25):
            np.testing.assert_allclose(eps.obs[0, e, t], np.stack(list(obs.values())), rtol=1e-6)
            obs, rew, *_ = raw.step(dict(zip(raw.possible_agents, eps.actions[0, e, t].tolist(),
                                             strict=True)))
            assert eps.reward[0, e, t] == pytest.approx(np.mean(list(rew.values())), rel=1e-6)
        np.testing.assert_allclose(eps.obs[0, e, 25], np.stack(list(obs.values())), rtol=1e-6)
        assert stats.returns[0, e] == pytest.approx(eps.reward[0, e].sum(), rel=1e-5)
    vec.close()


# -- masks, agents leaving, early ends --------------------------------------------------

def test_masks_dead_agents_and_early_termination(monkeypatch):
    import sys
    import types

    mod = types.ModuleType("relay_env")
    mod.parallel_env = relay
    monkeypatch.setitem(sys.modules, "relay_env", mod)
    env = make_env("pettingzoo:relay_env", {"team_reward": "sum"})
    spec = env.spec
    assert (spec.n_agents, spec.n_actions, spec.obs_dim, spec.state_dim, spec.episode_limit) == \
        (3, 4, 2, 6, 10)
    ts = env.reset(0)
    np.testing.assert_array_equal(ts.avail, [[0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 0]])
    ts = env.step(np.array([1, 0, 1]))  # t=1: everyone still in
    assert ts.reward == 6.0 and not ts.done  # 2 agents chose 1, three rewarded
    ts = env.step(np.array([1, 1, 1]))  # t=2: agent_0 leaves
    assert not ts.done
    ts = env.step(np.array([2, 1, 0]))  # t=3: agent_1 leaves; agent_0's action not sent
    assert not ts.done
    np.testing.assert_array_equal(ts.obs[0], 0.0)
    np.testing.assert_array_equal(ts.avail[0], [1, 0, 0, 0])
    ts = env.step(np.array([0, 0, 1]))  # t=4: the last agent leaves
    assert ts.terminated and not ts.truncated and ts.reward == 1.0

    cfg = Config(alg="qmix", env="pettingzoo:relay_env", hidden_dim=8)
    from meigm.learners import make_learner

    learner = make_learner(cfg.resolve(1000, {}), spec)
    params = jax.tree.map(lambda x: jnp.stack([x, x]),
                          learner.init(jax.random.PRNGKey(0)).params)  # 2 seeds
    vec = HostVecEnv(env, 4)  # 2 seeds x 2 environments
    step = make_policy_step(learner.agent.apply, lambda p, q, s, a, k, t: greedy_act(p, q, s, a, k))
    eps, stats = host_rollout(vec, step, params, 8, jax.random.split(jax.random.PRNGKey(0), 2),
                              jnp.zeros(2, jnp.int32), 2)
    assert (stats.lengths == 4).all()
    np.testing.assert_array_equal(eps.mask[0, 0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(eps.terminated[0, 0], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    # actions respect every mask, dead agents take action 0
    chosen = np.take_along_axis(eps.avail[:, :, :-1], eps.actions[..., None], -1)
    assert chosen.all()
    # the final slot and the padding hold the last observation
    np.testing.assert_array_equal(eps.obs[0, 0, 4], eps.obs[0, 0, 9])
    vec.close()


def test_bad_environments_give_clear_errors(monkeypatch):
    import sys
    import types

    with pytest.raises(MeigmError, match="Discrete"):
        make_env(SPREAD, {"continuous_actions": True})
    mod = types.ModuleType("odd_envs")
    mod.continuous = continuous
    mod.changing = functools.partial(relay, bad_shape_at=2)
    mod.parallel_env = relay
    monkeypatch.setitem(sys.modules, "odd_envs", mod)
    with pytest.raises(MeigmError, match="Discrete"):
        make_env("pettingzoo:odd_envs:continuous")
    with pytest.raises(MeigmError, match="cannot import module 'no_such_module'"):
        make_env("pettingzoo:no_such_module")
    with pytest.raises(MeigmError, match="no callable 'nope'"):
        make_env("pettingzoo:odd_envs:nope")
    env = make_env("pettingzoo:odd_envs:changing")
    env.reset(0)
    env.step(np.zeros(3, int))
    with pytest.raises(MeigmError, match=r"shape \(3,\).*declares \(2,\)"):
        env.step(np.zeros(3, int))
    with pytest.raises(ConfigError, match="team_reward"):
        make_env(SPREAD, {**DISCRETE, "team_reward": "max"})
    with pytest.raises(ConfigError, match="bad env_args"):
        make_env(SPREAD, {**DISCRETE, "no_such_kwarg": 1})
    with pytest.raises(MeigmError, match="env_workers=2 must divide"):
        HostVecEnv(make_env(SPREAD, DISCRETE), 3, workers=2)
    with pytest.raises(ConfigError, match="env_workers"):
        config_mod.from_dict({"env_workers": -1})


def test_worker_processes_give_the_same_episodes():
    """AsyncVectorEnv workers (spawned processes) and in-process stepping collect the
    very same episodes for the same keys."""
    env = make_env(SPREAD, DISCRETE)
    cfg = Config(alg="qmix", env=SPREAD, env_args=DISCRETE, hidden_dim=8)
    from meigm.learners import make_learner

    learner = make_learner(cfg.resolve(10_000, {}), env.spec)
    params = jax.tree.map(lambda x: x[None], learner.init(jax.random.PRNGKey(0)).params)
    step = make_policy_step(learner.agent.apply, learner.explore)
    out = []
    for workers in (0, 2):
        vec = HostVecEnv(env, 4, workers=workers)
        try:
            out.append(host_rollout(vec, step, params, 8, jax.random.PRNGKey(5)[None],
                                    jnp.zeros(1, jnp.int32), 1))
        finally:
            vec.close()
    for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1]), strict=True):
        np.testing.assert_array_equal(a, b)


# -- training through the host roll-out ------------------------------------------------

def _tiny(tmp, **kw) -> dict:
    cfg = Config(alg="me_qmix", env=SPREAD, env_args=DISCRETE, seeds=2, t_max=400,
                 test_interval=200, n_envs=2, batch_size=4, buffer_size=8, test_episodes=3,
                 hidden_dim=16, mixing_embed=8, hypernet_embed=16, opt_hidden=8, **kw)
    return train_run(cfg, out=tmp, progress=False, echo=lambda s: None)


def test_training_on_a_host_environment_is_reproducible(tmp_path):
    a = _tiny(tmp_path / "a")
    _tiny(tmp_path / "b")
    assert (tmp_path / "a" / "checkpoints" / "final.safetensors").is_file()
    assert a["t_env"] == [400, 400]
    assert metrics_rows(tmp_path / "a") == metrics_rows(tmp_path / "b")
    assert len(a["history"]) == 4  # 2 evaluations x 2 seeds
    rec = a["history"][-1]
    assert rec["train/igm_gap"] == 0.0 and np.isfinite(rec["train/loss_q"])
    assert rec["test/length"] == 25.0
    assert "first_step" not in a  # the Table 1 view needs a JAX environment
    # the two seeds are independent programs, not copies
    assert a["history"][-1]["test/return"] != a["history"][-2]["test/return"]


def test_mpe_time_limit_ends_the_episode_by_default():
    """bootstrap_truncated: MPE (JAX or PettingZoo) defaults to a terminal time limit,
    other scenarios bootstrap; the last real step of each episode is where it applies."""
    from meigm.program import last_step

    mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    np.testing.assert_array_equal(last_step(mask), [[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    for name, args, want in ((SPREAD, DISCRETE, False), ("mpe:simple_spread", {}, False),
                             ("smax:3m", {}, True)):
        spec = make_env(name, args).spec
        cfg = Config(env=name, env_args=args).resolve(spec.default_t_max, dict(spec.config_defaults))
        assert cfg.bootstrap_truncated is want, name
    spec = make_env(SPREAD, DISCRETE).spec
    cfg = Config(env=SPREAD, bootstrap_truncated=True).resolve(1000, dict(spec.config_defaults))
    assert cfg.bootstrap_truncated is True  # an explicit setting wins


def test_a_terminal_time_limit_reaches_the_replay_buffer():
    from meigm.program import make_program

    for bootstrap in (False, True):
        cfg = Config(alg="qmix", env="mpe:simple_spread", t_max=100, test_interval=50, n_envs=2,
                     batch_size=4, buffer_size=8, hidden_dim=8, bootstrap_truncated=bootstrap)
        program = make_program(cfg)
        cfg, trainer = program.cfg, program.trainer
        ts, _ = jax.jit(trainer.run)(jax.jit(trainer.init)(jax.random.PRNGKey(0)), cfg.test_interval)
        term = np.asarray(ts.data.buffer.data.terminated[: int(ts.data.buffer.size)])
        assert term[:, :-1].sum() == 0
        assert (term[:, -1] == (not bootstrap)).all()  # 25-step episodes end at slot 24


@pytest.mark.parametrize("alg", ["mappo", "ippo"])
def test_on_policy_learners_train_on_a_host_environment(tmp_path, alg):
    """The on-policy scheme through the host roll-out: the behaviour log-probabilities
    come back from the host loop as extras, and the run is reproducible."""
    def tiny(out):
        cfg = Config(alg=alg, env=SPREAD, env_args=DISCRETE, seeds=2, t_max=200,
                     test_interval=100, n_envs=4, ppo_minibatches=2, ppo_epochs=2,
                     test_episodes=3, hidden_dim=16)
        return train_run(cfg, out=out, progress=False, echo=lambda s: None)

    a = tiny(tmp_path / "a")
    tiny(tmp_path / "b")
    assert a["t_env"] == [200, 200]
    assert metrics_rows(tmp_path / "a") == metrics_rows(tmp_path / "b")
    rec = a["history"][-1]
    assert np.isfinite(rec["train/loss_policy"]) and np.isfinite(rec["train/loss_value"])
    assert a["history"][-1]["updates"] == 2 * 2 * 2  # 2 collections x 2 epochs x 2 minibatches


@pytest.mark.parametrize("target", ["mpe2.simple_tag_v3", "mpe2.simple_adversary_v3",
                                    "mpe2.simple_world_comm_v3:parallel_env"])
def test_a_competitive_environment_needs_an_explicit_team_reward(target, capfd):
    """Issue 16: predators and prey trained on their mean reward without a word. Now
    refused with one line naming the fix, accepted once team_reward is chosen."""
    from meigm.envs.pettingzoo import competitive_name
    from meigm.experiments.cli import main

    with pytest.raises(ConfigError, match=r"is competitive .* set env_args.team_reward=mean or sum"):
        make_env(f"pettingzoo:{target}", DISCRETE)
    assert main(["train", "--env", f"pettingzoo:{target}", "env_args.continuous_actions=false"]) == 2
    assert "is competitive" in capfd.readouterr().err
    env = make_env(f"pettingzoo:{target}", {**DISCRETE, "team_reward": "mean"})
    assert env.spec.n_agents >= 3
    env.close()
    assert competitive_name("mpe2.simple_spread_v3") is None
    assert competitive_name("my_pkg.simple_tagger") is None


def test_hasac_trains_on_a_host_environment(tmp_path):
    """HASAC (replay, per-agent actors) through the host roll-out: it learns from the
    PettingZoo episodes and logs finite losses and its temperatures."""
    cfg = Config(alg="hasac", env=SPREAD, env_args=DISCRETE, seeds=2, t_max=300,
                 test_interval=150, n_envs=4, batch_size=8, buffer_size=32, test_episodes=3,
                 hidden_dim=16, critic_hidden=16)
    out = train_run(cfg, out=tmp_path / "run", progress=False, echo=lambda s: None)
    assert out["t_env"] == [300, 300]
    rec = out["history"][-1]
    for key in ("train/loss_q", "train/loss_pi", "train/alpha", "train/alpha_critic"):
        assert np.isfinite(rec[key]), (key, rec)
