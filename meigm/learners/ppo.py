"""MAPPO and IPPO (Yu et al. 2022; de Witt et al. 2020): on-policy actor-critics.

Both share one recurrent actor over every agent — the agent network of the other
learners (own observation, agent id and last action -> GRU -> logits), a softmax over
the available actions — and differ only in the critic:

* ``mappo``: a centralised ``V(s)`` of the global state, one value per step shared by
  the team (meigm's scenarios give one global state, not MAPPO's agent-specific ones);
* ``ippo``: a local ``V(τ_i)``, the same recurrent network as the actor with one output,
  over each agent's own history.

Each collection of ``n_envs`` whole episodes is one batch (:class:`meigm.schemes.OnPolicy`):
values of the collection's parameters, GAE(γ, λ) on the team reward, returns folded into
the value normaliser, then ``ppo_epochs`` passes over ``ppo_minibatches`` random
minibatches of whole episodes, each one Adam step on the clipped surrogate, the clipped
(Huber) value loss and the entropy bonus, with advantages normalised over the batch.
Greedy execution is the argmax of the actor's logits (as for every learner).

Death masking: an agent with a single available action (SMAX's and SMAC's dead agents
can only no-op) has no decision to make; its steps are left out of the policy, entropy
and value losses (MAPPO's active masks). Padded steps after an episode are left out too.

Defaults are MAPPO's SMAC(v2) settings (``config.py`` documents each): learning rate
5e-4 for actor and critic with Adam ε = 1e-5, 5 epochs, 1 minibatch, clip 0.2, GAE
λ = 0.95, γ = 0.99, entropy 0.01, value-loss weight 1, Huber δ = 10, value
normalisation, gradient-norm clip 10, GRU width 64. Departures, and why:

* whole episodes, not 400-step windows of 8 environments: meigm's loop collects whole
  episodes for every learner, and an episode from a zero hidden state is exactly what
  execution sees (MAPPO's ``data_chunk_length`` chunks restart from stored hidden
  states instead); the default batch is 32 episodes (``n_envs``), 600–2,000 steps on the
  SMAX scenarios against MAPPO's 3,200;
* the values of the collection (``V_old``, needed by GAE and the value clip) are
  computed by unrolling the critic at the start of the update rather than step by step
  during the roll-out: the parameters have not changed in between, so they are the same
  numbers, and the roll-out stays the actor's alone. The behaviour log-probabilities do
  come from the roll-out (``Episodes.extras["log_prob"]``);
* the value normaliser is updated once per batch with all its returns, not once per
  minibatch (β = 0.99999 makes the two indistinguishable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from meigm import ops
from meigm.errors import ConfigError
from meigm.learners.common import active_agents, labelled_optimizer, unroll_agent
from meigm.networks import RNNAgent
from meigm.ops import ppo
from meigm.types import Episodes, LearnerState, Params

if TYPE_CHECKING:
    from meigm.config import Config
    from meigm.envs import EnvSpec

#: β of the value normaliser's running statistics (MAPPO's default)
VALUE_NORM_BETA = 0.99999


class StateValue(nn.Module):
    """MAPPO's centralised critic: s -> Dense+ReLU -> Dense+ReLU -> V(s)."""

    hidden: int = 64

    @nn.compact
    def __call__(self, state: jax.Array) -> jax.Array:
        """state [..., S] -> [...]."""
        x = nn.relu(nn.Dense(self.hidden)(state))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)[..., 0]


