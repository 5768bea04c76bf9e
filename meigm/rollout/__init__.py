"""Roll-out (scanned, vmapped collection) and the episode replay buffer."""

from meigm.rollout.buffer import (
    EpisodeBuffer,
    buffer_add,
    buffer_bytes,
    buffer_init,
    buffer_sample,
    empty_episodes,
)
from meigm.rollout.collect import EpisodeStats, greedy_act, random_act, rollout

__all__ = [
    "EpisodeBuffer",
    "EpisodeStats",
    "buffer_add",
    "buffer_bytes",
    "buffer_init",
    "buffer_sample",
    "empty_episodes",
    "greedy_act",
    "random_act",
    "rollout",
]
