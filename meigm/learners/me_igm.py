"""ME-IGM: maximum-entropy MARL that keeps the IGM condition (Chen et al., AAMAS 2026).

Read beside ``shared/spec/ME-IGM.md``; equation numbers are the paper's.

Networks: a shared recurrent agent ``Q_i(τ_i,·)`` (θ), an IGM mixer ``M_ψ`` (VDN, QMIX,
...), and one order-preserving transformation per agent ``f_i(·; s)`` (φ, Eq. 2).
Policies (Eqs. 5, 10): ``π_i(a|τ_i,s) = softmax_avail(f_i(Q_i(τ_i,·); s) / α)``; roll-outs
sample them (they may use ``s``: centralised training), execution takes the argmax of
``Q_i``, which equals the argmax of the policy because ``f_i`` preserves order.

One update, on a batch of whole episodes, minimises three losses at once; each trains
only its own parameters (the others are behind ``stop_gradient``):

* critic, Eq. (8), θ and ψ: ``(Q_tot(s_t,a_t) − y_t)²`` with the soft TD(λ) target of
  Appendix A, next actions sampled from the current policies, values from the target
  agent and target mixer;
* OPT, Eq. (9), φ: ``(Q_tot(s_t,a_t) − Σ_i f_i(Q_i(τ_i,a_i); s_t))²`` — the sample version
  of Eq. (7), which shrinks the gap ε of Theorem 4.1;
* temperature, Eq. (11), log α: ``−α (log π(a_t|s_t) + H̄)``. ``H̄`` is the per-agent
  ``target_entropy`` times the number of agents it counts (``entropy_agents``): all n
  (the paper's App. E, the default), or at each step only the agents with a choice to make
  (more than one available action). A dead SMAX unit can only no-op, so its policy has
  zero entropy; counting it makes the living agents carry its share, and α rises as
  units die. The paper does not settle this (its released code fixes α).

Ablations are config switches: ``transform=none`` is ``+Entropy`` (Table 3: no ``f`` in
Eqs. 4, 9, 10), ``transform=mlp`` is Table 4's unconstrained MLP, ``learn_alpha=false``
fixes α at ``alpha_init``.

Shapes: B episodes, T steps, N agents, A actions, S state size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax

from meigm import ops
from meigm.learners.common import (
    active_agents,
    gradient_step,
    igm_gap,
    init_mixer,
    labelled_optimizer,
    mix,
    take,
    unroll_agent,
)
from meigm.networks import RNNAgent, make_mixer, make_transform
from meigm.ops import masked_mean
from meigm.types import Episodes, LearnerState, Params

if TYPE_CHECKING:
    from meigm.config import Config
    from meigm.envs import EnvSpec


class MEIGM:
    """ME-IGM over any IGM mixer (``me_qmix``, ``me_vdn``)."""

    has_policy = True
    data_scheme = "replay"  # episode replay with target networks (meigm.schemes)
    #: ``update`` is :func:`gradient_step` on ``loss``, a masked mean over episodes
    separable_loss = True

    def __init__(self, cfg: Config, spec: EnvSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.hidden_dim = cfg.hidden_dim
        self.agent = RNNAgent(n_actions=spec.n_actions, hidden_dim=cfg.hidden_dim)
        self.mixer = make_mixer(
            cfg.resolved_mixer, spec.n_agents, cfg.mixing_embed, cfg.hypernet_embed, cfg.qplex_heads
        )
        self.transform = make_transform(
            cfg.transform, spec.n_agents, cfg.opt_layers, cfg.opt_hidden, cfg.hypernet_embed,
            cfg.opt_min_weight,
        )
        # H̄: target entropy of the joint policy, a per-agent coefficient times the agents
        # counted (App. E: all n; ``entropy_agents=alive``: those with a choice, per step).
        self.target_entropy = cfg.target_entropy * spec.n_agents
        critic = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.lr))
        transform = optax.chain(
            optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.lr if cfg.opt_lr is None else cfg.opt_lr)
        )
        alpha = optax.adam(cfg.alpha_lr) if cfg.learn_alpha else optax.set_to_zero()
        self.optimizer = labelled_optimizer(
            {"critic": critic, "transform": transform, "alpha": alpha},
            {"agent": "critic", "mixer": "critic", "transform": "transform", "log_alpha": "alpha"}.get,
        )

    # ------------------------------------------------------------------ init
    def init(self, key: jax.Array) -> LearnerState:
        spec = self.spec
        k_agent, k_mixer, k_transform = jax.random.split(key, 3)
        n, a = spec.n_agents, spec.n_actions
        inputs = jnp.zeros((1, n, spec.obs_dim + n + a))
        state = jnp.zeros((1, spec.state_dim))
        params = {
            "agent": self.agent.init(k_agent, jnp.zeros((1, n, self.hidden_dim)), inputs),
            "mixer": init_mixer(self.mixer, k_mixer, n, a, spec.state_dim),
            "transform": self.transform.init(k_transform, jnp.zeros((1, n, a)), state),
            "log_alpha": jnp.log(jnp.asarray(self.cfg.alpha_init, jnp.float32)),
        }
        return LearnerState(params=params, target_params=params,
                            opt_state=self.optimizer.init(params))

    # ------------------------------------------------------------- policies
    def policy_scores(self, params: Params, q: jax.Array, state: jax.Array) -> jax.Array:
        """The OPT's logits ``f_i(Q_i; s)`` (Eq. 2), whose order is the policy's:
        q [..., N, A], state [..., S] -> [..., N, A]. The policy's mode is read from
        these, not from log π, whose cancellation against the normaliser would blow a
        one-spacing rounding of ``f`` up to many spacings (:func:`meigm.ops.policy_mode`)."""
        return self.transform.apply(params["transform"], q, state)

    def policy_log_probs(
        self, params: Params, q: jax.Array, state: jax.Array, avail: jax.Array
    ) -> jax.Array:
        """log π_i (Eqs. 5, 10). q [..., N, A], state [..., S], avail [..., N, A] -> [..., N, A]."""
        logits = self.policy_scores(params, q, state)
        return ops.masked_log_softmax(logits / jnp.exp(params["log_alpha"]), avail)

    def explore(self, params, q, state, avail, key, t_env):
        """Sample a_i ~ π_i(·|τ_i, s) for training roll-outs: [E, N, A] -> ([E, N], no
        extras: the update recomputes π from the replayed episodes)."""
        del t_env
        log_probs = self.policy_log_probs(params, q, state, avail)
        return ops.sample_masked(key, log_probs, avail), {}

    # --------------------------------------------------------------- losses
    def loss(
        self, params: Params, target_params: Params, ep: Episodes, keys: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Eqs. (8), (9), (11) on episodes [B, T(+1), ...], one key per episode (keys [B],
        for the soft target's a'). Every term is a masked mean over ``ep.mask`` computed
        within each episode, so the batch may be split into groups (``separable_loss``).
        -> (loss_q + loss_opt + loss_alpha [], metrics)."""
        cfg = self.cfg
        sg = jax.lax.stop_gradient
        alpha = jnp.exp(params["log_alpha"])
        alpha_c = sg(alpha)  # α as a constant inside the critic and OPT losses

        q = unroll_agent(self.agent, params["agent"], ep, self.hidden_dim)  # [B, T+1, N, A]
        q_target = unroll_agent(self.agent, target_params["agent"], ep, self.hidden_dim)
        s_t, s_next = ep.state[:, :-1], ep.state[:, 1:]  # [B, T, S]

        # f_i(Q_i(τ_i, ·); s) at every stored step, computed once: with gradient it is
        # the OPT's fit (Eq. 9); detached it gives the current policies (Eqs. 5, 10) used
        # for the target actions and the α loss.
        f = self.transform.apply(params["transform"], sg(q), ep.state)  # [B, T+1, N, A]
        log_pi = ops.masked_log_softmax(sg(f) / alpha_c, ep.avail)  # [B, T+1, N, A]
        log_pi_t, log_pi_next = log_pi[:, :-1], log_pi[:, 1:]

        # ---- critic, Eq. (8): Q_tot(s_t, a_t) = M_ψ(Q_1(τ_1,a_1), ..., Q_n(τ_n,a_n); s_t)
        q_tot = mix(self.mixer, params["mixer"], q[:, :-1], ep.actions, ep.avail[:, :-1], s_t)  # [B, T]

        # a'_{t+1} ~ π(·|s_{t+1}) from the online agent and OPT (no gradient).
        a_next = ops.sample_masked_per_step(keys, log_pi_next, ep.avail[:, 1:])  # [B, T, N]
        q_bar_next = mix(  # Q̄_tot(s_{t+1}, a'_{t+1}), target networks
            self.mixer, target_params["mixer"], q_target[:, 1:], a_next, ep.avail[:, 1:], s_next
        )
        h_next = -alpha_c * jnp.sum(take(log_pi_next, a_next), axis=-1)  # −α log π(a'|s)
        y = jax.vmap(ops.soft_lambda_returns, in_axes=(0, 0, 0, 0, 0, None, None))(
            ep.reward, ep.terminated, ep.mask, q_bar_next, h_next, cfg.gamma, cfg.td_lambda
        )  # Appendix A
        td_error = q_tot - sg(y)
        loss_q = masked_mean(td_error**2, ep.mask)

        # ---- OPT, Eq. (9): fit Σ_i f_i(Q_i(τ_i, a_i); s) to Q_tot(s, a), training φ only.
        f_sum = jnp.sum(take(f[:, :-1], ep.actions), axis=-1)  # [B, T]
        loss_opt = masked_mean((sg(q_tot) - f_sum) ** 2, ep.mask)

        # ---- temperature, Eq. (11): L_α = E[−α (log π(a_t|s_t) + H̄)], log π detached.
        local_entropy = ops.entropy(log_pi_t, ep.avail[:, :-1])  # [B, T, N]
        alive = active_agents(ep.avail[:, :-1])  # [B, T, N]: a choice to make
        n_alive = jnp.sum(alive, axis=-1)  # [B, T]
        if cfg.alpha_loss == "exact":  # E_a[log π] = −H, lower variance (spec, open choice)
            log_pi_joint = -jnp.sum(local_entropy, axis=-1)
        else:  # the batch's actions, as printed in Eq. (11); a dead agent's log π is 0
            log_pi_joint = jnp.sum(take(log_pi_t, ep.actions), axis=-1)
        if cfg.entropy_agents == "alive":  # H̄ of the agents with a choice at this step
            target = cfg.target_entropy * n_alive  # [B, T]
        else:  # App. E: H̄ = target_entropy · n at every step
            target = self.target_entropy
        loss_alpha = masked_mean(-alpha * (log_pi_joint + target), ep.mask)

        metrics = {
            "loss_q": loss_q,
            "loss_opt": loss_opt,
            "loss_alpha": loss_alpha,
            "alpha": alpha,
            # mean per-agent policy entropy beside its target (App. E's per-agent
            # coefficient): over all agents, dead ones' zeros included — what Eq. (11)
            # holds at the target with ``entropy_agents=all`` — and over the agents with a
            # choice only, what it holds there with ``entropy_agents=alive``.
            "entropy": masked_mean(jnp.mean(local_entropy, axis=-1), ep.mask),
            "entropy_alive": jnp.sum(jnp.where(alive & ep.mask[..., None], local_entropy, 0.0))
            / jnp.maximum(jnp.sum(alive & ep.mask[..., None]), 1),
            "target_entropy": jnp.asarray(cfg.target_entropy, jnp.float32),
            "q_tot": masked_mean(q_tot, ep.mask),
            "target": masked_mean(y, ep.mask),
            "td_abs": masked_mean(jnp.abs(td_error), ep.mask),
            # Figure 2: 0 by construction here (the OPT preserves the order of Q_i).
            "igm_gap": igm_gap(self.mixer, params["mixer"], q[:, :-1], f[:, :-1],
                               ep.avail[:, :-1], s_t, ep.mask),
        }
        return loss_q + loss_opt + loss_alpha, metrics

    def update(
        self, ls: LearnerState, episodes: Episodes, key: jax.Array
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        return gradient_step(self, ls, episodes, key)
