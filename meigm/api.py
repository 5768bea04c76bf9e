"""The Python API: train and evaluate from a script or a notebook.

::

    import meigm

    cfg = meigm.config.build(None, ["t_max=20000"], alg="me_qmix", env="matrix:table1", seeds=3)
    results = meigm.train(cfg, run_dir="runs/table1")    # or meigm.train({"alg": ..., ...})
    print(results["final"])                              # per-seed greedy test metrics
    again = meigm.evaluate("runs/table1")                # re-runs the final evaluation

The command line (:mod:`meigm.experiments.cli`) is a thin layer over these two
functions; both raise :class:`meigm.errors.MeigmError` (one readable line) for user
errors, and :class:`meigm.config.ConfigError` (a subclass) for a bad config.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from meigm import config as config_mod
from meigm.config import Config
from meigm.errors import ConfigError, MeigmError


def as_config(config: Config | Mapping[str, Any] | str | Path) -> Config:
    """A :class:`Config` from a config, a mapping of its fields (validated as a YAML
    file would be), or the path of a YAML config file."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return config_mod.from_dict(dict(config))
    if isinstance(config, (str, Path)):
        return config_mod.build(config)
    raise ConfigError(
        f"config must be a meigm.Config, a mapping of its fields or a YAML path, got "
        f"{type(config).__name__}")


def _check_args(function: str, **checks: tuple[Any, Any, str]) -> None:
    """Each argument ``name=(value, allowed types, what is allowed)`` has one of its types
    (a bool is no int), else a one-line :class:`MeigmError` naming it: a wrong type here
    would otherwise surface deep inside JAX."""
    for name, (value, types, allowed) in checks.items():
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise MeigmError(f"meigm.{function}(): {name} must be {allowed}, got {value!r} "
                             f"({type(value).__name__})")


_PATH = (str, os.PathLike)


def train(
    config: Config | Mapping[str, Any] | str | Path | None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] = print,
    env: Any = None,
) -> dict[str, Any]:
    """Train every seed of ``config`` in one compiled program and return its results.

    ``run_dir``: where to write the run (config, metrics, checkpoints, results; see
    :mod:`meigm.experiments.run`); None writes nothing. ``resume``: continue the
    unfinished run in ``run_dir`` from its newest complete checkpoint, with its own
    ``config.yaml`` (``config`` None, or equal to it once resolved). ``env``: a custom environment
    (a :class:`meigm.envs.Env`) in place of the registry's ``config.env``.

    Returns a dict with, among others, ``final`` (each seed's last greedy test metrics),
    ``history`` (every metrics row), ``eval_t_env`` (each seed's env steps at each
    evaluation), ``config`` (the resolved :class:`Config`), ``final_params`` (parameters,
    leading axis = seed), ``wall_seconds`` and ``env_steps_per_second``, and
    ``run_dir`` when one was written.
    """
    from meigm.envs import Env
    from meigm.envs.host import HostEnv
    from meigm.experiments.run import train_run

    if isinstance(env, str):
        raise MeigmError(f"meigm.train(): env must be an environment object (a meigm.Env), got "
                         f"the string {env!r}; a registered scenario is the config's env key "
                         f"(e.g. {{'env': {env!r}}} or env={env!r} in meigm.config.build)")
    _check_args("train", run_dir=(run_dir, (*_PATH, type(None)), "a path or None"),
                resume=(resume, (bool,), "True or False"),
                progress=(progress, (bool,), "True or False"),
                env=(env, (Env, HostEnv, type(None)), "a meigm.Env or None"))
    if not callable(echo):
        raise MeigmError(f"meigm.train(): echo must be a function of one string, got {echo!r}")
    if not resume:
        if config is None:
            raise ConfigError("train() needs a config (or resume=True with the run_dir to continue)")
        return train_run(as_config(config), run_dir, progress=progress, echo=echo, env=env)
    from meigm.experiments.evaluate import load_config
    from meigm.program import resolve_config

    if run_dir is None:
        raise MeigmError("resume=True needs the run_dir of the run to continue")
    cfg = load_config(Path(run_dir))
    if config is not None and resolve_config(as_config(config), env)[0] != cfg:
        raise MeigmError(f"the config differs from {Path(run_dir) / 'config.yaml'}; a resumed "
                         "run keeps its own (pass config=None)")
    return train_run(cfg, run_dir, progress=progress, echo=echo, resume=resume, env=env)


