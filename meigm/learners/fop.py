"""FOP: factorised maximum-entropy actor-critic (Zhang et al., ICML 2021), as a baseline.

Why it is here: FOP is the maximum-entropy MARL method the ME-IGM paper sets beside
ME-QMIX in Table 1 and Figure 2. Its joint value can be accurate, yet each agent's policy is a
Boltzmann distribution over its *own* ``Q_i``, and nothing ties the mode of those local
policies to the best joint action of ``Q_tot`` — the misalignment ME-IGM's OPT removes.
The spec (``shared/spec/ME-IGM.md``) reports FOP's Table 1 policies at ~0.21 on A and
~0.4 on B and C.

What is implemented follows the authors' code (github liyheng/FOP,
``src/learners/fop_learner.py``, ``src/modules/mixers/fop.py``,
``src/config/algs/fop.yaml``) where it makes a modelling choice, and our framework where
their code only does bookkeeping; every departure is listed below. Equation numbers are
not cited: the paper's text was not available here, so anchors name the authors' files.

Networks
  * actor ``π_i(·|τ_i) = softmax_avail(logits_i)``: the shared recurrent
    :class:`~meigm.networks.RNNAgent`, params ``agent`` — the network the roll-out runs,
    so greedy execution (argmax of the agent output) is the argmax of each policy;
  * twin critics ``Q^k_i(τ_i,·)``, k = 1, 2: two more RNNAgents, params ``critic`` stacked
    on a leading axis of 2 (the authors: two critics and two mixers, clipped double Q);
  * twin mixers (:class:`FOPMixer`), params ``mixer`` likewise stacked:

      ``V_i = α log Σ_{available a} exp(Q_i(a)/α)``                      (soft value)
      ``λ_i(s,a) = Σ_heads |w_k(s)| · σ(u_k(s))_i · σ(z_k(s,a))_i > 0``  (attention)
      ``Q_tot(s,a) = Σ_i λ_i (Q_i(a_i) − V_i) + Σ_i V_i + V(s)``

    As in the authors' mixer the advantage ``Q_i − V_i`` inside the λ-term is detached:
    it is computed as ``Σ_i (λ_i − 1)·sg(Q_i − V_i) + Σ_i Q_i + V(s)`` (same value), so
    the critic's ``Q_i`` gets gradient with weight 1, λ learns through the advantage and
    ``V_i`` gets none.
  * One temperature ``α`` for every agent. The paper's individual temperatures
    ``α_i = α/λ_i`` do not appear in the authors' code: ``V_i`` and the actor loss both
    use the scheduled ``α``; we do the same.

Losses (one update on a batch of episodes; each trains only its own parameters)
  * critic, both twins: ``(Q^k_tot(s_t,a_t) − y_t)²`` with the soft TD(λ) target of
    :func:`meigm.ops.soft_lambda_returns` — ``a'_{t+1} ~ π`` (online actors),
    ``Q̄_{t+1} = min_k Q̄^k_tot(s_{t+1}, a'_{t+1})`` (target critics and mixers, ``V_i``
    from the target critics) and the entropy bonus
    ``h_{t+1} = −α · mean_i log π_i(a'_{i,t+1})`` (the authors average over agents);
  * actor: ``mean_i Σ_a π_i(a) (α log π_i(a) − min_k Q^k_i(a))`` — the KL from ``π_i`` to
    ``softmax(Q_i/α)`` up to a constant, discrete SAC style, critics detached.

Schedules (``meigm/config.py``)
  * ``α`` linear from ``fop_alpha_start`` to ``fop_alpha_finish`` over
    ``fop_alpha_anneal_steps`` env steps: the authors' ``max(0.05, 0.5 − t_env/200000)``
    is 0.5 -> 0.05 over 90k steps. ``α`` lives in the learner state (``params["alpha"]``,
    never trained) and :meth:`FOP.schedule` sets it from ``t_env`` before each update, so
    the state alone gives ``Q_tot`` (diagnostics, checkpoints);
  * exploration: the authors' multinomial selector mixes the policy with a uniform
    ε-floor and then takes a uniform random action with probability ε; both together
    are the behaviour policy ``(1−ε)² π + (1 − (1−ε)²) U_avail``, ε linear from
    ``epsilon_start`` to ``epsilon_finish`` over ``fop_epsilon_anneal_steps`` env steps
    (authors: 1.0 -> 0.05 over 50k, also in the ME-IGM paper's FOP settings). On Table 1
    the roll-outs so stay near uniform and every joint action is seen; ``Q_tot`` becomes
    accurate once the attention weights have grown large enough to carve the payoff out
    of ``Σ V_i + V(s)`` (measured, 10 seeds: mean error over the 9 joint actions 4.2 after
    the default 5k steps, 0.45 after 50k, with policies ~0.19/0.37/0.44 on A/B/C).

Departures from the authors' code, and why
  * the critics are recurrent RNNAgents on the actor's inputs (theirs: a 64-64 MLP on
    observation and agent id), so one network class serves every learner here;
  * the entropy bonus enters the λ-return at each step, discounted and cut at terminal
    states (theirs adds ``−α mean log π`` once to the finished λ-return, undiscounted and
    also after terminal steps, which biases a one-step game's ``Q_tot`` by a constant);
  * ``V_i`` and the policies normalise over *available* actions only (theirs: ``V_i``
    over all actions); the actor loss uses ``π`` itself, not the ε-floored roll-out
    distribution their non-test forward pass returns;
  * Adam at ``lr`` (critics, mixers) and ``actor_lr`` (actors), like every learner here
    (theirs: RMSprop, 5e-4 for both); gradient clipping per group, both twins together.

Shapes: B episodes, T steps, N agents, A actions, S state size, K = 2 twin critics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from meigm import ops
from meigm.learners.common import (
    gradient_step,
    labelled_optimizer,
    take,
    unroll_agent,
)
from meigm.learners.value_decomposition import linear_epsilon
from meigm.networks import RNNAgent
from meigm.ops import masked_mean
from meigm.types import Episodes, LearnerState, Params

if TYPE_CHECKING:
    from meigm.config import Config
    from meigm.envs import EnvSpec

#: Twin critics and mixers (clipped double Q, as in the authors' code).
N_CRITICS = 2


def soft_value(q: jax.Array, avail: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """``V_i = α log Σ_{available a} exp(Q_i(a)/α)``: q, avail [..., A] -> [...].

    0 where no action is available (padding), so the mixer never sees the -1e10 of a
    fully masked row.
    """
    v = alpha * jax.nn.logsumexp(ops.mask_logits(q / alpha, avail), axis=-1)
    return jnp.where(jnp.any(avail, axis=-1), v, 0.0)


def soft_target(
    reward: jax.Array,
    terminated: jax.Array,
    mask: jax.Array,
    q_tot_next: jax.Array,
    log_pi_next: jax.Array,
    alpha: jax.Array | float,
    gamma: float,
    lam: float,
) -> jax.Array:
    """FOP's critic target for a batch: soft TD(λ) with the agents' mean entropy bonus.

    reward, terminated, mask [B, T]; q_tot_next [B, T] ``min_k Q̄^k_tot(s_{t+1}, a'_{t+1})``;
    log_pi_next [B, T, N] ``log π_i(a'_{i,t+1})`` -> y [B, T]. With λ = 0:
    ``y_t = r_t + γ (1 − d_t)(Q̄_{t+1} − α mean_i log π_i(a'_{i,t+1}))``.
    """
    h_next = -alpha * jnp.mean(log_pi_next, axis=-1)  # [B, T]
    return jax.vmap(ops.soft_lambda_returns, in_axes=(0, 0, 0, 0, 0, None, None))(
        reward, terminated, mask, q_tot_next, h_next, gamma, lam
    )


def actor_objective(log_pi: jax.Array, q: jax.Array, avail: jax.Array,
                    alpha: jax.Array | float) -> jax.Array:
    """``Σ_a π(a) (α log π(a) − Q(a))`` over available actions: [..., A] -> [...].

    Equals ``α KL(π ‖ softmax_avail(Q/α)) − V`` with ``V`` the :func:`soft_value`, so it is
    minimised by the Boltzmann policy of ``Q``, where it is ``−V``.
    """
    return jnp.sum(jnp.where(avail, jnp.exp(log_pi) * (alpha * log_pi - q), 0.0), axis=-1)


class FOPMixer(nn.Module):
    """FOP's attention mixer (authors' ``src/modules/mixers/fop.py``).

    ``Q_tot = Σ_i λ_i(s,a) (Q_i − V_i) + Σ_i V_i + V(s)`` with, per head k,
    ``λ_{k,i} = |w_k(s)| · σ(u_k(s))_i · σ(z_k(s, a))_i`` summed over heads (one linear
    layer each, heads fused into one ``Dense``), plus ``eps`` so that ``λ > 0`` even where
    float32 sigmoids saturate to 0; ``V(s)`` is a one-hidden-layer MLP. Unlike QPLEX it is
    not IGM: ``Q_i − V_i < 0`` everywhere (``V_i`` is a soft maximum) and joint actions
    with smaller λ can outrank the local argmaxes.
    """

    n_agents: int
    heads: int = 4
    embed_dim: int = 32
    eps: float = 1e-10

    def setup(self) -> None:
        k, n = self.heads, self.n_agents
        self.head_key = nn.Dense(k)  # w_k(s), one scale per head
        self.head_agents = nn.Dense(k * n)  # u_k(s)
        self.head_action = nn.Dense(k * n)  # z_k(s, a)
        self.v_hidden = nn.Dense(self.embed_dim)
        self.v_out = nn.Dense(1)

    def lambda_weights(self, state: jax.Array, action_onehot: jax.Array) -> jax.Array:
        """state [..., S], action_onehot [..., N, A] -> λ [..., N] > 0."""
        k, n = self.heads, self.n_agents
        batch = state.shape[:-1]
        joint = action_onehot.reshape(*action_onehot.shape[:-2], -1).astype(state.dtype)  # [..., N*A]
        key = jnp.abs(self.head_key(state))[..., None]  # [..., K, 1]
        agents = nn.sigmoid(self.head_agents(state)).reshape(*batch, k, n)  # [..., K, N]
        action = nn.sigmoid(self.head_action(jnp.concatenate([state, joint], axis=-1)))
        action = action.reshape(*batch, k, n)  # [..., K, N]
        return jnp.sum(key * agents * action, axis=-2) + self.eps

    def state_value(self, state: jax.Array) -> jax.Array:
        """V(s): state [..., S] -> [...]."""
        return self.v_out(nn.relu(self.v_hidden(state)))[..., 0]

    def __call__(self, q: jax.Array, v: jax.Array, state: jax.Array,
                 action_onehot: jax.Array) -> jax.Array:
        """q [..., N] ``Q_i(τ_i, a_i)``, v [..., N] ``V_i(τ_i)``, state [..., S],
        action_onehot [..., N, A] -> Q_tot [...]."""
        lam = self.lambda_weights(state, action_onehot)  # [..., N]
        adv = jax.lax.stop_gradient(q - v)  # [..., N], < 0
        # = Σ λ (Q − V) + Σ V + V(s) in value; gradient reaches Q_i with weight 1.
        return jnp.sum((lam - 1.0) * adv, axis=-1) + jnp.sum(q, axis=-1) + self.state_value(state)


class FOP:
    """FOP with twin recurrent critics, attention mixers and recurrent actors (``fop``)."""

    has_policy = True
    data_scheme = "replay"  # episode replay with target networks (meigm.schemes)
    #: ``update`` is :func:`gradient_step` on ``loss``, a masked mean over episodes
    separable_loss = True

    def __init__(self, cfg: Config, spec: EnvSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.hidden_dim = cfg.hidden_dim
        self.agent = RNNAgent(n_actions=spec.n_actions, hidden_dim=cfg.hidden_dim)  # actor
        self.critic = RNNAgent(n_actions=spec.n_actions, hidden_dim=cfg.hidden_dim)
        self.mixer = FOPMixer(n_agents=spec.n_agents, heads=cfg.qplex_heads,
                              embed_dim=cfg.mixing_embed)
        clip = optax.clip_by_global_norm(cfg.grad_clip)
        actor = optax.chain(clip, optax.adam(cfg.lr if cfg.actor_lr is None else cfg.actor_lr))
        critic = optax.chain(clip, optax.adam(cfg.lr))
        self.optimizer = labelled_optimizer(
            {"actor": actor, "critic": critic, "schedule": optax.set_to_zero()},
            {"agent": "actor", "critic": "critic", "mixer": "critic", "alpha": "schedule"}.get,
        )

    # ------------------------------------------------------------------ init
    def init(self, key: jax.Array) -> LearnerState:
        spec = self.spec
        n, a = spec.n_agents, spec.n_actions
        k_actor, k_critic, k_mixer = jax.random.split(key, 3)
        hidden = jnp.zeros((1, n, self.hidden_dim))
        inputs = jnp.zeros((1, n, spec.obs_dim + n + a))
        q, state = jnp.zeros((1, n)), jnp.zeros((1, spec.state_dim))

        def stacked(init, key):  # one init per twin, stacked on a leading K axis
            trees = [init(k) for k in jax.random.split(key, N_CRITICS)]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)

        params = {
            "agent": self.agent.init(k_actor, hidden, inputs),
            "critic": stacked(lambda k: self.critic.init(k, hidden, inputs), k_critic),
            "mixer": stacked(lambda k: self.mixer.init(k, q, q, state, jnp.zeros((1, n, a))), k_mixer),
            "alpha": self.alpha(jnp.zeros((), jnp.int32)),
        }
        return LearnerState(params=params, target_params=params,
                            opt_state=self.optimizer.init(params))

    # ------------------------------------------------------------- schedules
    def alpha(self, t_env: jax.Array) -> jax.Array:
        """The temperature at ``t_env`` env steps: [] -> [] float32."""
        c = self.cfg
        return jnp.asarray(
            linear_epsilon(t_env, c.fop_alpha_start, c.fop_alpha_finish, c.fop_alpha_anneal_steps),
            jnp.float32,
        )

    def epsilon(self, t_env: jax.Array) -> jax.Array:
        c = self.cfg
        return linear_epsilon(t_env, c.epsilon_start, c.epsilon_finish, c.fop_epsilon_anneal_steps)

    def schedule(self, ls: LearnerState, t_env: jax.Array) -> LearnerState:
        """Write ``α(t_env)`` into the state; the trainer calls it before each update."""
        return ls.replace(params={**ls.params, "alpha": self.alpha(t_env)})

    # ------------------------------------------------------------- policies
    def policy_log_probs(
        self, params: Params, q: jax.Array, state: jax.Array, avail: jax.Array
    ) -> jax.Array:
        """log π_i: actor logits q [..., N, A], avail [..., N, A] -> [..., N, A]."""
        del params, state
        return ops.masked_log_softmax(q, avail)

    def explore(self, params, q, state, avail, key, t_env):
        """Sample the authors' behaviour policy ``(1−ε)² π_i + (1 − (1−ε)²) U_avail``
        (their ε-floor and ε-random pick in one mixture): [E, N, A] -> ([E, N], no extras)."""
        keep = (1.0 - self.epsilon(t_env)) ** 2
        pi = jnp.exp(self.policy_log_probs(params, q, state, avail))
        uniform = avail / jnp.maximum(jnp.sum(avail, axis=-1, keepdims=True), 1)
        return ops.sample_masked(key, jnp.log(keep * pi + (1.0 - keep) * uniform), avail), {}

    # --------------------------------------------------------------- critics
    def critic_q(self, critic_params: Params, ep: Episodes) -> jax.Array:
        """Both twins unrolled over stored episodes: [K, B, T+1, N, A]."""
        return jax.vmap(lambda p: unroll_agent(self.critic, p, ep, self.hidden_dim))(critic_params)

    def q_tot(self, mixer_params: Params, q: jax.Array, v: jax.Array, actions: jax.Array,
              state: jax.Array) -> jax.Array:
        """Each twin's ``Q_tot(s, a)``: q [K, ..., N, A], v [K, ..., N], actions [..., N] int,
        state [..., S] -> [K, ...]."""
        onehot = jax.nn.one_hot(actions, q.shape[-1], dtype=q.dtype)
        return jax.vmap(lambda p, q_k, v_k: self.mixer.apply(p, take(q_k, actions), v_k, state, onehot))(
            mixer_params, q, v
        )

    def igm_gap(self, params: Params, q: jax.Array, logits: jax.Array, avail: jax.Array,
                state: jax.Array, mask: jax.Array) -> jax.Array:
        """Figure 2's gap with the online networks: masked mean of
        ``Q_tot(s, a_greedy) − Q_tot(s, a_policy)``, ``a_greedy`` the local argmaxes of
        ``min_k Q^k_i``, ``a_policy`` the modes of π_i (:func:`meigm.ops.policy_mode`),
        ``Q_tot = min_k Q^k_tot``. Same
        definition as :func:`meigm.learners.common.igm_gap`, whose ``mix`` cannot feed
        FOP's mixer (it needs ``V_i`` from the full tables and α).

        q [K, B, T, N, A], logits, avail [B, T, N, A], state [B, T, S], mask [B, T] -> [].
        """
        sg = jax.lax.stop_gradient
        q, logits = sg(q), sg(logits)
        q_min = jnp.min(q, axis=0)  # [B, T, N, A]
        a_greedy = ops.masked_argmax(q_min, avail)  # [B, T, N]
        a_policy = ops.policy_mode(logits, q_min, avail)  # ties of π_i broken by Q_i
        v = soft_value(q, avail, sg(params["alpha"]))  # [K, B, T, N]

        def q_tot(actions):
            return jnp.min(self.q_tot(sg(params["mixer"]), q, v, actions, state), axis=0)  # [B, T]

        differ = jnp.any(a_greedy != a_policy, axis=-1)  # [B, T]
        return masked_mean(jnp.where(differ, q_tot(a_greedy) - q_tot(a_policy), 0.0), mask)

    def joint_values(self, params: Params, inputs: jax.Array, state: jax.Array,
                     avail: jax.Array, joints: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The critic at one step from a zero recurrent state (the Table 1 view).

        inputs [N, I], state [S], avail [N, A], joints [J, N] ->
        (``min_k Q^k_i`` [N, A], the values the actors follow;
        ``min_k Q^k_tot(s, a)`` [J] for every joint action, the value the targets use).
        """
        n, a = avail.shape
        hidden = jnp.zeros((n, self.hidden_dim), inputs.dtype)
        q = jax.vmap(lambda p: self.critic.apply(p, hidden, inputs)[1])(params["critic"])  # [K, N, A]
        v = soft_value(q, avail, params["alpha"])  # [K, N]
        j = joints.shape[0]
        q_tot = self.q_tot(  # [K, J]
            params["mixer"],
            jnp.broadcast_to(q[:, None], (N_CRITICS, j, n, a)),
            jnp.broadcast_to(v[:, None], (N_CRITICS, j, n)),
            joints,
            jnp.broadcast_to(state, (j, state.shape[-1])),
        )
        return jnp.min(q, axis=0), jnp.min(q_tot, axis=0)

    # --------------------------------------------------------------- losses
    def loss(
        self, params: Params, target_params: Params, ep: Episodes, keys: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        cfg = self.cfg
        sg = jax.lax.stop_gradient
        alpha = sg(params["alpha"])  # scheduled, never trained
        s_t, s_next = ep.state[:, :-1], ep.state[:, 1:]  # [B, T, S]
        avail_t, avail_next = ep.avail[:, :-1], ep.avail[:, 1:]  # [B, T, N, A]

        logits = unroll_agent(self.agent, params["agent"], ep, self.hidden_dim)  # [B, T+1, N, A]
        log_pi = ops.masked_log_softmax(logits, ep.avail)  # [B, T+1, N, A]
        q = self.critic_q(params["critic"], ep)  # [K, B, T+1, N, A]
        q_target = self.critic_q(target_params["critic"], ep)

        # ---- critics: Q^k_tot(s_t, a_t) -> soft TD(λ) target from the target networks
        v = soft_value(q[:, :, :-1], avail_t, alpha)  # [K, B, T, N]
        q_tot = self.q_tot(params["mixer"], q[:, :, :-1], v, ep.actions, s_t)  # [K, B, T]
        log_pi_next = sg(log_pi[:, 1:])  # [B, T, N, A]
        a_next = ops.sample_masked_per_step(keys, log_pi_next, avail_next)  # a' ~ π, [B, T, N]
        v_next = soft_value(q_target[:, :, 1:], avail_next, alpha)  # target V_i, [K, B, T, N]
        q_tot_next = jnp.min(  # clipped double Q, [B, T]
            self.q_tot(target_params["mixer"], q_target[:, :, 1:], v_next, a_next, s_next), axis=0
        )
        y = sg(soft_target(ep.reward, ep.terminated, ep.mask, q_tot_next, take(log_pi_next, a_next),
                           alpha, cfg.gamma, cfg.td_lambda))  # [B, T]
        td_error = q_tot - y[None]  # [K, B, T]
        loss_q = jnp.sum(jax.vmap(masked_mean, in_axes=(0, None))(td_error**2, ep.mask))

        # ---- actors: Σ_a π_i (α log π_i − min_k Q^k_i), i.e. KL(π_i ‖ softmax(Q_i/α)) + const
        q_min = sg(jnp.min(q[:, :, :-1], axis=0))  # [B, T, N, A]
        log_pi_t = log_pi[:, :-1]
        per_agent = actor_objective(log_pi_t, q_min, avail_t, alpha)  # [B, T, N]
        loss_pi = masked_mean(jnp.mean(per_agent, axis=-1), ep.mask)

        metrics = {
            "loss_q": loss_q,
            "loss_pi": loss_pi,
            "alpha": alpha,
            "entropy": masked_mean(jnp.mean(ops.entropy(log_pi_t, avail_t), axis=-1), ep.mask),
            "q_tot": masked_mean(q_tot[0], ep.mask),
            "target": masked_mean(y, ep.mask),
            "td_abs": masked_mean(jnp.abs(td_error[0]), ep.mask),
            # Figure 2: FOP's policies follow Q_i softly and its mixer is not IGM, so > 0 is possible.
            "igm_gap": self.igm_gap(params, q[:, :, :-1], logits[:, :-1], avail_t, s_t, ep.mask),
        }
        return loss_q + loss_pi, metrics

    def update(
        self, ls: LearnerState, episodes: Episodes, key: jax.Array
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        return gradient_step(self, ls, episodes, key)
