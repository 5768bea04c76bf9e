"""The learner interface the training loop is written against.

A learner is a bundle of pure functions over :class:`~meigm.types.LearnerState`:

* ``init(key) -> LearnerState``
* ``explore(params, q, state, avail, key, t_env) -> (actions, extras)`` — training
  roll-outs; ``extras`` ({name: [E, N, ...]}) is what the learner needs stored with
  the episodes (``Episodes.extras``: log-probabilities, values), ``{}`` for most;
* ``update(learner_state, episodes, key) -> (learner_state, metrics)``;
* ``policy_log_probs(params, q, state, avail)`` — local policies, where the learner has
  them (used by diagnostics and the Table 1 view);
* ``data_scheme`` — how its family uses episodes (:mod:`meigm.schemes`): ``"replay"``
  (buffer, sampled batches, target networks refreshed by the scheme) or
  ``"on_policy"`` (each collection is one batch, used once; such a learner also says
  how many gradient steps one update makes, ``updates_per_batch``).

Optional, looked up with ``getattr`` (learners without them behave as before):

* ``mixer`` — the value-decomposition mixer, for learners whose agent network is a
  critic mixed into ``Q_tot`` (the IGM-gap metric and the Table 1 view use it);
* ``schedule(learner_state, t_env) -> learner_state`` — set time-dependent values kept
  in the state before each round of updates (FOP's annealed α);
* ``separable_loss`` (True) with ``loss(params, target_params, episodes, keys) ->
  (loss, metrics)`` and ``optimizer`` — for a learner whose ``update`` is one optimiser
  step on that loss (:func:`meigm.learners.common.gradient_step`), every term of it a
  masked mean over ``episodes.mask``, each episode drawing from its own key [B]; the
  replay scheme may then split a batch into length-sorted groups (``length_groups``);
* ``config_defaults`` ({field: value}) — the algorithm's own settings for config fields
  left at None; they win over the scenario's (soft_qmix's fixed α, ``alpha_init=0.03``);
* ``joint_values(params, inputs, state, avail, joints) -> (q_local, q_tot)`` — for a
  learner whose critic is not the agent network (FOP), its local values and ``Q_tot``
  of every joint action at one step, for the Table 1 view.

Numeric hyper-parameters (:data:`meigm.lanes.LANE_FIELDS`) reach a learner through its
config, built inside the training program from each lane's traced values
(:func:`meigm.lanes.bind`): a learner uses them as numbers, never in Python control flow,
so a grid over them is one compiled program.

Greedy execution is the same for every learner — the decentralised argmax over
available actions of the agent network's output (``Q_i``; FOP's agent network is its
actor, so there it is the argmax of ``π_i``) — so it lives in the roll-out, not here.
"""

from __future__ import annotations

from typing import Protocol

import flax.linen as nn
import jax

from meigm.types import Episodes, LearnerState, Params


class Learner(Protocol):
    agent: nn.Module
    hidden_dim: int
    #: "replay" or "on_policy" (:data:`meigm.schemes.SCHEMES`)
    data_scheme: str
    #: True when the learner has local stochastic policies (ME-IGM, FOP...).
    has_policy: bool

    def init(self, key: jax.Array) -> LearnerState: ...

    def explore(
        self,
        params: Params,
        q: jax.Array,  # [E, N, A]
        state: jax.Array,  # [E, S]
        avail: jax.Array,  # [E, N, A]
        key: jax.Array,
        t_env: jax.Array,
    ) -> tuple[jax.Array, dict[str, jax.Array]]: ...  # [E, N], {name: [E, N, ...]}

    def update(
        self, ls: LearnerState, episodes: Episodes, key: jax.Array
    ) -> tuple[LearnerState, dict[str, jax.Array]]: ...

    def policy_log_probs(
        self, params: Params, q: jax.Array, state: jax.Array, avail: jax.Array
    ) -> jax.Array: ...  # [..., N, A]