def train_grid(
    config: Config | Mapping[str, Any] | str | Path | None,
    vary: Mapping[str, Sequence[Any]] | None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Train a grid over lane fields (:mod:`meigm.lanes`: learning rates, temperatures,
    ε's schedule, γ, ...) as lanes of *one* compiled program: every point of the grid
    with ``config``'s seeds, each point what it computes in its own program of the same
    seed count (bit for bit, or to float rounding for the PPO family: :mod:`meigm.lanes`),
    compiled once.

    ``vary``: {lane field: values}, e.g. ``{"alpha_lr": [3e-4, 0.3], "target_entropy":
    [0.1, 0.5]}`` (4 points). ``run_dir``: the grid's directory; each point is a run
    directory inside it, named by its values (``alpha_lr=0.0003,target_entropy=0.1``),
    with everything a run directory holds (``meigm plot``/``table``/``eval`` read them as
    any run), and ``grid.json`` lists them. ``resume=True`` continues an unfinished grid
    from ``run_dir`` (``config`` and ``vary`` None). Returns {point name: results}.

    ::

        grid = meigm.train_grid(cfg, {"alpha_lr": [3e-4, 0.3]}, "runs/alpha_lr")
        {name: r["final"] for name, r in grid.items()}
    """
    import json

    from meigm.experiments.evaluate import load_config
    from meigm.experiments.run import check_new_run_dir, train_runs
    from meigm.lanes import GRID_FILE, grid_variants

    _check_args("train_grid", run_dir=(run_dir, (*_PATH, type(None)), "a path or None"),
                resume=(resume, (bool,), "True or False"),
                progress=(progress, (bool,), "True or False"))
    if resume:
        if run_dir is None or config is not None or vary is not None:
            raise MeigmError("meigm.train_grid(resume=True) takes only the grid's run_dir "
                             "(config and vary None: the grid keeps its own)")
        listing = Path(run_dir) / GRID_FILE
        if not listing.is_file():
            raise MeigmError(f"{run_dir} is not a grid's directory (no {GRID_FILE})")
        names = json.loads(listing.read_text())["runs"]
        outs = [Path(run_dir) / name for name in names]
        results = train_runs([load_config(out) for out in outs], outs, progress, echo, resume=True)
        return dict(zip(names, results, strict=True))
    if config is None or not isinstance(vary, Mapping):
        raise ConfigError("meigm.train_grid() needs a config and vary, {lane field: [values]}")
    points = grid_variants(as_config(config), dict(vary))
    names = [name for name, _ in points]
    outs: list[Path | None] = [None] * len(points)
    if run_dir is not None:
        root = Path(run_dir)
        listed = root / GRID_FILE
        if listed.is_file() and json.loads(listed.read_text()).get("runs") != names:
            raise MeigmError(f"{root} already holds another grid; choose another directory "
                             "(nothing was changed)")
        outs = [root / name for name in names]  # each refused if it holds a run (not a failed start)
        for out in outs:  # every refusal before anything is written
            check_new_run_dir(out)
        root.mkdir(parents=True, exist_ok=True)
        (root / GRID_FILE).write_text(json.dumps({"vary": {k: list(v) for k, v in vary.items()},
                                                  "runs": names}, indent=1))
    results = train_runs([cfg for _, cfg in points], outs, progress, echo)
    return dict(zip(names, results, strict=True))


def evaluate(run_dir: str | Path, checkpoint: str | Path | None = None,
             episodes: int | None = None, write: bool = False) -> dict[str, Any]:
    """Re-run the greedy evaluation of a saved run's checkpoint (default: the newest).

    With the run's own ``test_episodes`` (``episodes=None``) the figures equal the logged
    ones bit for bit on the same machine (``reproduces_log`` says whether they do).
    ``write`` also saves them to ``<run_dir>/eval.json``, as ``meigm eval`` does.
    Returns ``per_seed`` and ``mean`` test metrics, the checkpoint and its evaluation index.
    """
    from meigm.experiments.evaluate import evaluate_run, load_run, write_json

    _check_args("evaluate", run_dir=(run_dir, _PATH, "a path"),
                checkpoint=(checkpoint, (*_PATH, type(None)), "a path or None"),
                episodes=(episodes, (numbers.Integral, type(None)), "a positive int or None"),
                write=(write, (bool,), "True or False"))
    if episodes is not None and episodes <= 0:
        raise MeigmError(f"meigm.evaluate(): episodes must be a positive int or None, got {episodes}")
    run = load_run(run_dir, checkpoint, None if episodes is None else int(episodes))
    result = evaluate_run(run)
    if write:
        write_json(run.run_dir / "eval.json", result)
    return result
