"""Per-seed budgets and evaluation grids, and the length-following update.

Seeds whose episodes have very different lengths must still each train for exactly
their own ``t_max`` and be evaluated on their own ``test_interval`` grid; a seed that
has reached its target must not move; and an update on a batch trimmed to its longest
episode must equal the full-length update up to float reassociation.
"""

from __future__ import annotations

import functools

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY
from hypothesis import given, settings
from hypothesis import strategies as st

from meigm import config
from meigm.envs.base import JaxMARLEnv
from meigm.envs.matrix import MatrixGame
from meigm.errors import ConfigError
from meigm.experiments.run import train_run
from meigm.ops import sample_masked_per_step
from meigm.program import (
    compiled,
    eval_target,
    init_seeds,
    make_program,
    resolve_config,
    seed_keys,
)
from meigm.rollout import greedy_act, random_act, rollout
from meigm.rollout.buffer import length_buckets, longest_episode, trim_episodes
from meigm.schemes import bucketed_update, grouped_gradients
from meigm.types import SEEDS

LIMIT = 20  # episode limit of the stopping game
N_ENVS = 2


class StoppingGame(MatrixGame):
    """A repeated 2×2 game that ends as soon as agent 0 plays action 0.

    With ε = 0 and no learning, each seed's episodes have the length its initial greedy
    policy gives them: 1 step for some seeds, up to the limit for others.
    """

    def step_env(self, key, state, actions):
        obs, new, rewards, _, info = super().step_env(key, state, actions)
        done = jnp.logical_or(new.done, actions[self.agents[0]] == 0)
        new = new.replace(done=done)
        return obs, new, rewards, {a: done for a in self.agents} | {"__all__": done}, info


def stopping_env() -> JaxMARLEnv:
    game = StoppingGame(np.ones((2, 2)), steps=LIMIT)
    return JaxMARLEnv(game, name="test:stopping", episode_limit=LIMIT,
                      state_fn=lambda s: jax.nn.one_hot(s.t, LIMIT + 1), default_t_max=400)


def stopping_cfg(**extra):
    # ε = 0 everywhere and a batch that is never reached: fixed greedy policies per seed.
    values = {**dict(alg="qmix", env="matrix:table1", seeds=6, t_max=300, test_interval=70,
                     n_envs=N_ENVS, epsilon_start=0.0, epsilon_finish=0.0, batch_size=64,
                     buffer_size=64, hidden_dim=8, mixing_embed=4, hypernet_embed=8,
                     test_episodes=2), **extra}
    return config.from_dict(values)


@pytest.fixture(scope="module")
def stopping_run():
    return train_run(stopping_cfg(), progress=False, env=stopping_env())


def test_seeds_with_very_different_episode_lengths_each_get_their_budget(stopping_run):
    res = stopping_run
    by_seed = {s: [r for r in res["history"] if r["seed"] == s] for s in res["seeds"]}
    lengths = {s: np.mean([r["train/length"] for r in recs]) for s, recs in by_seed.items()}
    assert min(lengths.values()) < 2 and max(lengths.values()) > 8, lengths  # very different
    for s, t in zip(res["seeds"], res["t_env"], strict=True):
        assert 300 <= t < 300 + N_ENVS * LIMIT, (s, t)


def test_evaluation_points_fall_on_each_seeds_own_grid(stopping_run):
    res = stopping_run
    cfg = res["config"]
    targets = [eval_target(cfg, k) for k in range(5)]
    assert targets == [70, 140, 210, 280, 300]
    for s in res["seeds"]:
        steps = res["eval_t_env"][str(s)]
        assert len(steps) == len(targets)
        for t, target in zip(steps, targets, strict=True):
            assert target <= t < target + N_ENVS * LIMIT, (s, steps)
    final = {rec["seed"]: rec["t_env"] for rec in res["final"]}
    assert [final[s] for s in res["seeds"]] == res["t_env"]


def test_a_seed_at_its_target_is_frozen():
    cfg = config.from_dict(dict(alg="me_qmix", env="matrix:table1", seeds=2, t_max=400,
                                test_interval=100)).resolve(400)
    trainer = make_program(cfg).trainer
    run, _ = compiled(trainer)
    state = init_seeds(trainer.init, seed_keys(cfg))
    state, _ = run(state, 200)  # both seeds learn for a while
    after, metrics = run(state, jnp.asarray([200, 300]))  # seed 0 is at its target already
    before = jax.device_get(state)
    after = jax.device_get(after)
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(np.asarray(old)[0], np.asarray(new)[0])  # bit for bit
    assert int(after.t_env[1]) >= 300
    assert not np.array_equal(np.asarray(before.learner.params["log_alpha"])[1],
                              np.asarray(after.learner.params["log_alpha"])[1])
    assert float(metrics["train/loss_q"][0]) == 0.0  # no iteration: nothing to average