class PPO:
    """The PPO family; :class:`MAPPO` and :class:`IPPO` pick the critic."""

    has_policy = True
    data_scheme = "on_policy"  # each collection is one batch, used once (meigm.schemes)
    #: True: a centralised critic V(s); False: a local V(τ_i)
    centralised: bool = True

    def __init__(self, cfg: Config, spec: EnvSpec) -> None:
        self.cfg, self.spec = cfg, spec
        centralised = self.centralised
        if cfg.n_envs % cfg.ppo_minibatches:
            raise ConfigError(f"ppo_minibatches ({cfg.ppo_minibatches}) must divide n_envs "
                              f"({cfg.n_envs}): each minibatch holds whole episodes")
        self.hidden_dim = cfg.hidden_dim
        self.agent = RNNAgent(n_actions=spec.n_actions, hidden_dim=cfg.hidden_dim)  # the actor
        self.critic = (StateValue(hidden=cfg.hidden_dim) if centralised
                       else RNNAgent(n_actions=1, hidden_dim=cfg.hidden_dim))
        self.updates_per_batch = cfg.ppo_epochs * cfg.ppo_minibatches

        def adam() -> optax.GradientTransformation:
            return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                               optax.adam(cfg.ppo_lr, eps=cfg.ppo_adam_eps))

        # actor and critic clipped separately (MAPPO has one optimiser each); the value
        # normaliser's statistics are set by the update, never by a gradient
        self.optimizer = labelled_optimizer(
            {"actor": adam(), "critic": adam(), "fixed": optax.set_to_zero()},
            lambda k: {"agent": "actor", "critic": "critic"}.get(k, "fixed"))

    # ------------------------------------------------------------------ state
    def init(self, key: jax.Array) -> LearnerState:
        spec = self.spec
        k_actor, k_critic = jax.random.split(key)
        n, a = spec.n_agents, spec.n_actions
        inputs = jnp.zeros((1, n, spec.obs_dim + n + a))
        hidden = jnp.zeros((1, n, self.hidden_dim))
        critic = (self.critic.init(k_critic, jnp.zeros((1, spec.state_dim))) if self.centralised
                  else self.critic.init(k_critic, hidden, inputs))
        params = {"agent": self.agent.init(k_actor, hidden, inputs), "critic": critic,
                  "value_norm": ppo.ValueNorm.zeros()}
        return LearnerState(params=params, opt_state=self.optimizer.init(params))

    # --------------------------------------------------------------- policies
    def policy_log_probs(self, params: Params, q: jax.Array, state: jax.Array,
                         avail: jax.Array) -> jax.Array:
        """log π_i: actor logits q [..., N, A], avail [..., N, A] -> [..., N, A]."""
        del params, state
        return ops.masked_log_softmax(q, avail)

    def explore(self, params, q, state, avail, key, t_env):
        """Sample a_i ~ π_i: [E, N, A] -> ([E, N], {"log_prob": [E, N]}), the behaviour
        log-probability that the clipped surrogate's ratio needs."""
        del t_env
        log_probs = self.policy_log_probs(params, q, state, avail)
        actions = ops.sample_masked(key, log_probs, avail)
        return actions, {"log_prob": jnp.take_along_axis(log_probs, actions[..., None], -1)[..., 0]}

    def values(self, critic_params: Params, ep: Episodes) -> jax.Array:
        """Normalised critic outputs at every stored step: [B, T+1, N] (MAPPO's V(s)
        broadcast over the agents)."""
        n = ep.avail.shape[-2]
        if self.centralised:
            v = self.critic.apply(critic_params, ep.state)  # [B, T+1]
            return jnp.broadcast_to(v[..., None], (*v.shape, n))
        return unroll_agent(self.critic, critic_params, ep, self.hidden_dim)[..., 0]

    # ------------------------------------------------------------------ losses
    def loss(self, params: Params, ep: Episodes, old_values: jax.Array, adv: jax.Array,
             targets: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Clipped surrogate + weighted clipped value loss − weighted entropy on one
        minibatch. old_values, targets: normalised [B, T, N]; adv: normalised [B, T, N]."""
        cfg = self.cfg
        logits = unroll_agent(self.agent, params["agent"], ep, self.hidden_dim)[:, :-1]
        avail = ep.avail[:, :-1]
        log_pi = ops.masked_log_softmax(logits, avail)  # [B, T, N, A]
        taken = jnp.take_along_axis(log_pi, ep.actions[..., None], -1)[..., 0]  # [B, T, N]
        active = active_agents(avail) & ep.mask[..., None]  # [B, T, N]
        policy_loss, stats = ppo.clipped_surrogate(taken, ep.extras["log_prob"], adv, active,
                                                   cfg.ppo_clip)
        entropy = ops.masked_mean(ops.entropy(log_pi, avail), active)
        values = self.values(params["critic"], ep)[:, :-1]
        value_loss = ppo.clipped_value_loss(values, old_values, targets, active, cfg.ppo_clip,
                                            cfg.huber_delta)
        total = policy_loss + cfg.value_loss_coef * value_loss - cfg.entropy_coef * entropy
        return total, {"loss_policy": policy_loss, "loss_value": value_loss, "entropy": entropy,
                       **stats}

    def update(self, ls: LearnerState, episodes: Episodes, key: jax.Array
               ) -> tuple[LearnerState, dict[str, jax.Array]]:
        """One PPO update on a collection [B, ...] of whole episodes."""
        cfg = self.cfg
        params = ls.params
        vn = params["value_norm"]
        v_old = self.values(params["critic"], episodes)  # [B, T+1, N], normalised
        v_raw = ppo.denormalise(vn, v_old) if cfg.value_norm else v_old
        rewards = jnp.broadcast_to(episodes.reward[..., None], v_raw[:, :-1].shape)
        term = jnp.broadcast_to(episodes.terminated[..., None], rewards.shape)
        mask = jnp.broadcast_to(episodes.mask[..., None], rewards.shape)

        def per_agent(r, d, m, v):  # [B, T], [B, T+1] -> GAE of every episode
            return jax.vmap(lambda *x: ppo.gae(*x, cfg.gamma, cfg.gae_lambda))(r, d, m, v)

        adv, returns = jax.vmap(per_agent, in_axes=-1, out_axes=-1)(rewards, term, mask, v_raw)
        active = active_agents(episodes.avail[:, :-1]) & episodes.mask[..., None]  # [B, T, N]
        if cfg.value_norm:
            vn = ppo.value_norm_update(vn, returns, active, VALUE_NORM_BETA)
            targets = ppo.normalise(vn, returns)
        else:
            targets = returns
        adv = ppo.normalise_advantages(adv, active)
        params = {**params, "value_norm": vn}

        b = episodes.mask.shape[0]
        size = b // cfg.ppo_minibatches
        data = (episodes, v_old[:, :-1], adv, targets)

        def step(carry, idx):
            params, opt_state = carry
            mb = jax.tree.map(lambda x: x[idx], data)
            (_, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(params, *mb)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), metrics

        def epoch(carry, k):
            order = jax.random.permutation(k, b)[: size * cfg.ppo_minibatches]
            return jax.lax.scan(step, carry, order.reshape(cfg.ppo_minibatches, size))

        (params, opt_state), metrics = jax.lax.scan(
            epoch, (params, ls.opt_state), jax.random.split(key, cfg.ppo_epochs))
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["value"] = ops.masked_mean(v_raw[:, :-1], active)
        metrics["return_target"] = ops.masked_mean(returns, active)
        return ls.replace(params=params, opt_state=opt_state), metrics


class MAPPO(PPO):
    """MAPPO: the shared recurrent actor and a centralised critic V(s)."""

    centralised = True


class IPPO(PPO):
    """IPPO: the shared recurrent actor and a local recurrent critic V(τ_i)."""

    centralised = False
