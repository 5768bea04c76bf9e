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
#: Reward of one delivered soup in JaxMARL's Overcooked.
DELIVERY_REWARD = 20.0


def _team_shaping(info: dict[str, Any]) -> jax.Array:
    """Both cooks' shaping rewards summed: the team is rewarded for either's progress."""
    return jnp.sum(jnp.stack(list(info["shaped_reward"].values())))


def build_overcooked(layout: str, name: str) -> Env:
    import warnings

    from jaxmarl.environments.overcooked import Overcooked, overcooked_layouts

    with warnings.catch_warnings():  # JaxMARL suggests OvercookedV2; the paper used V1
        warnings.simplefilter("ignore", DeprecationWarning)
        env = Overcooked(layout=overcooked_layouts[layout])

    # Sparse team reward: both agents receive the same delivery reward.
    def reward(rewards: dict[str, jax.Array]) -> jax.Array:
        return rewards["agent_0"]

    return JaxMARLEnv(
        env, name=name, episode_limit=int(env.max_steps), reward_fn=reward,
        shaped_fn=_team_shaping, info_keys=(), default_t_max=5_000_000,
        limit_is_truncation=True, config_defaults={"reward_shaping_horizon": 2_500_000},
        return_metrics={"soups": 1.0 / DELIVERY_REWARD},  # each delivery pays exactly 20
    )