def test_length_buckets():
    assert length_buckets(100, 4) == (25, 50, 75, 100)
    assert length_buckets(100, 1) == (100,)
    assert length_buckets(1, 4) == (1,)
    assert length_buckets(3, 8) == (1, 2, 3)
    assert length_buckets(10, 3) == (4, 7, 10)


def _short_episode_batch(alg: str, seed: int = 0, longest: int = 5):
    """A real batch of 12-step matrix episodes whose mask is cut to 1–``longest`` real
    steps (some terminated, some truncated), with garbage left in the padding."""
    cfg = config.build(None, [*TINY, "t_max=400", "test_interval=96", "batch_size=8",
                              "buffer_size=16", "env_args.steps=12"], alg=alg, env="matrix:table1")
    program = make_program(cfg)
    cfg, env, learner = program.cfg, program.env, program.learner
    ls = learner.init(jax.random.PRNGKey(seed))
    batch, _ = jax.jit(lambda k: rollout(  # uniform random actions: only the data matters
        env, learner.agent.apply, ls.params["agent"],
        random_act,
        None, learner.hidden_dim, k, cfg.batch_size))(jax.random.PRNGKey(seed + 1))
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, longest + 1, size=cfg.batch_size)
    lengths[0] = longest
    t = np.arange(12)[None]
    mask = t < lengths[:, None]
    terminated = (t == lengths[:, None] - 1) & (rng.random((cfg.batch_size, 1)) < 0.5)
    batch = batch.replace(mask=jnp.asarray(mask), terminated=jnp.asarray(terminated),
                          reward=jnp.asarray(rng.normal(size=(cfg.batch_size, 12)), jnp.float32))
    return learner, ls, batch


# qmix and me_qplex slow-marked for CI time: me_qmix's and fop's losses cover the mixer
# and the actor-critic paths, and the grouped test below takes every family
@pytest.mark.parametrize("alg", ["me_qmix", pytest.param("qmix", marks=pytest.mark.slow),
                                 pytest.param("me_qplex", marks=pytest.mark.slow), "fop"])
