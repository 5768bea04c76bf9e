"""HASAC for discrete actions (Liu et al., ICLR 2024), the paper's other maximum-entropy baseline.

Why it is here: the ME-IGM paper's Table 2 sets ME-QMIX and ME-QPLEX beside HASAC, the
maximum-entropy heterogeneous-agent actor-critic. It optimises the same entropy-regularised
objective as ME-IGM but with no value decomposition at all: one centralised soft critic
``Q(s, a_1..a_n)`` of the joint action, and actors improved one agent at a time against
it. It is the natural rival of a maximum-entropy *IGM* method.

What is implemented follows the authors' code for discrete actions (github PKU-MARL/HARL:
``harl/runners/off_policy_ha_runner.py`` ``train``, ``harl/algorithms/actors/hasac.py``,
``harl/algorithms/critics/soft_twin_continuous_q_critic.py``,
``harl/runners/off_policy_base_runner.py`` for the temperatures); every departure is
listed below. Equations are cited by the authors' files: the HASAC paper's text was
not available here.

Networks
  * actors ``π_i(·|τ_i) = softmax_avail(logits_i)``: the recurrent
    :class:`~meigm.networks.RNNAgent`, one set of weights per agent (the authors'
    ``share_param: False``; params ``agent`` stacked on a leading agent axis by
    :func:`per_agent_rnn`), or one shared set with ``share_actor=true``. The roll-out
    runs them, and greedy execution is the argmax of each actor's logits;
  * twin critics ``Q^k(s, a)``, k = 1, 2: a ``critic_hidden``-wide two-layer ReLU MLP on
    the state and the one-hot joint action (:class:`JointCritic`; the authors'
    ``[256, 256]``), params ``critic`` stacked on a leading axis of 2, with target copies.
  * temperatures: one ``α_i`` per agent for its actor loss and one ``α_c`` for the
    critic's target (the authors keep both, each tuned automatically).

One update, on a batch of whole episodes (``B`` episodes, ``T`` steps), in the authors' order:

  1. critics, both twins: Huber(δ = ``huber_delta``) of ``Q^k(s_t, a_t) − y_t`` with the
     soft TD(λ) target :func:`soft_target` — ``a'_{t+1} ~ π`` (current actors),
     ``Q̄_{t+1} = min_k Q̄^k(s_{t+1}, a'_{t+1})`` (target critics), entropy bonus
     ``−α_c Σ_i log π_i(a'_{i,t+1})``;
  2. actors, **sequentially** in a permutation drawn afresh each update
     (:meth:`HASAC.actor_pass`): first every agent's action is sampled from its current
     policy; then for each agent ``i`` in the order, its loss is
     ``−mean_t [min_k Q^k(s_t, a_{−i}, â_i) − α_i log π_i(â_i)]`` over the steps where it is
     alive, where ``â_i`` is a straight-through Gumbel-softmax sample of ``π_i`` (the
     authors' estimator: the one-hot sample goes into the critic, the gradient flows
     through the relaxed sample) and ``a_{−i}`` holds, for the agents updated earlier in
     this pass, actions sampled from their *updated* policies — the heterogeneous-agent
     sequential scheme — and for the later ones, the samples drawn at the start. After
     its Adam step agent ``i`` re-samples its action from its new policy;
  3. temperatures, Adam at ``hasac_alpha_lr`` (3e-3; the authors' 3e-4): ``α_i`` by
     ``−log α_i (log π_i(â_i) + H̄_i)`` over the steps where agent i is alive, and ``α_c``
     by ``−log α_c Σ_{i alive} (log π_i(â_i) + H̄_i)``, with the pre-step samples of step 2
     (the authors'), or with the exact ``E[log π_i] = −H(π_i)`` when ``alpha_loss=exact``.
     Unlike ME-IGM's α, which divides the policy's logits, HASAC's temperatures reach the
     policies only through the actors' gradient steps, so they must move slowly: with
     ME-IGM's rate of 0.3 both exploded on ``smax:3m`` (α_c to 1e11 within 30k env steps).
     The authors' 3e-4 is too slow the other way (see the departures below).

The exact expectation over an agent's actions: the authors use samples everywhere for
discrete actions (the next actions of the target, the straight-through actions of the
actor loss, the temperatures' log-probabilities), and so does this module, except that
``alpha_loss=exact`` (meigm's default for every learner with a learned temperature)
replaces the temperatures' sampled log-probability by the policy's exact entropy.

Departures from the authors' code, and why
  * recurrent actors on meigm's agent inputs (observation, agent id, last action), like
    every learner here (theirs: a 256-256 MLP on the observation); the critic is an MLP
    on the global state (their ``EP`` state type; the SMAC configs use ``FP``, an
    agent-specific state that meigm's scenarios do not provide);
  * the soft TD(λ) target of :func:`meigm.ops.soft_lambda_returns` with ``td_lambda``
    over whole replayed episodes (theirs: 20-step returns on single transitions with
    γ = 0.95 on SMAC); no value normalisation (meigm's ``reward_scale`` puts SMAX on
    SMAC's scale instead);
  * target critics refreshed by meigm's replay scheme (``target_update``: hard every
    200 episodes by default, or Polyak with ``tau``; theirs: Polyak 0.005 each update);
  * the target entropy per agent is ``target_entropy`` (0.24 on SMAX, as for ME-IGM) and
    the temperatures start at ``alpha_init`` (theirs: a target of
    ``−0.98 log(1/prod(shape))``, which is 0 for a ``Discrete`` space, and α starting at
    1) — ME-IGM's settings, so the two maximum-entropy methods are compared on equal
    terms; the critics' target counts only the agents alive at each step (theirs: all);
  * the temperatures learn at 3e-3 (theirs: 3e-4). From α₀ = 0.01 the actors collapse to
    an entropy of 0.01–0.06 within 30k env steps on ``smax:3m``; at 3e-4 α stayed at
    0.011 for 60k steps, at 3e-3 it rose ×1.5–1.8 per 15k steps and brought the entropy
    back to 0.15–0.24 (target 0.24) by 120k, and the run ended at 80% greedy wins at
    300k, level with QMIX (benchmarks/notes/hasac.md);
  * one update per collection of ``n_envs`` episodes, on ``batch_size`` replayed episodes,
    Adam at ``lr`` for the critics and ``actor_lr`` (None: ``lr``) for the actors (theirs:
    5e-4 both), gradient-norm clip ``grad_clip`` like every learner here.

Shapes: B episodes, T steps, N agents, A actions, S state size, K = 2 twin critics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from meigm import ops
from meigm.learners.common import active_agents, last_action_onehot, take, unroll_agent
from meigm.networks import RNNAgent
from meigm.networks.agent import agent_inputs
from meigm.ops import masked_mean
from meigm.types import Episodes, LearnerState, Params

if TYPE_CHECKING:
    from meigm.config import Config
    from meigm.envs import EnvSpec

#: Twin critics (clipped double Q, as in the authors' code).
N_CRITICS = 2


def per_agent_rnn(n_agents: int, n_actions: int, hidden_dim: int) -> nn.Module:
    """One :class:`RNNAgent` per agent, applied over the agent axis (-2) of its inputs:
    the same call as the shared agent (hidden [..., N, H], inputs [..., N, I] ->
    (hidden [..., N, H], logits [..., N, A])), every parameter with a leading axis N.
    Agent i's own weights are ``tree.map(lambda x: x[i], params)``, an RNNAgent's."""
    vmapped = nn.vmap(RNNAgent, in_axes=-2, out_axes=-2, variable_axes={"params": 0},
                      split_rngs={"params": True}, axis_size=n_agents)
    return vmapped(n_actions=n_actions, hidden_dim=hidden_dim)


class JointCritic(nn.Module):
    """``Q(s, a)``: state [..., S], joint action one-hot (or relaxed) [..., N, A] -> [...]."""

    hidden: int = 256

    @nn.compact
    def __call__(self, state: jax.Array, joint: jax.Array) -> jax.Array:
        x = jnp.concatenate([state, joint.reshape(*joint.shape[:-2], -1).astype(state.dtype)], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)[..., 0]


def soft_target(reward: jax.Array, terminated: jax.Array, mask: jax.Array, q_next: jax.Array,
                log_pi_next: jax.Array, alpha_c: jax.Array | float, gamma: float,
                lam: float) -> jax.Array:
    """The critics' target: soft TD(λ) with the joint entropy bonus.

    reward, terminated, mask [B, T]; q_next [B, T] ``min_k Q̄^k(s_{t+1}, a'_{t+1})``;
    log_pi_next [B, T, N] ``log π_i(a'_{i,t+1})`` -> y [B, T]. With λ = 0:
    ``y_t = r_t + γ (1 − d_t)(Q̄_{t+1} − α_c Σ_i log π_i(a'_{i,t+1}))`` (the authors'
    one-step form; they sum the agents' log-probabilities, FOP averages them).
    """
    h_next = -alpha_c * jnp.sum(log_pi_next, axis=-1)  # [B, T]
    return jax.vmap(ops.soft_lambda_returns, in_axes=(0, 0, 0, 0, 0, None, None))(
        reward, terminated, mask, q_next, h_next, gamma, lam)


def gumbel_per_step(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Gumbel(0, 1) noise [B, T, ...], step ``t`` drawn with ``fold_in(key, t)`` so that a
    batch trimmed to its longest episode draws what the full batch would at its steps
    (as :func:`meigm.ops.sample_masked_per_step`)."""
    keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(jnp.arange(shape[1]))
    rest = (shape[0], *shape[2:])
    return jax.vmap(lambda k: jax.random.gumbel(k, rest), out_axes=1)(keys)


def straight_through_sample(log_pi: jax.Array, gumbel: jax.Array) -> jax.Array:
    """The authors' ``gumbel_softmax(hard=True)`` at temperature 1: the one-hot of
    ``argmax(log π + g)`` (an exact sample of π) in value, the gradient of
    ``softmax(log π + g)``. log_pi, gumbel [..., A] -> [..., A]."""
    z = log_pi + gumbel
    soft = jax.nn.softmax(z, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))  # exactly one-hot in value


def temperature_loss(log_alpha: jax.Array, log_pi_taken: jax.Array, target: jax.Array | float,
                     mask: jax.Array) -> jax.Array:
    """The authors' temperature loss ``−mean(log α · (log π(â) + H̄))`` over ``mask``
    (log π detached): log_alpha [], log_pi_taken, mask [B, T] -> []. Its gradient
    ``−(mean log π + H̄) = H − H̄`` raises α while the entropy is below its target."""
    return -log_alpha * masked_mean(jax.lax.stop_gradient(log_pi_taken) + target, mask)


def joint_temperature_loss(log_alpha_c: jax.Array, log_pi_taken: jax.Array, alive: jax.Array,
                           target: jax.Array | float, mask: jax.Array) -> jax.Array:
    """The critics' temperature loss: :func:`temperature_loss` of the alive agents' joint
    ``Σ_{i alive} (log π_i(â_i) + H̄)`` at each step. log_alpha_c [], log_pi_taken, alive
    [B, T, N], mask [B, T] -> []. A dead agent has one action and no entropy to give:
    counting it in the target (as ``n · H̄``) pushed α_c up without bound once agents
    died on ``smax:3m``."""
    per_step = jnp.sum(jnp.where(alive, log_pi_taken + target, 0.0), axis=-1)  # [B, T]
    return temperature_loss(log_alpha_c, per_step, 0.0, mask)


def _slice(tree: Params, i: jax.Array) -> Params:
    return jax.tree.map(lambda x: x[i], tree)


def _put(tree: Params, i: jax.Array, value: Params) -> Params:
    return jax.tree.map(lambda x, v: jax.lax.dynamic_update_index_in_dim(x, v, i, 0), tree, value)


class HASAC:
    """HASAC with twin joint-action critics and sequentially updated recurrent actors."""

    has_policy = True
    data_scheme = "replay"  # episode replay with target networks (meigm.schemes)

    def __init__(self, cfg: Config, spec: EnvSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.hidden_dim = cfg.hidden_dim
        self.shared = cfg.share_actor
        n, a = spec.n_agents, spec.n_actions
        self.one_agent = RNNAgent(n_actions=a, hidden_dim=cfg.hidden_dim)
        self.agent = self.one_agent if self.shared else per_agent_rnn(n, a, cfg.hidden_dim)
        self.critic = JointCritic(hidden=cfg.critic_hidden)
        self.target_entropy = cfg.target_entropy  # per agent, H̄_i
        clip = optax.clip_by_global_norm(cfg.grad_clip)
        self.critic_opt = optax.chain(clip, optax.adam(cfg.lr))
        self.actor_opt = optax.chain(clip, optax.adam(cfg.lr if cfg.actor_lr is None else cfg.actor_lr))
        self.alpha_opt = (optax.adam(cfg.hasac_alpha_lr) if cfg.learn_alpha
                          else optax.set_to_zero())

    # ------------------------------------------------------------------ init
    def init(self, key: jax.Array) -> LearnerState:
        spec = self.spec
        n, a = spec.n_agents, spec.n_actions
        k_actor, k_critic = jax.random.split(key)
        hidden = jnp.zeros((1, n, self.hidden_dim))
        inputs = jnp.zeros((1, n, spec.obs_dim + n + a))
        critics = [self.critic.init(k, jnp.zeros((1, spec.state_dim)), jnp.zeros((1, n, a)))
                   for k in jax.random.split(k_critic, N_CRITICS)]
        log_alpha = jnp.log(jnp.asarray(self.cfg.alpha_init, jnp.float32))
        params = {
            "agent": self.init_actors(k_actor, hidden, inputs),
            "critic": jax.tree.map(lambda *xs: jnp.stack(xs), *critics),
            "log_alpha": jnp.full((n,), log_alpha),  # α_i, one per actor
            "log_alpha_critic": log_alpha,  # α_c, the critics' target
        }
        actor_state = (self.actor_opt.init(params["agent"]) if self.shared
                       else jax.vmap(self.actor_opt.init)(params["agent"]))  # one Adam per agent
        opt_state = {
            "critic": self.critic_opt.init(params["critic"]),
            "actor": actor_state,
            "alpha": self.alpha_opt.init(params["log_alpha"]),
            "alpha_critic": self.alpha_opt.init(params["log_alpha_critic"]),
        }
        return LearnerState(params=params, target_params=params, opt_state=opt_state)

    def init_actors(self, key: jax.Array, hidden: jax.Array, inputs: jax.Array) -> Params:
        """The actors' parameters; hidden [1, N, H], inputs [1, N, I]. Per-agent actors are
        initialised one agent at a time and stacked: ``per_agent_rnn``'s own ``init``
        would batch the GRU's orthogonal initialiser, and a batched QR on the CPU can
        deadlock XLA's thread pool (as :func:`meigm.program.init_seeds` explains)."""
        if self.shared:
            return self.agent.init(key, hidden, inputs)
        keys = jax.random.split(key, self.spec.n_agents)
        trees = [self.one_agent.init(k, hidden[:, i], inputs[:, i]) for i, k in enumerate(keys)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)

    # ------------------------------------------------------------- policies
    def policy_log_probs(self, params: Params, q: jax.Array, state: jax.Array,
                         avail: jax.Array) -> jax.Array:
        """log π_i: actor logits q [..., N, A], avail [..., N, A] -> [..., N, A]."""
        del params, state
        return ops.masked_log_softmax(q, avail)

    def explore(self, params, q, state, avail, key, t_env):
        """Sample ``a_i ~ π_i`` (the authors' stochastic roll-outs): [E, N, A] -> ([E, N], {})."""
        del params, state, t_env
        return ops.sample_masked(key, q, avail), {}

    def actor_params(self, agent_params: Params, i: jax.Array) -> Params:
        """Agent ``i``'s actor weights (an :class:`RNNAgent`'s)."""
        return agent_params if self.shared else _slice(agent_params, i)

    def unroll_one(self, params_i: Params, inputs_i: jax.Array) -> jax.Array:
        """One agent's actor over stored episodes from a zero hidden state:
        inputs_i [B, T+1, I] -> logits [B, T+1, A]."""
        hidden0 = jnp.zeros((inputs_i.shape[0], self.hidden_dim), inputs_i.dtype)

        def step(h, x_t):
            return self.one_agent.apply(params_i, h, x_t)

        _, logits = jax.lax.scan(step, hidden0, jnp.swapaxes(inputs_i, 0, 1))
        return jnp.swapaxes(logits, 0, 1)

    # --------------------------------------------------------------- critics
    def q_values(self, critic_params: Params, state: jax.Array, joint: jax.Array) -> jax.Array:
        """Each twin's ``Q^k(s, a)``: state [..., S], joint [..., N, A] -> [K, ...]."""
        return jax.vmap(lambda p: self.critic.apply(p, state, joint))(critic_params)

    def local_values(self, critic_params: Params, state: jax.Array, joint: jax.Array) -> jax.Array:
        """``min_k Q^k(s, a_i = b, a_{−i})`` for every agent i and action b, the others
        held at ``joint``: state [..., S], joint one-hot [..., N, A] -> [..., N, A].
        HASAC's stand-in for local values: what agent i's action is worth to the team
        given the others' (used by the IGM-gap metric and the Table 1 view)."""
        n, a = joint.shape[-2:]
        eye = jnp.eye(a, dtype=joint.dtype)

        def one(i, b):  # agent i deviates to action b
            return joint.at[..., i, :].set(eye[b])

        joints = jax.vmap(lambda i: jax.vmap(lambda b: one(i, b))(jnp.arange(a)))(jnp.arange(n))
        states = jnp.broadcast_to(state, (n, a, *state.shape))  # [N, A, ..., S]
        q = jnp.min(self.q_values(critic_params, states, joints), axis=0)  # [N, A, ...]
        return jnp.moveaxis(q, (0, 1), (-2, -1))

    def igm_gap(self, critic_params: Params, logits: jax.Array, avail: jax.Array,
                state: jax.Array, mask: jax.Array) -> jax.Array:
        """Figure 2's gap with the centralised critic, at the first step of each episode:
        mean of ``min_k Q^k(s, a_greedy) − min_k Q^k(s, a_policy)``, ``a_policy`` the modes
        of the π_i, ``a_greedy`` each agent's best action given the others' modes
        (the argmax of :meth:`local_values`, the analogue of FOP's argmax of its local
        ``Q_i``). Only the first step: the deviations cost ``N · A`` critic evaluations per
        state. logits, avail [B, N, A], state [B, S], mask [B] -> []."""
        sg = jax.lax.stop_gradient
        logits = sg(logits)
        a_mode = ops.masked_argmax(logits, avail)  # [B, N]
        onehot_mode = jax.nn.one_hot(a_mode, avail.shape[-1])
        q_local = self.local_values(sg(critic_params), state, onehot_mode)  # [B, N, A]
        a_policy = ops.policy_mode(logits, q_local, avail)  # ties of π_i broken by value
        a_greedy = ops.masked_argmax(q_local, avail)

        def q(actions):
            joint = jax.nn.one_hot(actions, avail.shape[-1])
            return jnp.min(self.q_values(sg(critic_params), state, joint), axis=0)  # [B]

        gap = q(a_greedy) - q(a_policy)
        mask = mask.astype(gap.dtype)
        return jnp.sum(gap * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    def joint_values(self, params: Params, inputs: jax.Array, state: jax.Array,
                     avail: jax.Array, joints: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The critic at one step from a zero recurrent state (the Table 1 view).

        inputs [N, I], state [S], avail [N, A], joints [J, N] ->
        (:meth:`local_values` [N, A] with the others at their policy modes;
        ``min_k Q^k(s, a)`` [J] for every joint action).
        """
        n, a = avail.shape
        hidden = jnp.zeros((n, self.hidden_dim), inputs.dtype)
        _, logits = self.agent.apply(params["agent"], hidden, inputs)  # [N, A]
        mode = jax.nn.one_hot(ops.masked_argmax(logits, avail), a)
        q_local = self.local_values(params["critic"], state, mode)
        j = joints.shape[0]
        q_tot = self.q_values(params["critic"], jnp.broadcast_to(state, (j, state.shape[-1])),
                              jax.nn.one_hot(joints, a))  # [K, J]
        return q_local, jnp.min(q_tot, axis=0)

    # --------------------------------------------------------------- updates
    def critic_loss(self, critic_params: Params, target_critic: Params, ep: Episodes,
                    logits: jax.Array, alpha_c: jax.Array, key: jax.Array
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Step 1: both twins toward :func:`soft_target`. logits [B, T+1, N, A] (current actors)."""
        cfg = self.cfg
        a = ep.avail.shape[-1]
        avail_next = ep.avail[:, 1:]
        log_pi_next = ops.masked_log_softmax(logits[:, 1:], avail_next)  # [B, T, N, A]
        a_next = ops.sample_masked_per_step(  # a' ~ π, one key per episode
            jax.random.split(key, ep.mask.shape[0]), log_pi_next, avail_next)
        q_next = jnp.min(self.q_values(target_critic, ep.state[:, 1:],
                                       jax.nn.one_hot(a_next, a)), axis=0)  # [B, T]
        y = jax.lax.stop_gradient(soft_target(
            ep.reward, ep.terminated, ep.mask, q_next, take(log_pi_next, a_next), alpha_c,
            cfg.gamma, cfg.td_lambda))  # [B, T]
        q = self.q_values(critic_params, ep.state[:, :-1], jax.nn.one_hot(ep.actions, a))  # [K, B, T]
        td = q - y[None]
        huber = optax.losses.huber_loss(q, jnp.broadcast_to(y, q.shape), delta=cfg.huber_delta)
        loss = jnp.sum(jax.vmap(masked_mean, in_axes=(0, None))(huber, ep.mask))
        return loss, {"loss_q": loss, "q_tot": masked_mean(q[0], ep.mask),
                      "target": masked_mean(y, ep.mask), "td_abs": masked_mean(jnp.abs(td[0]), ep.mask)}

    def actor_pass(self, agent_params: Params, actor_state, critic_params: Params,
                   log_alpha: jax.Array, ep: Episodes, key: jax.Array, order: jax.Array,
                   logits: jax.Array | None = None):
        """Step 2: the sequential actor updates, agents in ``order`` [N] (a permutation);
        ``logits`` [B, T+1, N, A]: the actors' outputs before the pass, if already computed.

        Returns (agent params, actor optimiser state, log π_i(â_i) [B, T, N] of the
        pre-step samples, the joint action one-hot [B, T, N, A] after the pass, the mean
        actor loss). Each agent's loss sees the earlier agents' re-sampled actions.
        """
        n, a = self.spec.n_agents, self.spec.n_actions
        sg = jax.lax.stop_gradient
        inputs = agent_inputs(ep.obs, last_action_onehot(ep.actions, a))  # [B, T+1, N, I]
        s_t, avail_t = ep.state[:, :-1], ep.avail[:, :-1]
        alive = active_agents(avail_t) & ep.mask[..., None]  # [B, T, N]
        k_start, k_pass = jax.random.split(key)
        if logits is None:
            logits = unroll_agent(self.agent, agent_params, ep, self.hidden_dim)
        logits0 = sg(logits[:, :-1])  # [B, T, N, A]
        joint0 = sg(straight_through_sample(ops.masked_log_softmax(logits0, avail_t),
                                            gumbel_per_step(k_start, logits0.shape)))  # [B, T, N, A]
        alpha = jnp.exp(log_alpha)  # [N]

        def agent_step(carry, k):
            params, opt, joint, logp_all, loss_sum = carry
            i = order[k]
            key_i = jax.random.fold_in(k_pass, k)
            inputs_i = jnp.take(inputs, i, axis=2)  # [B, T+1, I]
            avail_i = jnp.take(avail_t, i, axis=2)  # [B, T, A]
            alive_i = jnp.take(alive, i, axis=2)  # [B, T]
            noise = gumbel_per_step(jax.random.fold_in(key_i, 0), avail_i.shape)
            params_i = self.actor_params(params, i)

            def loss_i(p):
                log_pi = ops.masked_log_softmax(self.unroll_one(p, inputs_i)[:, :-1], avail_i)
                y = straight_through_sample(log_pi, noise)  # [B, T, A], one-hot in value
                q = jnp.min(self.q_values(critic_params, s_t,
                                          joint.at[:, :, i].set(y)), axis=0)  # [B, T]
                logp = jnp.sum(y * jnp.where(avail_i, log_pi, 0.0), axis=-1)  # log π_i(â_i)
                loss = -masked_mean(q - alpha[i] * logp, alive_i)
                return loss, (logp, ops.entropy(log_pi, avail_i))

            (loss, (logp, _)), grads = jax.value_and_grad(loss_i, has_aux=True)(params_i)
            opt_i = opt if self.shared else _slice(opt, i)
            updates, opt_i = self.actor_opt.update(grads, opt_i, params_i)
            params_i = optax.apply_updates(params_i, updates)
            params = params_i if self.shared else _put(params, i, params_i)
            opt = opt_i if self.shared else _put(opt, i, opt_i)
            # re-sample agent i's action from its updated policy for the agents after it
            log_pi_new = ops.masked_log_softmax(self.unroll_one(params_i, inputs_i)[:, :-1], avail_i)
            fresh = gumbel_per_step(jax.random.fold_in(key_i, 1), avail_i.shape)
            joint = joint.at[:, :, i].set(sg(straight_through_sample(log_pi_new, fresh)))
            logp_all = logp_all.at[:, :, i].set(sg(logp))
            return (params, opt, joint, logp_all, loss_sum + loss), None

        logp0 = jnp.zeros(alive.shape, logits0.dtype)
        carry = (agent_params, actor_state, joint0, logp0, jnp.zeros((), logits0.dtype))
        (agent_params, actor_state, joint, logp, loss_sum), _ = jax.lax.scan(
            agent_step, carry, jnp.arange(n))
        return agent_params, actor_state, logp, joint, loss_sum / n

    def update(self, ls: LearnerState, episodes: Episodes, key: jax.Array
               ) -> tuple[LearnerState, dict[str, jax.Array]]:
        return self.update_in_order(ls, episodes, key, None)

    def update_in_order(self, ls: LearnerState, ep: Episodes, key: jax.Array,
                        order: jax.Array | None) -> tuple[LearnerState, dict[str, jax.Array]]:
        """One update; ``order`` [N] fixes the actors' order (tests), None draws it."""
        cfg = self.cfg
        p, opt = ls.params, ls.opt_state
        k_order, k_critic, k_actor = jax.random.split(key, 3)
        if order is None:
            order = jax.random.permutation(k_order, self.spec.n_agents)
        avail_t = ep.avail[:, :-1]
        alive = active_agents(avail_t) & ep.mask[..., None]  # [B, T, N]
        logits = jax.lax.stop_gradient(unroll_agent(self.agent, p["agent"], ep, self.hidden_dim))
        alpha_c = jnp.exp(p["log_alpha_critic"])

        # 1. critics
        grads, m_critic = jax.grad(self.critic_loss, has_aux=True)(
            p["critic"], ls.target_params["critic"], ep, logits, alpha_c, k_critic)
        updates, critic_state = self.critic_opt.update(grads, opt["critic"], p["critic"])
        critic = optax.apply_updates(p["critic"], updates)

        # 2. actors, one after another against the updated critics
        agent, actor_state, logp, _, loss_pi = self.actor_pass(
            p["agent"], opt["actor"], critic, p["log_alpha"], ep, k_actor, order, logits)

        # 3. temperatures, from the pre-step samples (or the exact entropies)
        log_pi_t = ops.masked_log_softmax(logits[:, :-1], avail_t)
        entropy = ops.entropy(log_pi_t, avail_t)  # [B, T, N] before this update's steps
        taken = -entropy if cfg.alpha_loss == "exact" else logp

        def alpha_losses(log_alpha, log_alpha_c):
            per_agent = jax.vmap(temperature_loss, in_axes=(0, 2, None, 2))(
                log_alpha, taken, self.target_entropy, alive)  # [N]
            joint = joint_temperature_loss(log_alpha_c, taken, alive, self.target_entropy,
                                           ep.mask)
            return jnp.sum(per_agent), joint

        g_alpha = jax.grad(lambda la: alpha_losses(la, p["log_alpha_critic"])[0])(p["log_alpha"])
        g_alpha_c = jax.grad(lambda lc: alpha_losses(p["log_alpha"], lc)[1])(p["log_alpha_critic"])
        up_a, alpha_state = self.alpha_opt.update(g_alpha, opt["alpha"], p["log_alpha"])
        up_c, alpha_c_state = self.alpha_opt.update(g_alpha_c, opt["alpha_critic"],
                                                    p["log_alpha_critic"])
        params = {"agent": agent, "critic": critic,
                  "log_alpha": optax.apply_updates(p["log_alpha"], up_a),
                  "log_alpha_critic": optax.apply_updates(p["log_alpha_critic"], up_c)}
        opt_state = {"critic": critic_state, "actor": actor_state, "alpha": alpha_state,
                     "alpha_critic": alpha_c_state}

        first = ep.mask[:, 0]
        metrics = {
            **m_critic,
            "loss_pi": loss_pi,
            "alpha": jnp.mean(jnp.exp(p["log_alpha"])),
            "alpha_critic": alpha_c,
            # over every agent, dead ones (entropy 0) included: comparable with ME-IGM's
            "entropy": masked_mean(jnp.mean(entropy, axis=-1), ep.mask),
            # over the alive agents only: what the temperatures hold at the target (their
            # losses skip dead agents), so this, not ``entropy``, is the one to read beside
            # ``target_entropy``; late in a SMAX battle many agents are dead and the two part
            "entropy_alive": jnp.sum(jnp.where(alive, entropy, 0.0))
            / jnp.maximum(jnp.sum(alive), 1),
            "target_entropy": jnp.asarray(cfg.target_entropy, jnp.float32),
            "igm_gap": self.igm_gap(critic, logits[:, 0], ep.avail[:, 0], ep.state[:, 0], first),
        }
        return ls.replace(params=params, opt_state=opt_state), metrics
