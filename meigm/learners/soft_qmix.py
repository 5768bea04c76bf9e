"""Soft-QMIX: the algorithm of the authors' released code, beside meigm's ME-QMIX.

The only public code of the paper is the repository its first arXiv versions link,
``WentseChen/Soft-QMIX`` (a pymarl2 fork; the paper was then titled "Soft-QMIX", arXiv
2406.13930 v1-v2). Read beside the paper it is a different algorithm from the one
:mod:`meigm.learners.me_igm` implements. This module is that algorithm, written from
reading their code (commit ``649d7d3``; paths below are under its ``src/``).

Networks: the shared recurrent agent ``Q_i(τ_i,·)`` (θ); per agent a monotone utility
transform ``g_i(·; s)`` (ψ), part of the critic; per agent a one-layer order-preserving map
``f_i(·; s)`` (φ), the policy's logits. Both transforms act on each action's value alone.

* critic: ``Q_tot(s,a) = Σ_i g_i(Q_i(τ_i,a_i); s)``, additive over transformed utilities;
* policy: ``π_i(·|τ_i,s) = softmax_avail(f_i(g_i(Q_i(τ_i,·); s); s) / α)`` with α fixed;
* losses, one optimiser step on their sum:
  ``L_wtd`` — ``½(Q_tot − y)²`` averaged with weight ½ on the steps where the TD step
  would widen the OPT's residual, and
  ``L_OPT = ½(sg(Q_tot) − Σ_i f_i(sg(g_i(Q_i(τ_i,a_i)))))²``, training φ only.

How it departs from ``me_qmix`` (their file:line, at commit 649d7d3):

1. **Critic.** ``me_qmix`` mixes ``Q_i`` with QMIX's hyper-network mixer. Theirs computes the
   QMIX mixing and then overwrites it: ``y = qvals.sum(-1)`` (``modules/mixers/nmix.py:128``,
   after the unused mixing at :112-126), applied to utilities already passed through
   ``func_g`` (``learners/nq_learner.py:79`` online, :94 target). ``g_i`` is
   ``Σ_h |w2_{i,h}(s)| ELU(|w1_{i,h}(s)| q + b1_{i,h}(s)) + b2_i(s) + q``
   (``nmix.py:83-102``; the residual ``+ q`` at :100), width ``mixing_embed // 2`` (their
   ``embed_dim//2``, :34), hyper-networks as at ``nmix.py:31-46`` (``b1`` one linear layer,
   :36). Its slope is at least 1, so ``Q_tot`` is additive and strictly monotone in every
   ``Q_i``: IGM holds. The QMIX hyper-networks, which receive no gradient there, are not
   built.
2. **Policy.** ``me_qmix``: ``softmax(f_i(Q_i)/α)`` with Eq. (2)'s OPT on the raw ``Q_i``.
   Theirs: ``softmax(f_i(g_i(Q_i))/α)`` with ``f_i(x) = |w_i(s)| x + b_i(s)`` one layer
   (``func_f``, ``nmix.py:60-81``, hyper-networks :49-58), applied in roll-outs
   (``components/action_selectors.py:176-180``) and for the target's next action
   (``nq_learner.py:97-101``). We use :class:`meigm.networks.OPT` with one layer, whose
   weight is ``|w| + opt_min_weight`` (see the choices below).
3. **OPT loss.** Fits ``Σ_i f_i(g_i(Q_i(τ_i,a_i)))`` (``g`` detached) to the detached
   ``Q_tot``, halved: ``nq_learner.py:141-145``. ``me_qmix``'s Eq. (9) fits
   ``Σ_i f_i(Q_i)``, unhalved.
4. **Temperature.** Fixed: ``entropy_coef = 0.03`` (``nq_learner.py:39``,
   ``action_selectors.py:161``); no α loss, no target entropy. Here α is ``alpha_init``,
   0.03 unless set (:attr:`SoftQMIX.config_defaults`); ``learn_alpha``, ``alpha_lr``,
   ``target_entropy``, ``alpha_loss`` and ``entropy_agents`` do not apply.
5. **Re-weighted TD loss.** ``½ td²`` (``nq_learner.py:135``) weighted by ½ where
   ``gopt_mask`` is set — the OPT residual ``Q_tot − Σ_i f_i`` is positive and the TD error
   ``Q_tot − y`` negative, or the residual is ≤ 0 and the TD error ≥ 0: the TD step would
   move ``Q_tot`` away from ``Σ_i f_i`` — and by 1 elsewhere, normalised by the weights'
   sum (``nq_learner.py:147-150``); the loss is ``L_wtd + L_OPT`` (:152). The paper does
   not mention it. ``me_qmix``: the plain mean of ``td²``.
6. **Target.** Next actions ``a' ~ softmax(f(g(Q))/α)`` from the online networks, one
   sample per step (``nq_learner.py:97-105``); ``Q̄_{t+1} = Σ_i ḡ_i(Q̄_i(a'_i))`` from the
   target agent and target ``g`` (:94, :106, :117); the bonus ``h = −α Σ_i log π_i(a'_i)``
   (:108-110, scaled at :126); their TD(λ) recursion (``utils/rl_utils.py:5-15``), whose
   λ-branch is not cut by termination: a terminal step's target is ``r + γλ h_{t+1}``
   (:func:`meigm.ops.released_lambda_returns`). ``me_qmix`` uses the spec's recursion and
   ``Q̄_tot`` from the target QMIX mixer.
7. **Roll-outs.** Sample ``softmax(f(g(Q))/α)``, no ε: the selector computes an ε schedule
   and never uses it (``action_selectors.py:166-186``). Same as ``me_qmix`` up to the
   ``g``; evaluation is the argmax of ``Q_i`` in both (:171-174).
8. **Optimiser.** One Adam (``lr``) and one global gradient-norm clip over agent, ``g`` and
   ``f`` together (``nq_learner.py:23,34,41-44,157``); ``me_qmix`` clips and steps critic,
   OPT (``opt_lr``) and α separately. ``opt_lr`` and ``opt_layers`` do not apply.

Choices where their code is ambiguous or does not run as written:

* Their matrix-game printer (``envs/one_step_matrix_game.py:102-123``, called at
  ``nq_learner.py:183``) calls the mixer with two arguments (:115) where its ``forward``
  takes three (``nmix.py:104``): the first logged update on ``one_step_matrix_game`` raises
  a ``TypeError``, so their matrix experiment cannot run as written. What it means to print
  — the mixer (a sum) over ``g``-transformed utilities of each joint action — is what the
  Table 1 view shows here: :attr:`SoftQMIX.mixer` is ``Σ_i g_i``, and the view's local
  values are the raw ``Q_i`` that execution argmaxes.
* Target past termination: beyond the slot after the terminal step their λ-branch keeps
  adding ``(γλ)^k h`` of zero-filled padding (uniform policies), an amount set by the
  longest episode of the batch (``run/run.py:197-198`` trims to it). We keep the terminal
  step's ``γλ h_{t+1}`` and drop the padding terms; the two agree for a batch's longest
  episode and for fixed-length games (the matrix games).
* ``f``'s weight: theirs is ``|w(s)|`` (``nmix.py:76-77``), which can reach 0 and tie every
  action; ours adds ``opt_min_weight`` (1e-3) so the policy's order is ``Q_i``'s strictly.
  ``opt_min_weight=0`` is theirs.
* ``func_f`` picks its reshape from the input's shape (``nmix.py:65-74``); on a Q table
  with as many actions as agents both branches fire and the second is wrong. No scenario
  of theirs has that; here ``f`` is applied per action whatever the shapes.
* Sampling: inverse CDF with the uniform draw clamped to ``[1e-6, 1 − 1e-6]``
  (``action_selectors.py:181-184``, ``nq_learner.py:102-105``) vs a categorical draw here:
  they differ only for probabilities below 1e-6. Unavailable actions: their ``-inf`` /
  ``-9999999`` logits vs meigm's masked softmax; the same policies.
* ``gopt_mask`` compares strictly (``approx > 0``, ``td < 0``; ``nq_learner.py:147``), kept.

Their other settings are meigm's defaults already: Adam lr 1e-3, λ 0.4, batch 128, buffer
5000, 4 parallel envs, target refresh every 200 episodes (``config/algs/qmix.yaml``), γ 0.99
and clip 10 (``config/default.yaml:34,41``), hyper-network width 64.

Not separable by episode (``separable_loss`` False): the weighted mean's normaliser, the
sum of the weights, couples the episodes of a batch.

Shapes: B episodes, T steps, N agents, A actions, S state size, H hidden width of ``g``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from meigm import ops
from meigm.learners.common import gradient_step, igm_gap, init_mixer, take, unroll_agent
from meigm.networks import OPT, RNNAgent
from meigm.ops import masked_mean
from meigm.types import Episodes, LearnerState, Params

if TYPE_CHECKING:
    from meigm.config import Config
    from meigm.envs import EnvSpec


class UtilityTransform(nn.Module):
    """``g_i(q; s) = Σ_h |w2_{i,h}(s)| ELU(|w1_{i,h}(s)| q + b1_{i,h}(s)) + b2_i(s) + q``,
    per agent and per value: q [..., N, K], state [..., S] -> [..., N, K].

    Strictly increasing in ``q`` with slope ≥ 1 (the residual), so it keeps each agent's
    order of actions and makes ``Σ_i g_i`` monotone in every ``Q_i``."""

    n_agents: int
    hidden: int = 16
    hypernet_embed: int = 64

    @nn.compact
    def __call__(self, q: jax.Array, state: jax.Array) -> jax.Array:
        n, h = self.n_agents, self.hidden
        batch = state.shape[:-1]

        def hyper(out: int, name: str) -> jax.Array:
            x = nn.relu(nn.Dense(self.hypernet_embed, name=f"{name}_0")(state))
            return nn.Dense(out, name=f"{name}_1")(x)

        w1 = jnp.abs(hyper(n * h, "hyper_w1")).reshape(*batch, n, 1, h)
        b1 = nn.Dense(n * h, name="hyper_b1")(state).reshape(*batch, n, 1, h)  # one layer
        w2 = jnp.abs(hyper(n * h, "hyper_w2")).reshape(*batch, n, 1, h)
        b2 = hyper(n, "hyper_b2").reshape(*batch, n, 1)
        hidden = nn.elu(q[..., None] * w1 + b1)  # [..., N, K, H]
        return jnp.sum(hidden * w2, axis=-1) + b2 + q


class AdditiveUtilityMixer(nn.Module):
    """``Q_tot = Σ_i g_i(q_i; s)`` with the mixer signature of :mod:`meigm.networks.mixers`
    (q [..., N], state [..., S] -> [...]; ``q_max`` and the joint action are not needed).
    :meth:`utilities` applies the same ``g`` to whole Q tables."""

    n_agents: int
    hidden: int = 16
    hypernet_embed: int = 64

    def setup(self) -> None:
        self.g = UtilityTransform(self.n_agents, self.hidden, self.hypernet_embed)

    def __call__(self, q: jax.Array, state: jax.Array, q_max: jax.Array | None = None,
                 action_onehot: jax.Array | None = None) -> jax.Array:
        del q_max, action_onehot
        return jnp.sum(self.g(q[..., None], state)[..., 0], axis=-1)

    def utilities(self, q_all: jax.Array, state: jax.Array) -> jax.Array:
        """``g_i(Q_i(τ_i, ·); s)``: [..., N, A], [..., S] -> [..., N, A]."""
        return self.g(q_all, state)


class SoftQMIX:
    """The released Soft-QMIX (``soft_qmix``); see the module docstring."""

    has_policy = True
    data_scheme = "replay"  # episode replay with target networks (meigm.schemes)
    #: the weighted TD mean is normalised by the batch's weights: not a masked mean
    separable_loss = False
    #: the authors' fixed α (``nq_learner.py:39``); fills ``alpha_init`` when it is unset,
    #: before the scenario's defaults (:meth:`meigm.config.Config.resolve`)
    config_defaults: ClassVar[dict[str, Any]] = {"alpha_init": 0.03}

    def __init__(self, cfg: Config, spec: EnvSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.hidden_dim = cfg.hidden_dim
        self.alpha = (cfg.alpha_init if cfg.alpha_init is not None  # a lane's scalar in the program
                      else self.config_defaults["alpha_init"])
        self.agent = RNNAgent(n_actions=spec.n_actions, hidden_dim=cfg.hidden_dim)
        self.mixer = AdditiveUtilityMixer(  # g, the critic's transform (nmix.py:31-46, 83-102)
            n_agents=spec.n_agents, hidden=max(1, cfg.mixing_embed // 2),
            hypernet_embed=cfg.hypernet_embed)
        self.transform = OPT(  # f, the policy's one-layer map (nmix.py:49-81)
            n_agents=spec.n_agents, layers=1, hypernet_embed=cfg.hypernet_embed,
            min_weight=cfg.opt_min_weight)
        self.optimizer = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.lr))

    # ------------------------------------------------------------------ init
    def init(self, key: jax.Array) -> LearnerState:
        spec = self.spec
        k_agent, k_mixer, k_transform = jax.random.split(key, 3)
        n, a = spec.n_agents, spec.n_actions
        inputs = jnp.zeros((1, n, spec.obs_dim + n + a))
        params = {
            "agent": self.agent.init(k_agent, jnp.zeros((1, n, self.hidden_dim)), inputs),
            "mixer": init_mixer(self.mixer, k_mixer, n, a, spec.state_dim),
            "transform": self.transform.init(k_transform, jnp.zeros((1, n, a)),
                                             jnp.zeros((1, spec.state_dim))),
        }
        return LearnerState(params=params, target_params=params,
                            opt_state=self.optimizer.init(params))

    # ------------------------------------------------------------- policies
    def utilities(self, params: Params, q: jax.Array, state: jax.Array) -> jax.Array:
        """``g_i(Q_i; s)``: q [..., N, A], state [..., S] -> [..., N, A]."""
        return self.mixer.apply(params["mixer"], q, state, method=AdditiveUtilityMixer.utilities)

    def policy_scores(self, params: Params, q: jax.Array, state: jax.Array) -> jax.Array:
        """The policy's logits ``f_i(g_i(Q_i; s); s)``, in ``Q_i``'s order:
        q [..., N, A], state [..., S] -> [..., N, A]."""
        return self.transform.apply(params["transform"], self.utilities(params, q, state), state)

    def policy_log_probs(
        self, params: Params, q: jax.Array, state: jax.Array, avail: jax.Array
    ) -> jax.Array:
        """log π_i = log softmax_avail(f(g(Q_i)) / α): [..., N, A] -> [..., N, A]."""
        return ops.masked_log_softmax(self.policy_scores(params, q, state) / self.alpha, avail)

    def explore(self, params, q, state, avail, key, t_env):
        """Sample a_i ~ π_i, no ε (``action_selectors.py:176-184``): [E, N, A] -> [E, N]."""
        del t_env
        return ops.sample_masked(key, self.policy_log_probs(params, q, state, avail), avail), {}

    # --------------------------------------------------------------- losses
    def loss(
        self, params: Params, target_params: Params, ep: Episodes, keys: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``L_wtd + L_OPT`` (``nq_learner.py:57-152``) on episodes [B, T(+1), ...], one key
        per episode (keys [B], for the target's a'). -> (loss [], metrics)."""
        cfg, alpha = self.cfg, self.alpha
        sg = jax.lax.stop_gradient
        q = unroll_agent(self.agent, params["agent"], ep, self.hidden_dim)  # [B, T+1, N, A]
        q_target = sg(unroll_agent(self.agent, target_params["agent"], ep, self.hidden_dim))
        u = self.utilities(params, q, ep.state)  # g_i(Q_i), [B, T+1, N, A] (nq_learner.py:79)
        u_target = sg(self.utilities(target_params, q_target, ep.state))  # (:94)

        # ---- critic: Q_tot = Σ_i g_i(Q_i(τ_i, a_i)) (nmix.py:128; nq_learner.py:82, 132)
        q_tot = jnp.sum(take(u[:, :-1], ep.actions), axis=-1)  # [B, T]

        # ---- policy logits f(g(Q)) on detached utilities (nq_learner.py:98, 141): they
        # train f only, through L_OPT; the target reads them under stop_gradient.
        scores = self.transform.apply(params["transform"], sg(u), ep.state)  # [B, T+1, N, A]
        log_pi = ops.masked_log_softmax(scores / alpha, ep.avail)  # [B, T+1, N, A]

        # ---- target (nq_learner.py:97-127; utils/rl_utils.py:5-15)
        log_pi_next = sg(log_pi[:, 1:])  # [B, T, N, A]
        a_next = ops.sample_masked_per_step(keys, log_pi_next, ep.avail[:, 1:])  # [B, T, N]
        q_bar_next = jnp.sum(take(u_target[:, 1:], a_next), axis=-1)  # Σ_i ḡ_i(Q̄_i(a'_i))
        h_next = -alpha * jnp.sum(take(log_pi_next, a_next), axis=-1)  # −α log π(a'|s')
        y = jax.vmap(ops.released_lambda_returns, in_axes=(0, 0, 0, 0, 0, None, None))(
            ep.reward, ep.terminated, ep.mask, q_bar_next, h_next, cfg.gamma, cfg.td_lambda)
        td_error = q_tot - sg(y)  # [B, T]

        # ---- OPT: ½(Q_tot − Σ_i f_i(g_i(Q_i(a_i))))², f only (nq_learner.py:141-145)
        f_sum = jnp.sum(take(scores[:, :-1], ep.actions), axis=-1)  # [B, T]
        residual = sg(q_tot) - f_sum
        loss_opt = masked_mean(0.5 * residual**2, ep.mask)

        # ---- re-weighted TD loss (nq_learner.py:134-150): weight ½ where the TD step would
        # widen the residual (residual > 0 and td < 0, or residual ≤ 0 and td ≥ 0)
        widens = (residual > 0) == (td_error < 0)  # their gopt_mask
        weight = jnp.where(widens, 0.5, 1.0) * ep.mask  # [B, T]
        weight_sum = jnp.sum(weight)
        loss_wtd = jnp.sum(weight * 0.5 * td_error**2) / jnp.where(weight_sum > 0, weight_sum, 1.0)

        metrics = {
            "loss_q": loss_wtd,
            "loss_td": masked_mean(0.5 * td_error**2, ep.mask),  # unweighted, their loss_td
            "loss_opt": loss_opt,
            "td_downweighted": masked_mean(widens.astype(q_tot.dtype), ep.mask),
            "alpha": jnp.asarray(alpha, jnp.float32),
            "entropy": masked_mean(
                jnp.mean(ops.entropy(log_pi[:, :-1], ep.avail[:, :-1]), axis=-1), ep.mask),
            "q_tot": masked_mean(q_tot, ep.mask),
            "target": masked_mean(y, ep.mask),
            "td_abs": masked_mean(jnp.abs(td_error), ep.mask),
            # 0 by construction: f ∘ g preserves the order of Q_i
            "igm_gap": igm_gap(self.mixer, params["mixer"], q[:, :-1], scores[:, :-1],
                               ep.avail[:, :-1], ep.state[:, :-1], ep.mask),
        }
        return loss_wtd + loss_opt, metrics

    def update(
        self, ls: LearnerState, episodes: Episodes, key: jax.Array
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        return gradient_step(self, ls, episodes, key)
