"""Named state shared by roll-out, buffer and learners.

Shape legend: B episodes in a batch, T episode limit (time), N agents, A actions,
O observation size, S state size, E parallel environments.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
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


#: True while tracing one seed's lane of :func:`per_seed` (the seed axis is then explicit).
_ONE_LANE = contextvars.ContextVar("meigm_one_lane", default=False)


def seed_max(x: jax.Array) -> jax.Array:
    """Max of ``x`` over the vmapped seeds (:data:`SEEDS`); ``x`` itself when called
    outside a seed vmap (one seed, e.g. ``jax.jit(trainer.run)``) or inside one seed's
    lane of :func:`per_seed`. The result is unbatched: code that branches or loops on it
    keeps a real branch or loop under the vmap instead of a select between the seeds'
    states."""
    if _ONE_LANE.get():
        return x
    try:
        return jax.lax.pmax(x, SEEDS)
    except NameError:  # the axis is not bound: a single seed
        return x


def per_seed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a pure function of one seed's arrays) that, under the seed vmap, runs the
    seeds one after another (``lax.map``) instead of as one batched computation.

    Why: a ``lax.switch`` or loop on a per-seed value must be unbatched under ``vmap``, so
    :func:`seed_max` makes every seed take the branch the most demanding seed needs; an
    update's length bucket is such a branch, and on the CPU three protoss seeds in one
    program cost 1.32x what three programs cost with buckets and 0.98x without
    (benchmarks/README.md, "What makes packed seeds dearer"). Inside the lanes
    :func:`seed_max` is the identity, so each seed takes its own branch and computes
    exactly what it computes alone. Outside a vmap ``fn`` runs as it is.

    ``fn`` may close over per-seed values (a lane's learning rate, :mod:`meigm.lanes`):
    it is traced once to a jaxpr (as one lane: :func:`seed_max` the identity) whose
    captured values become explicit arguments of the custom-vmapped call, since
    ``custom_vmap`` takes no batched closures."""
    def call(*args: Any) -> Any:
        token = _ONE_LANE.set(True)
        try:
            closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        finally:
            _ONE_LANE.reset(token)
        out_tree = jax.tree.structure(out_shape)

        def converted(consts: list, *args: Any) -> Any:
            flat = jax.core.eval_jaxpr(closed.jaxpr, consts, *jax.tree.leaves(args))
            return jax.tree.unflatten(out_tree, flat)

        wrapped = jax.custom_batching.custom_vmap(converted)

        @wrapped.def_vmap
        def lanes(axis_size: int, in_batched: Any, *args: Any) -> tuple[Any, Any]:
            del axis_size
            flags = jax.tree.leaves(tuple(in_batched))
            leaves, tree = jax.tree.flatten(args)
            mapped = [x for x, b in zip(leaves, flags, strict=True) if b]

            def one(xs: list) -> Any:  # one lane: the batched leaves sliced, the rest shared
                it = iter(xs)
                lane = [next(it) if b else x for x, b in zip(leaves, flags, strict=True)]
                return converted(*jax.tree.unflatten(tree, lane))

            out = jax.lax.map(one, mapped)
            return out, jax.tree.map(lambda _: True, out)

        return wrapped(list(closed.consts), *args)

    return call