def test_trimmed_update_equals_the_full_length_update(alg):
    learner, ls, batch = _short_episode_batch(alg)
    assert int(longest_episode(batch)) == 5
    short = trim_episodes(batch, 6)  # the bucket that holds the longest episode
    assert short.obs.shape[1] == 7 and short.reward.shape[1] == 6
    keys = jax.random.split(jax.random.PRNGKey(5), batch.mask.shape[0])

    def loss_and_grad(ep):
        return jax.jit(jax.grad(learner.loss, has_aux=True))(ls.params, ls.target_params, ep, keys)

    g_full, m_full = loss_and_grad(batch)
    g_short, m_short = loss_and_grad(short)
    for k in m_full:
        np.testing.assert_allclose(m_short[k], m_full[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_short), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_the_trainer_picks_the_bucket_of_the_longest_episode():
    """Through ``absorb``: the trainer's bucketed update equals ``learner.update`` on the
    whole batch, for a batch whose longest episode is 5 of 12 steps (bucket 6 of 3, 6, 9, 12)."""
    cfg = config.build(None, [*TINY, "t_max=400", "test_interval=96", "batch_size=8",
                              "buffer_size=16", "env_args.steps=12", "length_buckets=4"],
                       alg="me_qmix", env="matrix:table1")
    trainer = make_program(cfg).trainer
    assert trainer.buckets == (3, 6, 9, 12)
    learner, ls, batch = _short_episode_batch("me_qmix")
    key = jax.random.PRNGKey(3)
    full = jax.jit(learner.update)(ls, batch, key)
    bucketed = jax.jit(lambda ls, b, k: bucketed_update(learner, trainer.buckets, ls, b, k))(ls, batch, key)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(bucketed), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


# each learner family once and each group count at least once (a compile per case; the
# property test below covers every group count on me_qmix)
@pytest.mark.parametrize("alg, groups", [("me_qmix", 8), ("qmix", 2), ("me_qplex", 4), ("fop", 2)])
def test_length_sorted_groups_give_the_whole_batch_gradient(alg, groups):
    """Split into length-sorted groups, each trimmed to its own bucket, and weighted by
    its share of the real steps, the gradient and metrics are the whole full-length
    batch's (episodes of 1–12 steps: the groups fall in different buckets)."""
    learner, ls, batch = _short_episode_batch(alg, seed=1, longest=12)
    lengths = np.asarray(jnp.sum(batch.mask, axis=1))
    assert lengths.max() == 12 and lengths.min() < 4  # the groups need different buckets
    keys = jax.random.split(jax.random.PRNGKey(7), batch.mask.shape[0])
    g_full, m_full = jax.jit(jax.grad(learner.loss, has_aux=True))(
        ls.params, ls.target_params, batch, keys)
    g_grp, m_grp = jax.jit(lambda p, t, b, k: grouped_gradients(
        learner, (3, 6, 9, 12), groups, p, t, b, k))(ls.params, ls.target_params, batch, keys)
    for k in m_full:
        np.testing.assert_allclose(m_grp[k], m_full[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_grp), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@functools.cache
def _grouped_vs_full(groups: int):
    """me_qmix's batch and its whole-batch and grouped gradient functions (compiled once)."""
    learner, ls, batch = _short_episode_batch("me_qmix", seed=3, longest=12)
    full = jax.jit(jax.grad(learner.loss, has_aux=True))
    grouped = jax.jit(lambda p, t, b, k: grouped_gradients(learner, (3, 6, 9, 12), groups, p, t, b, k))
    return ls, batch, full, grouped


@settings(max_examples=12, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=8, max_size=8),
       ends=st.lists(st.booleans(), min_size=8, max_size=8),
       scale=st.sampled_from([1e-3, 1.0, 1e3]), groups=st.sampled_from([2, 4, 8]))
def test_groups_give_the_whole_batch_gradient_for_any_lengths(lengths, ends, scale, groups):
    """Any mix of lengths (all equal, all 1, all at the limit, near-ties), terminated or
    truncated, rewards from 1e-3 to 1e3: the grouped gradient is the whole batch's."""
    ls, batch, full, grouped = _grouped_vs_full(groups)
    lengths = np.asarray(lengths)
    t = np.arange(12)[None]
    rewards = np.random.default_rng(int(lengths.sum())).normal(size=(8, 12)) * scale
    batch = batch.replace(mask=jnp.asarray(t < lengths[:, None]),
                          terminated=jnp.asarray((t == lengths[:, None] - 1) & np.asarray(ends)[:, None]),
                          reward=jnp.asarray(rewards, jnp.float32))
    keys = jax.random.split(jax.random.PRNGKey(int(lengths[0])), 8)
    g_full, m_full = full(ls.params, ls.target_params, batch, keys)
    g_grp, m_grp = grouped(ls.params, ls.target_params, batch, keys)
    for k in m_full:
        np.testing.assert_allclose(m_grp[k], m_full[k], rtol=1e-4,
                                   atol=1e-6 * max(1.0, abs(float(m_full[k]))), err_msg=k)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_grp), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * max(1e-3, float(np.abs(a).max())))


def test_the_grouped_update_is_the_learners_update():
    """Through the optimiser step: ``bucketed_update`` with groups gives the state
    ``learner.update`` gives on the whole batch with the same key."""
    learner, ls, batch = _short_episode_batch("me_qmix", seed=2, longest=12)
    key = jax.random.PRNGKey(3)
    full = jax.jit(learner.update)(ls, batch, key)
    grouped = jax.jit(lambda ls, b, k: bucketed_update(learner, (3, 6, 9, 12), ls, b, k, 4))(
        ls, batch, key)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(grouped), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_each_episode_samples_from_its_own_key_whatever_its_company():
    """The soft targets' next actions: an episode's draws depend on its key and its own
    steps only, not on its place in the batch, the batch's other episodes or its length."""
    k_logits, k_avail, k_keys = jax.random.split(jax.random.PRNGKey(0), 3)
    logits = jax.random.normal(k_logits, (6, 10, 3, 5))
    avail = jax.random.bernoulli(k_avail, 0.7, (6, 10, 3, 5)).at[..., 0].set(True)
    keys = jax.random.split(k_keys, 6)
    whole = sample_masked_per_step(keys, logits, avail)  # [6, 10, 3]
    perm = np.array([4, 1, 5, 0, 3, 2])
    np.testing.assert_array_equal(sample_masked_per_step(keys[perm], logits[perm], avail[perm]),
                                  whole[perm])
    np.testing.assert_array_equal(
        sample_masked_per_step(keys[2:4], logits[2:4, :6], avail[2:4, :6]), whole[2:4, :6])
    assert bool(jnp.all(jnp.take_along_axis(avail, whole[..., None], -1)))


