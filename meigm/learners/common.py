"""Pieces every value-decomposition learner shares: unrolling the recurrent agent over
stored episodes, gathering taken actions, target refresh and optimisers.

Shapes as in :mod:`meigm.types`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from meigm import ops
from meigm.networks.agent import agent_inputs
from meigm.types import Episodes, LearnerState, Params


def last_action_onehot(actions: jax.Array, n_actions: int) -> jax.Array:
    """actions [B, T, N] -> previous action one-hot [B, T+1, N, A] (zeros at t = 0)."""
    onehot = jax.nn.one_hot(actions, n_actions)
    return jnp.concatenate([jnp.zeros_like(onehot[:, :1]), onehot], axis=1)


def unroll_agent(
    agent: nn.Module, agent_params: Params, episodes: Episodes, hidden_dim: int
) -> jax.Array:
    """Run the GRU agent over every stored step from a zero hidden state.

    Returns Q_i(τ_i, ·) for all steps: [B, T+1, N, A].
    """
    n_actions = episodes.avail.shape[-1]
    inputs = agent_inputs(episodes.obs, last_action_onehot(episodes.actions, n_actions))
    b, _, n, _ = inputs.shape
    hidden0 = jnp.zeros((b, n, hidden_dim), inputs.dtype)

    # Every layer stays inside the scan: hoisting the hidden-state-free layers out into
    # one large product over all steps measured ~20% slower on CPU (the [T+1, B, N, 3H]
    # intermediate leaves the cache); benchmarks/notes/throughput_smax.md.
    def step(h: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        h, q = agent.apply(agent_params, h, x_t)
        return h, q

    _, q = jax.lax.scan(step, hidden0, jnp.swapaxes(inputs, 0, 1))  # scan over time
    return jnp.swapaxes(q, 0, 1)


def active_agents(avail: jax.Array) -> jax.Array:
    """[..., N, A] available actions -> [..., N] bool: the agent has a choice to make
    (more than one available action; a dead SMAX/SMAC agent can only no-op). The actor
    losses of MAPPO, IPPO and HASAC leave the other steps out (MAPPO's active masks)."""
    return jnp.sum(avail, axis=-1) > 1


def take(values: jax.Array, actions: jax.Array) -> jax.Array:
    """values [..., A], actions [...] -> values[..., actions] with shape [...]."""
    return jnp.take_along_axis(values, actions[..., None], axis=-1)[..., 0]


def mix(
    mixer: nn.Module,
    mixer_params: Params,
    q_all: jax.Array,
    actions: jax.Array,
    avail: jax.Array,
    state: jax.Array,
) -> jax.Array:
    """``Q_tot(s, a)`` of the joint action ``a`` from the agents' full Q tables.

    q_all [..., N, A], actions [..., N] int, avail [..., N, A] bool, state [..., S]
    -> [...]. Gives every mixer what it may need (see :mod:`meigm.networks.mixers`):
    the taken values, the greedy values over available actions and the joint action.
    """
    q_max = jnp.max(jnp.where(avail, q_all, -jnp.inf), axis=-1)  # [..., N]
    q_max = jnp.where(jnp.isfinite(q_max), q_max, 0.0)  # padded steps may have no action
    onehot = jax.nn.one_hot(actions, q_all.shape[-1], dtype=q_all.dtype)
    return mixer.apply(mixer_params, take(q_all, actions), state, q_max, onehot)


def igm_gap(
    mixer: nn.Module,
    mixer_params: Params,
    q_all: jax.Array,
    policy_scores: jax.Array,
    avail: jax.Array,
    state: jax.Array,
    mask: jax.Array,
) -> jax.Array:
    """Figure 2's diagnostic: mean of ``Q_tot(s, a_greedy) − Q_tot(s, a_policy)``.

    ``a_greedy`` is the local argmaxes of ``Q_i`` (the joint argmax of ``Q_tot`` when the
    mixer satisfies IGM), ``a_policy`` the local argmaxes of the policies' scores. A gap
    above 0 is the misalignment ME-IGM removes: the team executes a joint action the
    critic values less than its best. Where the two joint actions agree the gap is
    exactly 0 without evaluating the mixer, so a learner whose policies preserve the
    order of ``Q_i`` (ME-IGM) pays nothing for logging it. ``a_policy`` is the tie-robust
    mode (:func:`meigm.ops.policy_mode`): at large ``|Q|`` float32 OPT logits can tie
    distinct Q-values, and a plain argmax of the logits would then pick the lowest
    index and report a gap that is rounding, not misalignment; with the mode's tie-break
    by ``Q_i`` ME-IGM's gap is exactly 0.

    q_all, policy_scores, avail [B, T, N, A], state [B, T, S], mask [B, T] -> scalar.
    """
    sg = jax.lax.stop_gradient
    q_all, policy_scores = sg(q_all), sg(policy_scores)
    a_greedy = ops.masked_argmax(q_all, avail)  # [B, T, N]
    a_policy = ops.policy_mode(policy_scores, q_all, avail)
    differ = jnp.any(a_greedy != a_policy, axis=-1) & (mask > 0)  # [B, T]

    def gap(_):
        q_g = mix(mixer, mixer_params, q_all, a_greedy, avail, state)  # [B, T]
        q_p = mix(mixer, mixer_params, q_all, a_policy, avail, state)
        return ops.masked_mean(jnp.where(differ, q_g - q_p, 0.0), mask)

    return jax.lax.cond(jnp.any(differ), gap, lambda _: jnp.zeros((), q_all.dtype), None)


def init_mixer(mixer: nn.Module, key: jax.Array, n_agents: int, n_actions: int, state_dim: int) -> Params:
    """Mixer parameters for a batch of one: the shapes :func:`mix` will call it with."""
    q = jnp.zeros((1, n_agents))
    return mixer.init(key, q, jnp.zeros((1, state_dim)), q, jnp.zeros((1, n_agents, n_actions)))


def labelled_optimizer(
    groups: dict[str, optax.GradientTransformation], label_of: Callable[[str], str]
) -> optax.GradientTransformation:
    """One optimiser over the params dict, each top-level entry routed to its group.

    The losses are separated with ``stop_gradient`` so each group only receives its
    own loss's gradient; routing just gives each its own learning rate and clipping.
    """
    return optax.multi_transform(
        groups, lambda params: {k: label_of(k) for k in params}
    )


def gradient_step(learner, ls: LearnerState, episodes: Episodes, key: jax.Array
                  ) -> tuple[LearnerState, dict[str, jax.Array]]:
    """The update of a learner whose loss is separable by episode (``loss(params,
    target_params, episodes [B, ...], keys [B]) -> (loss, metrics)``, every term a masked
    mean over ``episodes.mask``): one optimiser step on the batch, episode ``b`` drawing
    its randomness from ``keys[b]``. The replay scheme can then split a batch into groups
    and get the same step (:func:`meigm.schemes.bucketed_update`)."""
    keys = jax.random.split(key, episodes.mask.shape[0])  # [B] one per episode
    grads, metrics = jax.grad(learner.loss, has_aux=True)(
        ls.params, ls.target_params, episodes, keys)
    return apply_gradients(learner, ls, grads), metrics


def apply_gradients(learner, ls: LearnerState, grads: Params) -> LearnerState:
    """One step of the learner's optimiser with ``grads`` (a pytree like ``ls.params``)."""
    updates, opt_state = learner.optimizer.update(grads, ls.opt_state, ls.params)
    return ls.replace(params=optax.apply_updates(ls.params, updates), opt_state=opt_state)
