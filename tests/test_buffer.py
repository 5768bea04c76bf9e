"""Episode replay buffer (``meigm.rollout.buffer``).

Guards pymarl's replay semantics as a pure pytree: circular insertion keeps exactly the
newest ``capacity`` episodes (each episode is tagged by writing its index into
``reward``), the size saturates at capacity, a sampled batch holds distinct episodes from
filled slots only and every filled slot is reachable (uniform draw), and
``buffer_bytes`` — used to refuse configs that would not fit in memory — equals what is
actually allocated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from meigm.envs import EnvSpec
from meigm.rollout.buffer import (
    buffer_add,
    buffer_bytes,
    buffer_init,
    buffer_sample,
    empty_episodes,
)
from meigm.types import Episodes

SETTINGS = settings(max_examples=30, deadline=None, database=None)

SPEC = EnvSpec(name="test", n_agents=2, n_actions=3, obs_dim=4, state_dim=5, episode_limit=3)
CAPACITY = 6
BATCH = 3
KEYS = 400

_add = jax.jit(buffer_add)


@jax.jit
def _sample_many(buf, key):
    """KEYS independent batches [KEYS, BATCH, ...] from one buffer."""
    keys = jax.random.split(key, KEYS)
    return jax.vmap(lambda k: buffer_sample(buf, k, BATCH))(keys)


def tagged(first: int, n: int) -> Episodes:
    """n episodes whose reward rows and actions hold their index first..first+n-1 (numpy)."""
    t, na, a = SPEC.episode_limit, SPEC.n_agents, SPEC.n_actions
    tags = np.arange(first, first + n)
    return Episodes(
        obs=np.zeros((n, t + 1, na, SPEC.obs_dim), np.float32),
        state=np.zeros((n, t + 1, SPEC.state_dim), np.float32),
        avail=np.ones((n, t + 1, na, a), bool),
        actions=np.broadcast_to(tags[:, None, None], (n, t, na)).astype(np.int32),
        reward=np.broadcast_to(tags[:, None], (n, t)).astype(np.float32),
        terminated=np.zeros((n, t), bool),
        mask=np.ones((n, t), bool),
    )


def fill(chunks: list[int]):
    buf = buffer_init(SPEC, CAPACITY)
    total = 0
    for n in chunks:
        buf = _add(buf, tagged(total, n))
        total += n
    return buf, total


def test_empty_episodes_shapes_and_defaults():
    ep = empty_episodes(SPEC, 2)
    t, n, a = SPEC.episode_limit, SPEC.n_agents, SPEC.n_actions
    assert ep.obs.shape == (2, t + 1, n, SPEC.obs_dim)
    assert ep.state.shape == (2, t + 1, SPEC.state_dim)
    assert ep.avail.shape == (2, t + 1, n, a) and ep.avail.dtype == jnp.bool_
    assert ep.actions.shape == (2, t, n) and ep.actions.dtype == jnp.int32
    assert ep.reward.shape == ep.terminated.shape == ep.mask.shape == (2, t)
    assert bool(jnp.all(ep.avail)) and not bool(jnp.any(ep.mask))


@SETTINGS
@given(st.lists(st.integers(1, CAPACITY), min_size=1, max_size=6))
def test_circular_overwrite_keeps_the_newest_episodes(chunks):
    buf, total = fill(chunks)
    kept = min(total, CAPACITY)
    assert int(buf.size) == kept
    assert int(buf.ptr) == total % CAPACITY
    reward = np.asarray(buf.data.reward)
    # Every row of an episode carries the same tag: episodes are written whole.
    assert np.all(reward == reward[:, :1])
    assert np.all(np.asarray(buf.data.actions) == reward[:, :1, None].astype(np.int32))
    # Episode k lives in slot k % C; the filled slots hold exactly the newest ones.
    newest = np.arange(total - kept, total)
    np.testing.assert_array_equal(reward[newest % CAPACITY, 0], newest)
    assert np.all(np.asarray(buf.data.mask)[newest % CAPACITY])
    empty = np.setdiff1d(np.arange(CAPACITY), newest % CAPACITY)
    assert not np.any(np.asarray(buf.data.mask)[empty])


def test_size_saturates_at_capacity():
    buf = buffer_init(SPEC, CAPACITY)
    sizes = []
    for i in range(5):
        buf = _add(buf, tagged(2 * i, 2))
        sizes.append(int(buf.size))
    assert sizes == [2, 4, 6, 6, 6]
    assert int(buf.ptr) == 10 % CAPACITY


@SETTINGS
@given(st.lists(st.integers(1, CAPACITY), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_samples_are_distinct_filled_episodes(chunks, seed):
    buf, total = fill(chunks)
    kept = min(total, CAPACITY)
    if kept < BATCH:  # the caller guarantees size >= batch
        buf, total = fill([*chunks, BATCH])
        kept = min(total, CAPACITY)
    batch = _sample_many(buf, jax.random.PRNGKey(seed))
    tags = np.asarray(batch.reward)[:, :, 0]  # [KEYS, BATCH]
    assert batch.obs.shape == (KEYS, BATCH, *buf.data.obs.shape[1:])
    # Only the newest `kept` episodes are in the buffer, and every draw is distinct.
    assert np.all(np.isin(tags, np.arange(total - kept, total)))
    assert all(len(set(row)) == BATCH for row in tags.tolist())
    assert np.all(np.asarray(batch.mask))
    # Every filled slot is reachable; with 400 draws each has expected count 400*B/kept.
    counts = np.array([np.sum(tags == k) for k in range(total - kept, total)])
    expected = KEYS * BATCH / kept
    assert np.all(np.abs(counts - expected) < 0.25 * expected + 20)


def test_samples_whole_episodes_consistently():
    # All fields of a sampled episode come from the same slot.
    buf, _ = fill([4, 4])
    ep = _sample_many(buf, jax.random.PRNGKey(0))
    tags = np.asarray(ep.reward)[:, :, 0]
    np.testing.assert_array_equal(np.asarray(ep.actions)[:, :, 0, 0], tags.astype(np.int32))


def test_buffer_bytes_matches_the_allocation():
    for capacity in (1, 7, 64):
        buf = buffer_init(SPEC, capacity)
        allocated = sum(x.nbytes for x in jax.tree.leaves(buf.data))
        assert buffer_bytes(SPEC, capacity) == allocated
        # Independent count: float32 obs/state/reward, bool avail/terminated/mask, int32 actions.
        t, n, a, o, s = 3, 2, 3, 4, 5
        per_episode = 4 * (t + 1) * n * o + 4 * (t + 1) * s + (t + 1) * n * a + 4 * t * n
        per_episode += 4 * t + t + t
        assert buffer_bytes(SPEC, capacity) == capacity * per_episode
        # The buffer pytree holds only that plus its two int32 counters.
        assert sum(x.nbytes for x in jax.tree.leaves(buf)) == allocated + 8


def test_a_narrow_buffer_holds_obs_and_states_at_half_width():
    """``replay_dtype``: observations and states (nine tenths of a SMAX buffer) are stored
    in 16 bits and the rest as before, so the paper's 5,000 episodes of a 20-unit race fit
    a 24 GiB machine; ``buffer_bytes`` (the memory check's count) says so exactly."""
    t, n, o, s = 3, 2, 4, 5
    floats = (t + 1) * n * o + (t + 1) * s
    for dtype in ("float16", "bfloat16"):
        buf = buffer_init(SPEC, CAPACITY, dtype)
        assert buf.data.obs.dtype == buf.data.state.dtype == jnp.dtype(dtype)
        assert buf.data.reward.dtype == jnp.float32  # targets keep their precision
        allocated = sum(x.nbytes for x in jax.tree.leaves(buf.data))
        assert buffer_bytes(SPEC, CAPACITY, dtype) == allocated
        assert buffer_bytes(SPEC, CAPACITY) - allocated == CAPACITY * 2 * floats


@SETTINGS
@given(st.sampled_from(["float16", "bfloat16"]),
       st.floats(-1e4, 1e4, allow_nan=False, width=32), st.integers(0, 2**31 - 1))
def test_a_narrow_buffer_rounds_only_what_it_stores(dtype, scale, seed):
    """Sampled batches are float32, and their observations and states are what was added,
    rounded to the stored width (relative error at most half an ulp: 2^-11 for float16,
    2^-8 for bfloat16; below float16's smallest normal, 6.1e-5, its subnormals' absolute
    half-step 2^-25; zeros and small integers stay exact); rewards, actions and masks come
    back exactly. Values span |x| ≤ 1e4, inside float16's range."""
    rng = np.random.default_rng(seed)
    ep = tagged(0, CAPACITY)
    ep = ep.replace(obs=(scale * rng.standard_normal(ep.obs.shape)).astype(np.float32),
                    state=np.round(rng.standard_normal(ep.state.shape) * 8).astype(np.float32))
    buf = _add(buffer_init(SPEC, CAPACITY, dtype), ep)
    batch = buffer_sample(buf, jax.random.PRNGKey(seed % 1000), CAPACITY)
    assert batch.obs.dtype == batch.state.dtype == jnp.float32
    order = np.asarray(batch.reward)[:, 0].astype(int)  # each episode's tag
    eps, tiny = {"float16": (2.0**-11, 2.0**-25), "bfloat16": (2.0**-8, 1e-38)}[dtype]
    obs, want = np.asarray(batch.obs), ep.obs[order]
    assert np.all(np.abs(obs - want) <= eps * np.abs(want) + tiny)
    np.testing.assert_array_equal(np.asarray(batch.state), ep.state[order])  # small integers
    np.testing.assert_array_equal(np.asarray(batch.actions), ep.actions[order])
    np.testing.assert_array_equal(np.asarray(batch.mask), ep.mask[order])
