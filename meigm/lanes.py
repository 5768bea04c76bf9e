"""Lanes: numeric hyper-parameters as data of the compiled program.

A *lane* is one seed of one variant. The training program is vmapped over its lanes (the
named axis :data:`meigm.types.SEEDS`), and the config fields listed in
:data:`LANE_FIELDS` — learning rates, temperatures, exploration schedules, discounts,
loss weights — enter it as per-lane scalars (``TrainState.hyper``) rather than as
constants folded into the code. So variants that differ only in such numbers train as
lanes of *one* compiled program: a grid over ``alpha_lr`` × ``target_entropy`` is compiled
once, and two processes that run the same config with different learning rates share
one entry of the persistent compilation cache (:mod:`meigm.compilation_cache`).

How a learner reads them: nothing in the learners changes. Inside the traced program
each lane's learner is built from :func:`bind` — the run's config with its lane fields
replaced by that lane's traced scalars — so ``cfg.lr`` in a learner *is* the lane's
learning rate. Every program reads its lane fields this way, one lane or many, so a
lane of a packed program computes what the same variant computes alone: bit for bit for
the replay learners, whose updates run lane after lane; for the PPO family, whose update
is a plain vmap over lanes, to float rounding where the CPU vectorises a wider batch
differently (tests/test_lanes.py).

A field that changes a shape or a code path (the algorithm, a network width, the batch,
the buffer, the roll-out width, ``learn_alpha``, ...) cannot vary between lanes;
:func:`check_variants` refuses such a grid naming the field.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from meigm.config import Config
from meigm.errors import ConfigError

#: Config fields that may differ between the lanes of one program, with their dtype in
#: it. Each is only ever used as a number inside traced code (an optimiser's rate, a
#: factor, a threshold), never for a shape or a Python branch.
LANE_FIELDS: dict[str, Any] = {
    # optimisation
    "lr": jnp.float32, "opt_lr": jnp.float32, "actor_lr": jnp.float32,
    "grad_clip": jnp.float32, "gamma": jnp.float32, "td_lambda": jnp.float32,
    "tau": jnp.float32, "reward_scale": jnp.float32,
    # ε-greedy exploration (QMIX/QPLEX/VDN; FOP's roll-outs)
    "epsilon_start": jnp.float32, "epsilon_finish": jnp.float32,
    "epsilon_anneal_steps": jnp.int32, "fop_epsilon_anneal_steps": jnp.int32,
    # temperatures (ME-IGM, soft_qmix, HASAC, FOP)
    "alpha_init": jnp.float32, "alpha_lr": jnp.float32, "target_entropy": jnp.float32,
    "hasac_alpha_lr": jnp.float32, "fop_alpha_start": jnp.float32,
    "fop_alpha_finish": jnp.float32, "fop_alpha_anneal_steps": jnp.int32,
    # the PPO family
    "ppo_lr": jnp.float32, "ppo_adam_eps": jnp.float32, "ppo_clip": jnp.float32,
    "gae_lambda": jnp.float32, "entropy_coef": jnp.float32, "value_loss_coef": jnp.float32,
    "huber_delta": jnp.float32,
}

#: Fields that name a run rather than change its program: they may differ between the
#: variants of a packed program too (``seed`` enters as the lanes' keys).
FREE_FIELDS = frozenset({"seed", "wandb", "wandb_project"})

#: One lane's hyper-parameters: {field: [] scalar} inside the program, {field: [L]} stacked.
Hyper = dict[str, jax.Array]


def lane_values(cfg: Config) -> dict[str, float | int]:
    """The lane fields of a *resolved* config as plain numbers: ``opt_lr`` and
    ``actor_lr`` left at None follow ``lr``, as the learners read them."""
    values = {}
    for name, dtype in LANE_FIELDS.items():
        value = getattr(cfg, name)
        if value is None and name in ("opt_lr", "actor_lr"):
            value = cfg.lr
        if value is None:
            raise ConfigError(f"{name} is unset: lanes need a resolved config (Config.resolve)")
        values[name] = int(value) if dtype == jnp.int32 else float(value)
    return values


def hyper_of(cfg: Config) -> Hyper:
    """One lane's hyper-parameters: [] arrays of the config's lane fields."""
    return {k: jnp.asarray(v, LANE_FIELDS[k]) for k, v in lane_values(cfg).items()}


def stack_hyper(variants: Sequence[Config], seeds: int) -> dict[str, np.ndarray]:
    """{field: [L·S]}: variant ``l``'s values for its ``seeds`` lanes ``l·S .. l·S+S-1``."""
    rows = [lane_values(v) for v in variants]
    return {k: np.repeat(np.asarray([r[k] for r in rows], dtype), seeds)
            for k, dtype in LANE_FIELDS.items()}


def bind(cfg: Config, hyper: Hyper) -> Config:
    """``cfg`` with its lane fields replaced by one lane's traced scalars.

    Only for code being traced: the result skips the config's checks (its fields are
    arrays), and only learners and data schemes built inside the program read it."""
    bound = copy.copy(cfg)
    for name, value in hyper.items():
        object.__setattr__(bound, name, value)
    return bound


def check_variants(variants: Sequence[Config]) -> None:
    """Refuse variants that cannot be lanes of one program: they must agree on every
    field but the lane fields and :data:`FREE_FIELDS`. The error names the first field
    that differs and says which fields may."""
    if not variants:
        raise ConfigError("a packed program needs at least one variant")
    first = variants[0]
    for other in variants[1:]:
        for f in dataclasses.fields(Config):
            if f.name in LANE_FIELDS or f.name in FREE_FIELDS:
                continue
            a, b = getattr(first, f.name), getattr(other, f.name)
            if a != b:
                raise ConfigError(
                    f"{f.name} differs between variants ({a!r} vs {b!r}) and cannot be a lane: "
                    f"it changes the program's shapes or code; lanes may differ only in "
                    f"{', '.join(sorted(LANE_FIELDS))} (and seed)")


#: The file a grid's directory holds: which variant directories its packed program trains.
GRID_FILE = "grid.json"


def grid_variants(cfg: Config, vary: dict[str, Sequence[Any]]) -> list[tuple[str, Config]]:
    """The grid of ``vary`` ({lane field: values}) over ``cfg``, as (name, config) per point
    in row-major order; the name (``alpha_lr=0.0003,target_entropy=0.1``) is its run
    directory inside the grid's. Every value is checked as a config value is."""
    from meigm.config import from_dict

    if not vary:
        raise ConfigError("a grid needs at least one lane field to vary")
    for name, values in vary.items():
        if name not in LANE_FIELDS:
            raise ConfigError(f"{name} cannot be varied within one program: it changes the "
                              f"program's shapes or code; lane fields are {', '.join(sorted(LANE_FIELDS))}")
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"{name}: the grid takes a non-empty list of values, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{name}: a value is repeated in {list(values)!r}")
    out = []
    for point in itertools.product(*vary.values()):
        values = dict(zip(vary, point, strict=True))
        name = ",".join(f"{k}={v}" for k, v in values.items())
        out.append((name, from_dict({**cfg.to_dict(), **values})))
    return out
