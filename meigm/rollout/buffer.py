"""Episode replay buffer (pymarl's ``ReplayBuffer``) as a pure pytree.

Capacity is counted in whole episodes, each padded to the episode limit with a mask;
insertion is circular, sampling is uniform *without* replacement over the filled
slots, as pymarl does. Shapes as in :mod:`meigm.types` with a leading capacity C.
"""

from __future__ import annotations

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


def empty_episodes(spec: EnvSpec, n: int) -> Episodes:
    """Zeroed episodes [n, ...] sized for ``spec``."""
    t, na, a = spec.episode_limit, spec.n_agents, spec.n_actions
    return Episodes(
        obs=jnp.zeros((n, t + 1, na, spec.obs_dim), jnp.float32),
        state=jnp.zeros((n, t + 1, spec.state_dim), jnp.float32),
        avail=jnp.ones((n, t + 1, na, a), bool),
        actions=jnp.zeros((n, t, na), jnp.int32),
        reward=jnp.zeros((n, t), jnp.float32),
        terminated=jnp.zeros((n, t), bool),
        mask=jnp.zeros((n, t), bool),
    )


def buffer_bytes(spec: EnvSpec, capacity: int) -> int:
    """Memory of one seed's buffer, computed before anything is allocated."""
    shapes = jax.eval_shape(lambda: empty_episodes(spec, capacity))
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def buffer_init(spec: EnvSpec, capacity: int) -> EpisodeBuffer:
    return EpisodeBuffer(
        data=empty_episodes(spec, capacity),
        ptr=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def buffer_add(buf: EpisodeBuffer, episodes: Episodes) -> EpisodeBuffer:
    """Write E episodes [E, ...] at the circular write pointer."""
    capacity = buf.data.reward.shape[0]
    n = episodes.reward.shape[0]
    idx = (buf.ptr + jnp.arange(n)) % capacity
    data = jax.tree.map(lambda d, x: d.at[idx].set(x), buf.data, episodes)
    return EpisodeBuffer(
        data=data,
        ptr=(buf.ptr + n) % capacity,
        size=jnp.minimum(buf.size + n, capacity),
    )


def buffer_sample(buf: EpisodeBuffer, key: jax.Array, batch_size: int) -> Episodes:
    """``batch_size`` distinct filled episodes [B, ...], uniformly at random.

    Random scores with the empty slots pushed to the end, then the ``B`` best: a
    without-replacement draw with static shapes. The caller ensures size >= B.
    """
    capacity = buf.data.reward.shape[0]
    scores = jax.random.uniform(key, (capacity,))
    scores = jnp.where(jnp.arange(capacity) < buf.size, scores, 2.0)
    _, idx = jax.lax.top_k(-scores, batch_size)
    return jax.tree.map(lambda d: d[idx], buf.data)
