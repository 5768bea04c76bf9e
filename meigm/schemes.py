"""Data schemes: how a learner family turns collected episodes into updates.

The training program (:mod:`meigm.program`) collects ``n_envs`` whole episodes per
iteration for every learner alike; what happens to them next belongs to the learner's
family, behind one small interface (:class:`DataScheme`):

* :class:`EpisodeReplay` — off-policy (ME-IGM, QMIX/QPLEX/VDN, FOP): store the episodes
  in a replay buffer, once it holds ``batch_size`` of them run ``updates_per_collect``
  updates on uniformly sampled batches (each trimmed to its longest real episode,
  :func:`bucketed_update`), and refresh the target networks — every
  ``target_update_interval`` episodes (pymarl2) or by Polyak averaging.
* :class:`OnPolicy` — the PPO family: the episodes just collected are the batch; the
  learner's ``update`` uses them (several epochs of minibatches inside it) and they are
  dropped. Nothing is stored between iterations.

A scheme's state is per seed, lives in ``TrainState.data`` and is checkpointed with the
rest of the training state (its fields under ``train/``; a ``buffer`` field is left
out of final checkpoints). Every scheme honours ``active`` (a frozen seed): where it is
false, its state comes back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import optax
from flax import struct

from meigm.config import Config
from meigm.envs import EnvSpec
from meigm.errors import ConfigError
from meigm.learners import Learner
from meigm.learners.common import apply_gradients
from meigm.rollout import EpisodeBuffer, buffer_add, buffer_bytes, buffer_init, buffer_sample
from meigm.rollout.buffer import empty_episodes, longest_episode, trim_episodes
from meigm.types import Episodes, LearnerState, Params, per_seed, seed_max


class DataScheme(Protocol):
    """What the training program needs from a learner family's data handling."""

    def init(self) -> Any:
        """One seed's scheme state (a pytree; ``()`` when there is none)."""

    def memory_bytes(self) -> int:
        """Bytes one seed's scheme state will take, before anything is allocated."""

    def metric_shapes(self, collection: Callable[[], Episodes]) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes of the update metrics :meth:`absorb` reports; ``collection()`` gives the
        shapes of one collection (``jax.ShapeDtypeStruct`` leaves [E, ...]) if needed."""

    def absorb(self, data: Any, ls: LearnerState, episodes: Episodes, key: jax.Array,
               n_episodes: jax.Array, active: jax.Array
               ) -> tuple[Any, LearnerState, dict[str, jax.Array], jax.Array]:
        """Use one collection (episodes [E, ...]; ``n_episodes`` [] the seed's episode count
        after it) -> (scheme state, learner state, update metrics, gradient updates made
        [] int32, 0 when it did not learn)."""


@struct.dataclass
class ReplayState:
    buffer: EpisodeBuffer
    last_target_update: jax.Array  # [] episode count at the last hard refresh


class EpisodeReplay:
    """Off-policy episode replay with target networks (pymarl2's loop)."""

    def __init__(self, cfg: Config, spec: EnvSpec, learner: Learner, buckets: tuple[int, ...]):
        if cfg.length_groups > 1 and not getattr(learner, "separable_loss", False):
            raise ConfigError(f"length_groups={cfg.length_groups} needs a learner whose loss is "
                              f"separable by episode; {cfg.alg!r} takes 1")
        self.cfg, self.spec, self.learner, self.buckets = cfg, spec, learner, buckets
        self._shapes: dict[str, jax.ShapeDtypeStruct] | None = None

    def init(self) -> ReplayState:
        return ReplayState(buffer=buffer_init(self.spec, self.cfg.buffer_size, self.cfg.replay_dtype),
                           last_target_update=jnp.zeros((), jnp.int32))

    def memory_bytes(self) -> int:
        return buffer_bytes(self.spec, self.cfg.buffer_size, self.cfg.replay_dtype)

    def metric_shapes(self, collection: Callable[[], Episodes]) -> dict[str, jax.ShapeDtypeStruct]:
        del collection  # updates see sampled batches
        if self._shapes is None:  # traced once per program, not once per trace of the loop
            key = jax.random.PRNGKey(0)
            ls = jax.eval_shape(self.learner.init, key)
            batch = jax.eval_shape(lambda: empty_episodes(self.spec, self.cfg.batch_size))
            self._shapes = jax.eval_shape(self.learner.update, ls, batch, key)[1]
        return self._shapes

    def absorb(self, data: ReplayState, ls: LearnerState, episodes: Episodes, key: jax.Array,
               n_episodes: jax.Array, active: jax.Array):
        cfg = self.cfg
        buf = buffer_add(data.buffer, episodes, active)  # gated slot by slot: cheap
        can_learn = buf.size >= cfg.batch_size  # [] this seed's buffer holds a batch

        @per_seed  # each seed unrolls its own batches to its own buckets
        def updates(ls: LearnerState, buf: EpisodeBuffer, key: jax.Array, run: jax.Array):
            # the batches are drawn before the cond below, so that only they (and not the
            # seed's whole buffer, gigabytes) are the cond's operands: a lane's buffer is a
            # slice of the seeds' stacked buffers, and a cond operand is materialised —
            # passing the buffer copied it on every collection
            k_sample, k_update = jnp.moveaxis(
                jax.vmap(jax.random.split)(jax.random.split(key, cfg.updates_per_collect)), 1, 0)
            batches = jax.vmap(lambda k: buffer_sample(buf, k, cfg.batch_size))(k_sample)  # [U, B, ...]

            def one(ls: LearnerState, xs: tuple[Episodes, jax.Array]):
                batch, k = xs
                return bucketed_update(self.learner, self.buckets, ls, batch, k, cfg.length_groups)

            def go(ls: LearnerState):
                return jax.lax.scan(one, ls, (batches, k_update))

            def stay(ls: LearnerState):
                shapes = self.metric_shapes(lambda: episodes)
                return ls, jax.tree.map(
                    lambda s: jnp.zeros((cfg.updates_per_collect, *s.shape), s.dtype), shapes)

            # ``run`` [] is this seed's own flag: inside per_seed's lanes the cond stays a
            # cond, so a seed that is frozen (it reached the chunk's target before the
            # others) or still filling its buffer skips the update's work instead of
            # computing one to be thrown away. Packed seeds reach a target after different
            # numbers of collections (their episodes differ in length), so without this a
            # lane paid for updates of every collection the slowest lane needed (issue 43).
            return jax.lax.cond(run, go, stay, ls)

        def learn(ls: LearnerState):
            new, metrics = updates(ls, buf, key, jnp.logical_and(can_learn, active))
            metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
            # A seed whose buffer is still short of a batch keeps its state (seeds fill in
            # step, so this only matters when they are out of step): a select of params.
            return (jax.tree.map(lambda n, o: jnp.where(can_learn, n, o), new, ls),
                    jax.tree.map(lambda m: jnp.where(can_learn, m, jnp.zeros_like(m)), metrics))

        def skip(ls: LearnerState):
            shapes = self.metric_shapes(lambda: episodes)
            return ls, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        # Branch on whether *any* seed can learn (unbatched): on the per-seed predicate the
        # seed vmap turns the cond into a select that runs the update on every collection,
        # buffer full or not — at the paper's Overcooked batch (512 episodes of 400 steps)
        # that made each of the first 128 collections cost a whole update (~20 s here).
        ls, metrics = jax.lax.cond(seed_max(can_learn.astype(jnp.int32)) > 0, learn, skip, ls)
        hard_due = (n_episodes - data.last_target_update) >= cfg.target_update_interval
        do_hard = jnp.logical_and(can_learn, hard_due)
        if cfg.target_update == "polyak":
            ls = jax.lax.cond(can_learn, lambda s: refresh_target(s, True, "polyak", cfg.tau),
                              lambda s: s, ls)
        else:
            ls = refresh_target(ls, do_hard, "hard", cfg.tau)
        last = jnp.where(do_hard & active, n_episodes, data.last_target_update)
        n_updates = jnp.where(can_learn, cfg.updates_per_collect, 0).astype(jnp.int32)
        return ReplayState(buffer=buf, last_target_update=last), ls, metrics, n_updates


class OnPolicy:
    """On-policy batches used once: the collection is the batch, nothing is stored."""

    def __init__(self, cfg: Config, spec: EnvSpec, learner: Learner, buckets: tuple[int, ...]):
        del buckets  # the whole collection is one batch, unrolled over the episode limit
        self.cfg, self.spec, self.learner = cfg, spec, learner

    def init(self) -> tuple:
        return ()

    def memory_bytes(self) -> int:
        return 0

    def metric_shapes(self, collection: Callable[[], Episodes]) -> dict[str, jax.ShapeDtypeStruct]:
        key = jax.random.PRNGKey(0)
        ls = jax.eval_shape(self.learner.init, key)
        return jax.eval_shape(self.learner.update, ls, collection(), key)[1]

    def absorb(self, data: tuple, ls: LearnerState, episodes: Episodes, key: jax.Array,
               n_episodes: jax.Array, active: jax.Array):
        del n_episodes, active  # the program keeps a frozen seed's learner state
        ls, metrics = self.learner.update(ls, episodes, key)
        return data, ls, metrics, jnp.asarray(self.learner.updates_per_batch, jnp.int32)


def refresh_target(state: LearnerState, do_update: jax.Array, mode: str, tau: float) -> LearnerState:
    """Hard copy when ``do_update`` (every K episodes, pymarl2), or Polyak every update."""
    if mode == "polyak":
        target = optax.incremental_update(state.params, state.target_params, tau)
    else:
        target = jax.tree.map(lambda p, t: jnp.where(do_update, p, t), state.params,
                              state.target_params)
    return state.replace(target_params=target)


#: learner family's ``data_scheme`` -> its scheme
SCHEMES = {"replay": EpisodeReplay, "on_policy": OnPolicy}


def make_scheme(cfg: Config, spec: EnvSpec, learner: Learner,
                buckets: tuple[int, ...]) -> DataScheme:
    """The data scheme a learner asks for with its ``data_scheme`` attribute."""
    return SCHEMES[learner.data_scheme](cfg, spec, learner, buckets)


def bucketed_update(learner: Learner, buckets: tuple[int, ...], ls: LearnerState,
                    batch: Episodes, key: jax.Array, groups: int = 1
                    ) -> tuple[LearnerState, dict[str, jax.Array]]:
    """``learner.update`` on the batch [B, T(+1), ...] with each part unrolled only as far
    as its episodes go.

    ``groups == 1``: the batch is trimmed to the smallest of ``buckets`` that holds its
    longest real episode (pymarl2's rule). ``groups > 1`` (a learner with
    ``separable_loss``): the episodes are sorted by length and split into ``groups``
    equal groups, each trimmed to its own bucket; a ``scan`` over the groups sums their
    gradients, each weighted by its share of the batch's real steps, and one optimiser
    step follows. That is exactly :func:`meigm.learners.common.gradient_step` on the
    whole batch up to float reassociation: every term of such a loss is a masked mean
    over the real steps, each episode is unrolled from its own zero hidden state, and it
    draws its randomness from its own key (the same ``split(key, B)``, permuted with it).
    Why: one timed-out episode keeps a whole batch at the episode limit — on the SMAX
    races 82-100% of batches of 128 hold one — while sorted, only its group pays for it.

    Each bucket index is the largest any seed needs (:func:`meigm.types.seed_max`), so
    that under the seed vmap the switch stays a switch and only one bucket is computed;
    the replay scheme calls it inside :func:`meigm.types.per_seed`, where that is each
    seed's own.
    """
    if groups == 1:
        if len(buckets) == 1:
            return learner.update(ls, batch, key)
        branches = [lambda ls, b, k, n=n: learner.update(ls, trim_episodes(b, n), k)
                    for n in buckets]
        return jax.lax.switch(bucket_index(buckets, batch), branches, ls, batch, key)

    grads, metrics = grouped_gradients(learner, buckets, groups, ls.params, ls.target_params,
                                       batch, jax.random.split(key, batch.mask.shape[0]))
    return apply_gradients(learner, ls, grads), metrics


def grouped_gradients(learner: Learner, buckets: tuple[int, ...], groups: int, params: Params,
                      target_params: Params, batch: Episodes, keys: jax.Array
                      ) -> tuple[Params, dict[str, jax.Array]]:
    """The gradient (and metrics) of ``learner.loss`` over the batch [B, ...] with keys [B]
    (one per episode), computed over ``groups`` length-sorted groups each trimmed to its
    bucket (:func:`bucketed_update`) -> (grads like ``params``, metrics)."""
    b = batch.mask.shape[0]
    order = jnp.argsort(jnp.sum(batch.mask, axis=1), stable=True)  # [B] shortest first
    grouped = jax.tree.map(lambda x: x[order].reshape(groups, b // groups, *x.shape[1:]),
                           (batch, keys))  # [G, B/G, ...]
    real_steps = jnp.sum(batch.mask.astype(jnp.float32))
    grad = jax.grad(learner.loss, has_aux=True)

    def group(acc, part):
        ep, k = part
        branches = [lambda ep, k, n=n: grad(params, target_params, trim_episodes(ep, n), k)
                    for n in buckets]
        g = jax.lax.switch(bucket_index(buckets, ep), branches, ep, k)
        share = jnp.sum(ep.mask.astype(jnp.float32)) / real_steps
        return jax.tree.map(lambda a, x: a + share * x, acc, g), None

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad, params, target_params, batch, keys))
    return jax.lax.scan(group, zeros, grouped)[0]


def bucket_index(buckets: tuple[int, ...], episodes: Episodes) -> jax.Array:
    """Index of the first of ``buckets`` that holds the longest real episode of
    ``episodes`` [B, ...] in any seed -> [] int32, unbatched under the seed vmap."""
    need = seed_max(longest_episode(episodes))  # [] unbatched
    # From Python ints only: under a batched enclosing predicate (a batched predicate
    # batches every input of its branches) an array constant here would batch the index,
    # and the switch would become a select that computes every bucket (2.5x slower than
    # no buckets, measured).
    return sum((need > n).astype(jnp.int32) for n in buckets[:-1])
