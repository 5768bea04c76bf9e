"""Scenario registry: ``family:scenario`` names -> :class:`~meigm.envs.base.Env`.

Each family registers a builder that takes the scenario name and the user's
``env_args``; adding a family is one entry here, never a string check elsewhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from meigm.envs.base import Env, JaxMARLEnv, team_mean
from meigm.envs.matrix import PRESETS, MatrixGame
from meigm.envs.overcooked import OVERCOOKED_LAYOUTS, build_overcooked
from meigm.envs.smax import RACE_SCENARIOS, SMAX_MAPS, build_smax
from meigm.errors import ConfigError, MeigmError

Builder = Callable[[str, dict[str, Any]], Env]


def _check_args(name: str, args: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ConfigError(
            f"env_args {unknown} not understood by {name}; allowed: {', '.join(allowed) or 'none'}"
        )


def _matrix(scenario: str, args: dict[str, Any]) -> Env:
    name = f"matrix:{scenario}"
    if scenario == "custom":
        _check_args(name, args, ("payoff", "steps"))
        if "payoff" not in args:
            raise ConfigError("matrix:custom needs env_args.payoff (a nested list, one axis per agent)")
        payoff = args["payoff"]
    else:
        _check_args(name, args, ("steps",))
        payoff = PRESETS[scenario]
    try:
        payoff = np.asarray(payoff, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"env_args.payoff must be a rectangular nested list of numbers ({exc})") from None
    steps = args.get("steps", 1)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"env_args.steps must be a positive integer, got {steps!r}")
    if payoff.ndim < 2:
        raise ConfigError(f"env_args.payoff needs one axis per agent (>= 2 agents), got shape {payoff.shape}")
    game = MatrixGame(payoff, steps=steps)
    env = JaxMARLEnv(
        game,
        name=name,
        episode_limit=steps,
        state_fn=lambda s: jax.nn.one_hot(s.t, steps + 1),
        # 5000 one-step episodes: with the paper's batch of 128 episodes and 4 parallel
        # envs that is ~1200 updates. Measured on table1 (10 seeds, me_qmix): which joint
        # action a seed settles on is decided in the first ~200 steps and did not change
        # between 1k and 20k steps (benchmarks/README.md), so 20k only costs time.
        default_t_max=5_000 * steps,
    )
    env.payoff = payoff  # for the Table 1 view: the true payoff beside the learned Q_tot
    return env


def _smax(scenario: str, args: dict[str, Any]) -> Env:
    name = f"smax:{scenario}"
    _check_args(name, args, ())
    return build_smax(scenario, name)


def _overcooked(scenario: str, args: dict[str, Any]) -> Env:
    name = f"overcooked:{scenario}"
    _check_args(name, args, ())
    return build_overcooked(scenario, name)


def _mpe(scenario: str, args: dict[str, Any]) -> Env:
    name = f"mpe:{scenario}"
    _check_args(name, args, ())
    from jaxmarl import make

    env = make("MPE_simple_spread_v3")
    return JaxMARLEnv(env, name=name, episode_limit=int(env.max_steps), reward_fn=team_mean,
                      default_t_max=2_000_000, limit_is_truncation=True)


# family -> (builder, scenarios)
FAMILIES: dict[str, tuple[Builder, tuple[str, ...]]] = {
    "matrix": (_matrix, (*PRESETS, "custom")),
    "smax": (_smax, (*RACE_SCENARIOS, *SMAX_MAPS)),
    "overcooked": (_overcooked, OVERCOOKED_LAYOUTS),
    "mpe": (_mpe, ("simple_spread",)),
}


def registered() -> list[str]:
    """Every registered scenario name, ``family:scenario``."""
    return [f"{fam}:{s}" for fam, (_, scenarios) in FAMILIES.items() for s in scenarios]


def make_env(name: str, env_args: dict[str, Any] | None = None) -> Env:
    """Build a scenario by registry name; unknown names list close matches."""
    names = registered()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise MeigmError(f"unknown environment {name!r}.{hint} Registered: {', '.join(names)}")
    family, scenario = name.split(":", 1)
    builder, _ = FAMILIES[family]
    return builder(scenario, dict(env_args or {}))
