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
from meigm.envs.host import HostEnv
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
        payoff64 = np.asarray(payoff, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"env_args.payoff must be a rectangular nested list of numbers ({exc})") from None
    if payoff64.size and not np.all(np.abs(payoff64) <= np.finfo(np.float32).max):
        bad = payoff64[~(np.abs(payoff64) <= np.finfo(np.float32).max)].flat[0]
        raise ConfigError(f"env_args.payoff entries must be finite float32 numbers (|x| <= 3.4e38), "
                          f"got {float(bad)!r}")
    payoff = payoff64.astype(np.float32)
    steps = args.get("steps", 1)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"env_args.steps must be a positive integer, got {steps!r}")
    if payoff.ndim < 2:
        raise ConfigError(f"env_args.payoff needs one axis per agent (>= 2 agents), got shape {payoff.shape}")
    if min(payoff.shape) < 2:
        # an agent with one action has no choice to learn, and ME-IGM's target entropy
        # (a fraction of log |A|) cannot be reached by a one-action policy
        raise ConfigError(f"env_args.payoff needs >= 2 actions per agent (axis length), "
                          f"got shape {payoff.shape}")
    game = MatrixGame(payoff, steps=steps)
    env = JaxMARLEnv(
        game,
        name=name,
        episode_limit=steps,
        state_fn=lambda s: jax.nn.one_hot(s.t, steps + 1),
        # 5000 one-step episodes: with the paper's batch of 128 episodes and 4 parallel
        # envs that is ~1200 updates. Measured on table1 (10 seeds, me_qmix): which joint
        # action a seed settles on is decided in the first ~200 steps and did not change
        # between 1k and 20k steps (benchmarks/notes/table1.md), so 20k only costs time.
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


#: MPE's paper-free settings: its time limit ends the episode (see Config.bootstrap_truncated).
MPE_DEFAULTS = {"bootstrap_truncated": False}


def _mpe(scenario: str, args: dict[str, Any]) -> Env:
    name = f"mpe:{scenario}"
    _check_args(name, args, ())
    from jaxmarl import make

    env = make("MPE_simple_spread_v3")
    return JaxMARLEnv(env, name=name, episode_limit=int(env.max_steps), reward_fn=team_mean,
                      default_t_max=2_000_000, limit_is_truncation=True,
                      config_defaults=MPE_DEFAULTS)


def _pettingzoo(target: str, args: dict[str, Any]) -> HostEnv:
    from meigm.envs.pettingzoo import PettingZooEnv

    if not target:
        raise MeigmError("pettingzoo: needs a module, e.g. pettingzoo:mpe2.simple_spread_v3")
    return PettingZooEnv(f"pettingzoo:{target}", target, args)


def _smacv2(scenario: str, args: dict[str, Any]) -> HostEnv:
    from meigm.envs.smacv2 import build_smacv2  # imports nothing of smacv2 until called

    return build_smacv2(scenario, f"smacv2:{scenario}", args)


#: SMACv2's 15 scenarios (the paper's Table 2): race x (allies_vs_enemies).
SMACV2_SCENARIOS = tuple(f"{race}_{size}" for race in ("protoss", "terran", "zerg")
                         for size in ("5_vs_5", "10_vs_10", "10_vs_11", "20_vs_20", "20_vs_23"))


# family -> (builder, scenarios) for JAX environments (jitted roll-out)
FAMILIES: dict[str, tuple[Builder, tuple[str, ...]]] = {
    "matrix": (_matrix, (*PRESETS, "custom")),
    "smax": (_smax, (*RACE_SCENARIOS, *SMAX_MAPS)),
    "overcooked": (_overcooked, OVERCOOKED_LAYOUTS),
    "mpe": (_mpe, ("simple_spread",)),
}

# family -> (builder, scenarios or None for any name) for host environments
# (:mod:`meigm.envs.host`, stepped outside JAX by :mod:`meigm.rollout.host`)
HOST_FAMILIES: dict[str, tuple[Callable[[str, dict[str, Any]], HostEnv], tuple[str, ...] | None]] = {
    "pettingzoo": (_pettingzoo, None),
    "smacv2": (_smacv2, SMACV2_SCENARIOS),
}


def registered() -> list[str]:
    """Every registered JAX scenario name, ``family:scenario``."""
    return [f"{fam}:{s}" for fam, (_, scenarios) in FAMILIES.items() for s in scenarios]


def host_registered() -> list[str]:
    """Host scenario names; ``family:<...>`` where a family takes any name."""
    out = []
    for fam, (_, scenarios) in HOST_FAMILIES.items():
        out += [f"{fam}:{s}" for s in scenarios] if scenarios is not None else [f"{fam}:<module>"]
    return out


def make_env(name: str, env_args: dict[str, Any] | None = None) -> Env | HostEnv:
    """Build a scenario by registry name; unknown names list close matches.

    JAX scenarios return an :class:`Env`, host ones (PettingZoo, SMACv2) a
    :class:`~meigm.envs.host.HostEnv`; the trainer picks the matching roll-out.
    """
    family, _, scenario = name.partition(":")
    if family in HOST_FAMILIES:
        builder, scenarios = HOST_FAMILIES[family]
        if scenarios is not None and scenario not in scenarios:
            raise MeigmError(f"unknown environment {name!r}; {family} scenarios: "
                             f"{', '.join(f'{family}:{s}' for s in scenarios)}")
        return builder(scenario, dict(env_args or {}))
    names = registered()
    if name not in names:
        close = difflib.get_close_matches(name, names + host_registered(), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise MeigmError(f"unknown environment {name!r}.{hint} Registered: "
                         f"{', '.join(names + host_registered())}")
    builder, _ = FAMILIES[family]
    return builder(scenario, dict(env_args or {}))