def test_length_groups_must_divide_the_batch_and_need_a_separable_loss():
    with pytest.raises(ConfigError, match=r"length_groups \(5\) must divide batch_size \(8\)"):
        config.build(None, [*TINY, "batch_size=8", "length_groups=5"], alg="qmix",
                     env="matrix:table1")
    cfg = config.build(None, [*TINY, "batch_size=8", "buffer_size=16", "length_groups=2"],
                       alg="hasac", env="matrix:table1")
    with pytest.raises(ConfigError, match="separable by episode; 'hasac' takes 1"):
        make_program(cfg)


def test_smax_groups_by_default_where_the_learner_can():
    """The scenario's 8 groups apply to learners with a separable loss, in equal groups
    (the largest divisor of the batch up to 8), and to no other learner."""
    def resolved(alg, *extra):
        return resolve_config(config.build(None, list(extra), alg=alg, env="smax:3m"))[0]

    assert (resolved("me_qmix").length_groups, resolved("me_qmix").length_buckets) == (8, 8)
    assert resolved("qmix", "batch_size=12", "buffer_size=64").length_groups == 4
    assert resolved("qmix", "length_groups=2").length_groups == 2  # set explicitly: kept
    assert resolved("hasac").length_groups == 1
    assert resolved("mappo").length_groups == 1
    assert resolve_config(config.build(None, [], alg="me_qmix", env="matrix:table1"))[0].length_groups == 1


@pytest.mark.parametrize("groups", [1, 2])
def test_the_seed_vmapped_program_computes_one_bucket_not_all_and_no_update_while_filling(groups):
    """Under the seed vmap two branches must stay branches. The bucket index must stay
    unbatched so that ``lax.switch`` computes one bucket: a batched index turns it into a
    select that computes every bucket (the 2.5x slow-down ``benchmarks/throughput.py``
    once measured). And the update must sit under a real ``cond`` on "some seed's buffer
    holds a batch": on the per-seed predicate the vmap made it a select, so every
    collection paid a whole update while the buffer filled (~20 s each at Overcooked's
    paper batch). Every other ``cond`` outside the update has a per-seed predicate and
    becomes a select, so the learn-or-skip branch is the one cond outside it; inside it
    the seeds' updates run one after another (``meigm.types.per_seed``), each lane behind
    a cond on its own flag (frozen at the chunk's target or still filling: it skips the
    update's work) and with its own switch over the buckets (and the update's own conds,
    real branches there)."""
    cfg = config.build(None, [*TINY, "t_max=400", "test_interval=96", "batch_size=8",
                              "buffer_size=16", "env_args.steps=12", "length_buckets=4",
                              f"length_groups={groups}"],
                       alg="me_qmix", env="matrix:table1", seeds=2)
    trainer = make_program(cfg).trainer
    state = jax.eval_shape(jax.vmap(trainer.init), seed_keys(cfg))
    jaxpr = jax.make_jaxpr(jax.vmap(trainer.run, axis_name=SEEDS))(state, jnp.zeros(2, jnp.int32))
    conds = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "cond"]

    def within(e):
        return [i for b in e.params["branches"] for i in _equations(b.jaxpr) if i.primitive.name == "cond"]

    # two-way conds around the update (the one with the bucket switch inside)
    around = [e for e in conds if len(e.params["branches"]) == 2
              and any(len(i.params["branches"]) == 4 for i in within(e))]
    assert len(around) == 2  # learn-or-skip for all seeds, and each lane's run-or-stay
    learn_or_skip = [e for e in around if any(i is not e and i in within(e) for i in around)]
    assert len(learn_or_skip) == 1
    inner = within(learn_or_skip[0])
    assert sum(1 for e in inner if e in around) == 1  # the lane's own run-or-stay, inside
    assert [len(e.params["branches"]) for e in inner].count(4) == 1  # one switch per lane
    assert [len(e.params["branches"]) for e in conds].count(4) == 1  # and nowhere else
    assert len(conds) == 1 + len(inner)  # no cond outside the learn-or-skip branch


