"""ε-greedy value decomposition baselines: QMIX and VDN as in pymarl2 (Hu et al. 2021).

Deterministic local greedy policies with ε-greedy exploration annealed linearly over
``epsilon_anneal_steps``; double-Q targets (next action = argmax of the *online*
``Q_i`` over available actions, valued by the target networks) and pymarl2's TD(λ) —
:func:`meigm.ops.soft_lambda_returns` with a zero entropy bonus.

Shapes: B episodes, T steps, N agents, A actions, S state size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax

from meigm import ops
from meigm.learners.common import (
    gradient_step,
    init_mixer,
    labelled_optimizer,
    mix,
    unroll_agent,
)
from meigm.networks import RNNAgent, make_mixer
from meigm.ops import masked_mean
from meigm.types import Episodes, LearnerState, Params

if TYPE_CHECKING:
    from meigm.config import Config
    from meigm.envs import EnvSpec


def linear_epsilon(t_env: jax.Array, start: float, finish: float, anneal_steps: int) -> jax.Array:
    """pymarl's linear ε schedule: start -> finish over ``anneal_steps`` env steps."""
    frac = jnp.clip(t_env / jnp.maximum(anneal_steps, 1), 0.0, 1.0)  # a lane's scalar in the program
    return start + frac * (finish - start)


class ValueDecomposition:
    """QMIX / VDN with ε-greedy exploration and double-Q TD(λ) targets."""

    has_policy = False
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
        critic = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.lr))
        self.optimizer = labelled_optimizer({"critic": critic}, lambda k: "critic")

    def init(self, key: jax.Array) -> LearnerState:
        spec = self.spec
        k_agent, k_mixer = jax.random.split(key)
        n, a = spec.n_agents, spec.n_actions
        params = {
            "agent": self.agent.init(
                k_agent, jnp.zeros((1, n, self.hidden_dim)), jnp.zeros((1, n, spec.obs_dim + n + a))
            ),
            "mixer": init_mixer(self.mixer, k_mixer, n, a, spec.state_dim),
        }
        return LearnerState(params=params, target_params=params,
                            opt_state=self.optimizer.init(params))

    def epsilon(self, t_env: jax.Array) -> jax.Array:
        c = self.cfg
        return linear_epsilon(t_env, c.epsilon_start, c.epsilon_finish, c.resolved_epsilon_anneal)

    def explore(self, params, q, state, avail, key, t_env):
        """ε-greedy over available actions: [E, N, A] -> ([E, N], no extras)."""
        del params, state
        return ops.epsilon_greedy(key, q, avail, self.epsilon(t_env)), {}

    def policy_log_probs(self, params: Params, q, state, avail) -> jax.Array:
        """The greedy policy as a (degenerate) distribution: log 1 on the argmax."""
        del params, state
        greedy = jax.nn.one_hot(ops.masked_argmax(q, avail), q.shape[-1])
        return jnp.where(greedy > 0, 0.0, ops.policy.MASKED_LOGIT)

    def loss(
        self, params: Params, target_params: Params, ep: Episodes, keys: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del keys  # nothing random: double Q's targets are argmaxes
        cfg = self.cfg
        sg = jax.lax.stop_gradient
        q = unroll_agent(self.agent, params["agent"], ep, self.hidden_dim)  # [B, T+1, N, A]
        q_target = unroll_agent(self.agent, target_params["agent"], ep, self.hidden_dim)
        q_tot = mix(self.mixer, params["mixer"], q[:, :-1], ep.actions, ep.avail[:, :-1], ep.state[:, :-1])

        a_next = ops.masked_argmax(sg(q[:, 1:]), ep.avail[:, 1:])  # double Q: online argmax
        q_bar_next = mix(
            self.mixer, target_params["mixer"], q_target[:, 1:], a_next, ep.avail[:, 1:], ep.state[:, 1:]
        )  # [B, T]
        y = jax.vmap(ops.soft_lambda_returns, in_axes=(0, 0, 0, 0, 0, None, None))(
            ep.reward, ep.terminated, ep.mask, q_bar_next, jnp.zeros_like(q_bar_next),
            cfg.gamma, cfg.td_lambda,
        )
        td_error = q_tot - sg(y)
        loss = masked_mean(td_error**2, ep.mask)
        return loss, {
            "loss_q": loss,
            "q_tot": masked_mean(q_tot, ep.mask),
            "target": masked_mean(y, ep.mask),
            "td_abs": masked_mean(jnp.abs(td_error), ep.mask),
        }

    def update(
        self, ls: LearnerState, episodes: Episodes, key: jax.Array
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        return gradient_step(self, ls, episodes, key)
