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
    #: what the act function returned beside the actions, each [B, T, N, ...]: the
    #: behaviour policy's log-probabilities and values for on-policy learners; empty for
    #: the replay learners (so their buffers hold nothing extra).
    extras: dict[str, jax.Array] = struct.field(default_factory=dict)


@struct.dataclass
class LearnerState:
    """Everything a learner updates: parameters, optimiser state and, for learners that
    bootstrap from target networks (the replay learners), the target parameters, which
    their data scheme refreshes (:class:`meigm.schemes.EpisodeReplay`)."""

    params: Params
    opt_state: Any
    target_params: Params | None = None


#: Name of the vmapped seed axis: :func:`meigm.program.compiled` vmaps the training and
#: evaluation programs over it, and what must be decided alike for every seed (the
#: update's length bucket, when a roll-out or a chunk stops) is agreed across it with
#: :func:`seed_max`.
SEEDS = "seeds"


def seed_max(x: jax.Array) -> jax.Array:
    """Max of ``x`` over the vmapped seeds (:data:`SEEDS`); ``x`` itself when called
    outside a seed vmap (one seed, e.g. ``jax.jit(trainer.run)``). The result is
    unbatched: code that branches or loops on it keeps a real branch or loop under the
    vmap instead of a select between the seeds' states."""
    try:
        return jax.lax.pmax(x, SEEDS)
    except NameError:  # the axis is not bound: a single seed
        return x
