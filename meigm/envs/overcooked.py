"""Overcooked (Carroll et al. 2019) from JaxMARL: ``overcooked:cramped_room``,
``overcooked:asymm_advantages`` — the two layouts of the paper's Figure 4.

Two cooks share a kitchen; a soup needs three onions in a pot, cooking time, a dish
and a delivery, which pays the team 20 (the *sparse* reward). Learning from the
sparse reward alone rarely starts, so, as is usual for Overcooked, training adds
JaxMARL's shaping reward (3 for an onion in a pot, 3 for picking up a dish, 5 for
picking up a soup), annealed linearly to zero over ``reward_shaping_horizon`` env
steps (the trainer owns the schedule; see :func:`meigm.rollout.rollout`). Test
returns are always sparse.

Metrics: the sparse return (``test/return``) and ``soups`` delivered per episode.
Observations are JaxMARL's 26-channel grid per agent, flattened; the layout is fully
observable, so the global state is the two agents' observations concatenated (the
adapter's default, as pymarl does for scenarios without a state of their own). Every
action is always available. Episodes last 400 steps and end by the time limit only
(truncation: bootstrapped).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from meigm.envs.base import Env, JaxMARLEnv

OVERCOOKED_LAYOUTS = ("cramped_room", "asymm_advantages")


def _team_shaping(info: dict[str, Any]) -> jax.Array:
    """Both cooks' shaping rewards summed: the team is rewarded for either's progress."""
    return jnp.sum(jnp.stack(list(info["shaped_reward"].values())))


def build_overcooked(layout: str, name: str) -> Env:
    """JaxMARL's Overcooked on ``layout`` (a name in ``OVERCOOKED_LAYOUTS``) behind the adapter."""
    import warnings

    from jaxmarl.environments.overcooked import Overcooked, overcooked_layouts
    from jaxmarl.environments.overcooked.overcooked import DELIVERY_REWARD

    with warnings.catch_warnings():  # JaxMARL suggests OvercookedV2; the paper used V1
        warnings.simplefilter("ignore", DeprecationWarning)
        env = Overcooked(layout=overcooked_layouts[layout])

    # Sparse team reward: both agents receive the same delivery reward.
    def reward(rewards: dict[str, jax.Array]) -> jax.Array:
        return rewards["agent_0"]

    # No state_fn: the adapter's default global state, both cooks' observations side by
    # side. The kitchen is fully observable, so either one alone would carry the same
    # facts, but each is egocentric (its own layers first); the pair is the state pymarl
    # gives scenarios without one of their own. No get_avail_actions in JaxMARL's
    # Overcooked (it raises NotImplementedError): the adapter makes every action available.
    return JaxMARLEnv(
        env, name=name, episode_limit=int(env.max_steps), reward_fn=reward,
        shaped_fn=_team_shaping, info_keys=(), default_t_max=5_000_000,
        # its only done is the step limit: a truncation, bootstrapped
        limit_is_truncation=True,
        # JaxMARL's IPPO Overcooked configs anneal the shaping over 2.5e6 of their 5e6 steps
        # Per-agent target entropy 1.4 (78% of uniform over 6 actions), not SMACv2's 0.24
        # (the paper gives none for Overcooked). With 0.24, α fell to 0.0003-0.005 while
        # values were still flat (many actions tie here: a move into a counter is a
        # stay) and exploration stopped; 0.8 explored on cramped room in some seeds but
        # not on asymmetric advantages. 1.4 against 0.8, ME-QMIX, 3 seeds each, fig4's
        # laptop loop: early training soups +0.70 [0.19, 1.39] on cramped room and +0.43
        # [0.25, 0.72] on asymm, every cramped-room seed at 9-10.7 greedy soups at 500k
        # against 0-10 (benchmarks/notes/overcooked.md, "Overcooked's target entropy").
        config_defaults={"reward_shaping_horizon": 2_500_000, "target_entropy": 1.4},
        # The sparse reward is exactly DELIVERY_REWARD per soup served (either cook, both
        # cooks get it), nothing else, so the soup count is the return over it.
        return_metrics={"soups": 1.0 / float(DELIVERY_REWARD)},
    )
