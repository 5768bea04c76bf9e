"""Episode replay buffer (pymarl's ``ReplayBuffer``) as a pure pytree.

Capacity is counted in whole episodes, each padded to the episode limit with a mask;
insertion is circular, sampling is uniform *without* replacement over the filled
slots, as pymarl does. Shapes as in :mod:`meigm.types` with a leading capacity C.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from meigm.envs import EnvSpec
from meigm.types import Episodes


@struct.dataclass
class EpisodeBuffer:
    data: Episodes  # every field [C, ...]
    ptr: jax.Array  # [] next slot to write
    size: jax.Array  # [] filled slots


def empty_episodes(spec: EnvSpec, n: int, dtype: str = "float32") -> Episodes:
    """Zeroed episodes [n, ...] sized for ``spec``, observations and states in ``dtype``."""
    t, na, a = spec.episode_limit, spec.n_agents, spec.n_actions
    return Episodes(
        obs=jnp.zeros((n, t + 1, na, spec.obs_dim), dtype),
        state=jnp.zeros((n, t + 1, spec.state_dim), dtype),
        avail=jnp.ones((n, t + 1, na, a), bool),
        actions=jnp.zeros((n, t, na), jnp.int32),
        reward=jnp.zeros((n, t), jnp.float32),
        terminated=jnp.zeros((n, t), bool),
        mask=jnp.zeros((n, t), bool),
    )


def buffer_bytes(spec: EnvSpec, capacity: int, dtype: str = "float32") -> int:
    """Memory of one seed's buffer, computed before anything is allocated."""
    shapes = jax.eval_shape(lambda: empty_episodes(spec, capacity, dtype))
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def buffer_init(spec: EnvSpec, capacity: int, dtype: str = "float32") -> EpisodeBuffer:
    """An empty buffer of ``capacity`` episodes storing observations and states in
    ``dtype`` (``Config.replay_dtype``): allocated in it, never as float32 first."""
    return EpisodeBuffer(
        data=empty_episodes(spec, capacity, dtype),
        ptr=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def buffer_add(buf: EpisodeBuffer, episodes: Episodes, write: jax.Array | bool = True) -> EpisodeBuffer:
    """Write E episodes [E, ...] at the circular write pointer; where ``write`` [] is
    false the buffer is left as it was (a frozen seed).

    The gate touches only the E slots written: selecting between two whole buffers
    would copy gigabytes per collection (the paper's buffer is ~4 GB per seed).
    """
    capacity = buf.data.reward.shape[0]
    n = episodes.reward.shape[0]
    idx = (buf.ptr + jnp.arange(n)) % capacity
    write = jnp.asarray(write)
    # cast to the buffer's own dtypes (observations and states may be stored narrower)
    data = jax.tree.map(lambda d, x: d.at[idx].set(jnp.where(write, x.astype(d.dtype), d[idx])),
                        buf.data, episodes)
    return EpisodeBuffer(
        data=data,
        ptr=jnp.where(write, (buf.ptr + n) % capacity, buf.ptr),
        size=jnp.where(write, jnp.minimum(buf.size + n, capacity), buf.size),
    )


def buffer_sample(buf: EpisodeBuffer, key: jax.Array, batch_size: int) -> Episodes:
    """``batch_size`` distinct filled episodes [B, ...], uniformly at random, their
    floating fields in float32 whatever the buffer stores them in.

    Random scores with the empty slots pushed to the end, then the ``B`` best: a
    without-replacement draw with static shapes. The caller ensures size >= B.
    """
    capacity = buf.data.reward.shape[0]
    scores = jax.random.uniform(key, (capacity,))
    scores = jnp.where(jnp.arange(capacity) < buf.size, scores, 2.0)
    _, idx = jax.lax.top_k(-scores, batch_size)

    def take(d: jax.Array) -> jax.Array:
        x = d[idx]  # only the batch is widened, never the buffer
        return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(take, buf.data)


def length_buckets(episode_limit: int, n_buckets: int) -> tuple[int, ...]:
    """The batch lengths the update is compiled for: ``n_buckets`` evenly spaced steps up
    to ``episode_limit`` (the last is always the limit), e.g. (25, 50, 75, 100) for 4 of
    100. Fewer when the limit is shorter than ``n_buckets``."""
    k = max(1, min(n_buckets, episode_limit))
    return tuple(sorted({math.ceil(episode_limit * j / k) for j in range(1, k + 1)}))


def longest_episode(episodes: Episodes) -> jax.Array:
    """Real steps of the longest episode in a batch [B, ...] -> [] int32."""
    return jnp.max(jnp.sum(episodes.mask, axis=1)).astype(jnp.int32)


def trim_episodes(episodes: Episodes, length: int) -> Episodes:
    """The first ``length`` steps (static) of padded episodes [B, T(+1), ...] ->
    [B, length(+1), ...], with the step after the last kept one.

    Exact for every episode no longer than ``length``: a real step ``t < length`` only
    ever looks at step ``t + 1`` (its next observation, state and available actions, kept
    here) and at later steps' rewards and values through the λ-return, which stops at the
    first padded step — and every step from ``length`` on is padding.
    """
    def cut(x: jax.Array) -> jax.Array:
        steps = length + 1 if x.shape[1] == episodes.mask.shape[1] + 1 else length
        return x[:, :steps]

    return jax.tree.map(cut, episodes)