def test_no_seed_learns_before_its_buffer_holds_a_batch_and_then_every_seed_does():
    """The learn-or-skip branch is taken on whether *any* seed can learn; a seed that
    cannot keeps its parameters. With seeds in step, updates start at the collection
    that fills the batch, for every seed at once."""
    cfg = config.build(None, [*TINY, "t_max=400", "batch_size=6", "buffer_size=16",
                              "n_envs=2", "env_args.steps=1"],
                       alg="qmix", env="matrix:table1", seeds=2)
    trainer = make_program(cfg).trainer
    run, _ = compiled(trainer)
    ts = init_seeds(trainer.init, seed_keys(cfg))
    before = ts.learner.params
    for k in range(1, 5):  # 2 episodes of 1 step per collection: the batch is full at k=3
        ts, _ = run(ts, k * 2)
        moved = [not all(np.array_equal(a[s], b[s]) for a, b in
                         zip(jax.tree.leaves(ts.learner.params), jax.tree.leaves(before), strict=True))
                 for s in range(2)]
        assert moved == [k >= 3] * 2, k
        assert np.all(np.asarray(ts.updates) == max(0, k - 2))


def _equations(jaxpr):
    """Every equation of a jaxpr, nested ones included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _equations(sub)


def _greedy_collections(seeds: int):
    """One seed's greedy roll-out on the stopping game, ``collect(params, key, active=True)``,
    and every seed's initial parameters and key ([seeds, ...])."""
    env = stopping_env()
    program = make_program(stopping_cfg(seeds=seeds), env)
    learner = program.learner
    keys = seed_keys(program.cfg)
    params = jax.vmap(lambda k: learner.init(k).params)(keys)

    def collect(p, k, active=True):
        return rollout(env, learner.agent.apply, p["agent"], greedy_act, p, learner.hidden_dim,
                       k, N_ENVS, active=active)

    return collect, params, keys


def test_a_frozen_seed_does_not_keep_the_others_stepping():
    """A seed frozen at its chunk's target (``active`` false: its collection is thrown
    away) no longer keeps the vmapped roll-out going: the loop stops when the active
    seeds' episodes have ended, and what the active seeds record is unchanged."""
    collect, params, keys = _greedy_collections(seeds=4)
    run = jax.jit(jax.vmap(collect, axis_name=SEEDS))
    everyone = run(params, keys, jnp.ones(4, bool))
    lengths = np.asarray(everyone[1].lengths).max(axis=1)  # [seeds] longest episode
    longest = int(np.argmax(lengths))
    assert lengths[longest] > lengths.min(), lengths
    active = np.arange(4) != longest
    some = run(params, keys, jnp.asarray(active))
    # the frozen seed was cut where the active seeds' episodes ended
    steps = np.asarray(some[0].mask).sum(axis=2).max(axis=1)  # [seeds]
    assert steps[longest] == lengths[active].max() < lengths[longest]
    for a, b in zip(jax.tree.leaves(everyone), jax.tree.leaves(some), strict=True):
        np.testing.assert_array_equal(np.asarray(a)[active], np.asarray(b)[active])


def test_a_rollout_stops_when_every_episode_has_ended_and_records_the_same():
    """Seeds vmapped together stop collecting only when the longest episode of any seed
    has ended; a seed whose episodes are all short records, in the extra padded steps,
    exactly what it records alone, where the roll-out stops at its own episodes' end."""
    collect, params, keys = _greedy_collections(seeds=4)
    cfg = stopping_cfg(seeds=4)

    together = jax.jit(jax.vmap(collect, axis_name=SEEDS))(params, keys)
    lengths = np.asarray(together[1].lengths)  # [seeds, E]
    assert lengths.max(axis=1).min() < lengths.max(), lengths  # some seed ends earlier
    for s in range(cfg.seeds):
        alone = jax.jit(collect)(jax.tree.map(lambda x, s=s: x[s], params), keys[s])
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(together), strict=True):
            a, b = np.asarray(a), np.asarray(b)[s]
            if np.issubdtype(a.dtype, np.floating):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(a, b)
        ep = alone[0]
        last = int(np.asarray(alone[1].lengths).max())
        # the slots after the end hold the frozen last time step, action 0 and mask 0
        np.testing.assert_array_equal(np.asarray(ep.mask)[:, last:], False)
        np.testing.assert_array_equal(np.asarray(ep.actions)[:, last:], 0)
        final = np.asarray(ep.obs)[:, -1:]
        short = np.asarray(alone[1].lengths) == last
        np.testing.assert_array_equal(np.asarray(ep.obs)[short, last + 1:],
                                      np.broadcast_to(final[short], ep.obs[short, last + 1:].shape))
