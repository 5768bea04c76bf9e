"""Named state shared by roll-out, buffer and learners.

Shape legend: B episodes in a batch, T episode limit (time), N agents, A actions,
O observation size, S state size, E parallel environments.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

Params = dict[str, Any]


@struct.dataclass
class Episodes:
    """Whole episodes padded to the episode limit T (pymarl's episode batch).

    Per-step quantities seen *before* acting have T+1 entries (the last is the state
    after the final step, needed for bootstrapping); per-transition ones have T.
    """

    obs: jax.Array  # [B, T+1, N, O]
    state: jax.Array  # [B, T+1, S]
    avail: jax.Array  # [B, T+1, N, A] bool
    actions: jax.Array  # [B, T, N] int32
    reward: jax.Array  # [B, T]
    terminated: jax.Array  # [B, T] bool: a true terminal state after step t
    mask: jax.Array  # [B, T] bool: step t is a real step (not padding)


@struct.dataclass
class LearnerState:
    """Everything a learner updates: online/target parameters and optimiser state."""

    params: Params
    target_params: Params
    opt_state: Any
