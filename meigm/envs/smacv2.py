"""SMACv2 (StarCraft II) as a meigm host environment: ``smacv2:<race>_<n>_vs_<m>``.

The paper's Table 2 scenarios on the real benchmark (Ellis et al. 2022), through
SMACv2's ``StarCraftCapabilityEnvWrapper``. The game runs in a separate StarCraft II
process, so this is a :class:`~meigm.envs.host.HostEnv` stepped by meigm's host
roll-out (``env_workers`` spreads the copies over worker processes). Needs the
``smacv2`` package, StarCraft II (Linux 4.10) and the SMACv2 maps: ``docs/smacv2.md``.

Scenarios: race ∈ {protoss, terran, zerg} × (allies, enemies) ∈ {(5, 5), (10, 10),
(10, 11), (20, 20), (20, 23)}, with the settings of SMACv2's own per-race configs
(:func:`scenario_config`). Metric: ``won`` (1 if the battle was won).

How SMACv2's interface is read (one :class:`~meigm.envs.host.HostStep` per call):

* obs [N, O] from ``get_obs()``, state [S] from ``get_state()``, avail [N, A] from
  ``get_avail_actions()``; sizes and the episode limit (200) from ``get_env_info()``;
* dead agents: SMACv2 gives a dead unit only the no-op (action 0); any agent with no
  action other than 0 available is treated as dead — zero observation, only action 0
  available — and is sent action 0 whatever the policy chose (SMACv2 asserts that every
  action it receives is available);
* ``step`` returns SMACv2's reward (already the shared team reward). Its ``terminated``
  covers three endings, separated here: a decided battle (won, lost or both teams
  dead) is ``terminated``; the time limit — ``info["episode_limit"]``, which SMACv2
  sets only when built with ``continuing_episode=True``, so the adapter always builds
  it so (that flag changes nothing else in SMACv2) — is ``truncated``; a crashed game
  that SMACv2 restarted (it then returns ``(0, True, {})``) is ``truncated`` too, with
  the previous step's arrays as the final observation, since the true one is lost;
* ``info["won"]`` = ``info["battle_won"]``.

Seeding — what ``reset(seed)`` fixes and what StarCraft II does not guarantee:

* the episode's scenario draw (unit types, start positions): SMACv2's distributions
  each hold a NumPy ``Generator`` created from OS entropy; ``reset`` replaces them with
  generators spawned from ``seed``, so the same seed gives the same teams and positions;
* SMACv2's other Python-side randomness (``random.shuffle`` of the teams and of the
  observation order, ``np.random.rand`` for ``prob_obs_enemy``) draws from the global
  ``random`` / ``np.random`` states; the adapter swaps in states seeded by ``seed``
  around every SMACv2 call and restores the caller's afterwards, so it is reproducible
  and leaves the process's global generators alone;
* the StarCraft II engine: its random seed can only be set when the game process
  starts (SMACv2's ``seed`` argument). The game starts at the first ``reset`` and takes
  that reset's seed; later episodes reuse the running game (SMACv2 kills the units and
  spawns new ones), so their engine-side randomness also depends on every episode
  played before in that process. Replaying a single episode exactly therefore needs a
  fresh environment whose first reset uses the same seed — and even then StarCraft II
  does not promise bit-identical games across versions, machines or restarts after a
  crash. SMACv2's ``attack`` capability (unused by these scenarios) draws from an
  unseeded generator at every attack and cannot be reproduced at all.

``env_args`` may override the keys in :data:`OVERRIDABLE` (StarCraft2Env arguments,
e.g. ``debug``, ``obs_last_action``, ``prob_obs_enemy``) and ``capability_config``
(merged into the scenario's, e.g. ``{"team_gen": {"weights": [0.5, 0.5, 0.0]}}``;
``n_units``/``n_enemies`` come from the scenario name). Anything else is a
:class:`~meigm.errors.ConfigError` listing the allowed keys.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from meigm.envs.base import EnvSpec
from meigm.envs.host import HostEnv, HostStep, dead_agent_avail
from meigm.errors import ConfigError, MeigmError

RACES = ("protoss", "terran", "zerg")
#: (allies, enemies) of the paper's Table 2, keyed by the scenario suffix.
SIZES: dict[str, tuple[int, int]] = {
    "5_vs_5": (5, 5),
    "10_vs_10": (10, 10),
    "10_vs_11": (10, 11),
    "20_vs_20": (20, 20),
    "20_vs_23": (20, 23),
}

# Per-race unit mix of SMACv2's configs (facts from oxwhirl/smacv2,
# smacv2/examples/configs/sc2_gen_{protoss,terran,zerg}.yaml, the configs of the SMACv2
# paper; benellis3/pymarl2 src/config/envs/sc2_gen_*.yaml has the same capability
# configs). Each race has a rare third unit at 0.1; medivacs and banelings may not make
# up a whole team (exception_unit_types); the protoss config lists no exception.
RACE_UNITS: dict[str, dict[str, Any]] = {
    "protoss": {"unit_types": ["stalker", "zealot", "colossus"],
                "weights": [0.45, 0.45, 0.1], "exception_unit_types": []},
    "terran": {"unit_types": ["marine", "marauder", "medivac"],
               "weights": [0.45, 0.45, 0.1], "exception_unit_types": ["medivac"]},
    "zerg": {"unit_types": ["zergling", "baneling", "hydralisk"],
             "weights": [0.45, 0.1, 0.45], "exception_unit_types": ["baneling"]},
}

#: SMACv2's map file for all three ``10gen_<race>`` maps (smacv2 maps/smac_maps.py),
#: looked up by pysc2 under ``$SC2PATH/Maps/SMAC_Maps``.
MAP_FILE = Path("SMAC_Maps") / "32x32_flat.SC2Map"
INSTALL_HINT = ("pip install git+https://github.com/oxwhirl/smacv2.git, plus the StarCraft II "
                "Linux package 4.10 with the SMACv2 maps in $SC2PATH/Maps/SMAC_Maps and SC2PATH "
                "set to the StarCraftII folder (docs/smacv2.md)")


def scenario_config(race: str, n_allies: int, n_enemies: int) -> dict[str, Any]:
    """``StarCraftCapabilityEnvWrapper`` keyword arguments of one SMACv2 scenario.

    Values as in oxwhirl/smacv2 ``smacv2/examples/configs/sc2_gen_<race>.yaml``
    (``env_args``; the standard setting, not the ``_epo`` one), with ``n_units`` /
    ``n_enemies`` set per scenario as SMACv2's README table prescribes.
    ``fully_observable`` is not in those files; it is StarCraft2Env's default and what
    ``smacv2/examples/random_agents.py`` passes.
    """
    if race not in RACES:
        raise MeigmError(f"unknown SMACv2 race {race!r}; races: {', '.join(RACES)}")
    units = RACE_UNITS[race]
    team_gen: dict[str, Any] = {
        "dist_type": "weighted_teams",
        "unit_types": list(units["unit_types"]),
        "weights": list(units["weights"]),
        "observe": True,
    }
    if units["exception_unit_types"]:
        team_gen["exception_unit_types"] = list(units["exception_unit_types"])
    return {
        "map_name": f"10gen_{race}",
        "capability_config": {
            "n_units": n_allies,
            "n_enemies": n_enemies,
            "team_gen": team_gen,
            "start_positions": {"dist_type": "surrounded_and_reflect", "p": 0.5,
                                "map_x": 32, "map_y": 32},
        },
        "continuing_episode": False,
        "difficulty": "7",
        "game_version": None,
        "move_amount": 2,
        "obs_all_health": True,
        "obs_instead_of_state": False,
        "obs_last_action": False,
        "obs_own_health": True,
        "obs_pathing_grid": False,
        "obs_terrain_height": False,
        "obs_timestep_number": False,
        "reward_death_value": 10,
        "reward_defeat": 0,
        "reward_negative_scale": 0.5,
        "reward_only_positive": True,
        "reward_scale": True,
        "reward_scale_rate": 20,
        "reward_sparse": False,
        "reward_win": 200,
        "replay_dir": "",
        "replay_prefix": "",
        "conic_fov": False,
        "use_unit_ranges": True,
        "min_attack_range": 2,
        "obs_own_pos": True,
        "num_fov_actions": 12,
        "state_last_action": True,
        "state_timestep_number": False,
        "step_mul": 8,
        "heuristic_ai": False,
        "debug": False,
        "prob_obs_enemy": 1.0,
        "action_mask": True,
        "fully_observable": False,
    }


#: Keys of :func:`scenario_config` that ``env_args`` may not change: the map is the
#: scenario's race, and the adapter needs ``continuing_episode`` (module docstring).
FIXED = ("map_name", "continuing_episode")
#: ``env_args`` keys that replace the scenario's value (``capability_config`` merges).
OVERRIDABLE = tuple(sorted(k for k in scenario_config("protoss", 5, 5) if k not in FIXED))


def parse_scenario(scenario: str) -> tuple[str, int, int]:
    """``protoss_10_vs_11`` -> ("protoss", 10, 11)."""
    race, _, size = scenario.partition("_")
    if race not in RACES or size not in SIZES:
        names = [f"{r}_{s}" for r in RACES for s in SIZES]
        raise MeigmError(f"unknown SMACv2 scenario {scenario!r}; scenarios: {', '.join(names)}")
    return (race, *SIZES[size])


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _same_kind(value: Any, default: Any) -> bool:
    """Whether an ``env_args`` value may replace ``default``: booleans for booleans,
    numbers for numbers, strings for strings (or None where the default is None)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if default is None:
        return value is None or isinstance(value, str)
    return isinstance(value, type(default))


def wrapper_kwargs(scenario: str, env_args: dict[str, Any]) -> dict[str, Any]:
    """The scenario's config with ``env_args`` applied (validated; see the module docstring)."""
    race, n_allies, n_enemies = parse_scenario(scenario)
    kwargs = scenario_config(race, n_allies, n_enemies)
    unknown = sorted(set(env_args) - set(OVERRIDABLE))
    if unknown:
        raise ConfigError(f"smacv2:{scenario}: unknown env_args {', '.join(unknown)}; allowed: "
                          f"{', '.join(OVERRIDABLE)}")
    for key, value in env_args.items():
        default = kwargs[key]
        if key == "capability_config":
            if not isinstance(value, dict):
                raise ConfigError(f"env_args.capability_config must be a mapping, got {value!r}")
            for size_key in ("n_units", "n_enemies"):
                if size_key in value and value[size_key] != default[size_key]:
                    raise ConfigError(f"env_args.capability_config.{size_key} is set by the "
                                      f"scenario name ({default[size_key]} in smacv2:{scenario})")
            kwargs[key] = _merge(default, value)
            continue
        if not _same_kind(value, default):
            kind = ("boolean" if isinstance(default, bool) else "number"
                    if isinstance(default, (int, float)) else "string")
            raise ConfigError(f"env_args.{key} must be a {kind}, got {value!r}")
        kwargs[key] = value
    team = kwargs["capability_config"].get("team_gen", {})
    if "weights" in team:
        if len(team["weights"]) != len(team.get("unit_types", team["weights"])):
            raise ConfigError(f"env_args.capability_config.team_gen: {len(team['weights'])} weights "
                              f"for {len(team['unit_types'])} unit_types")
        if abs(sum(team["weights"]) - 1.0) > 1e-6:
            raise ConfigError(f"env_args.capability_config.team_gen.weights must sum to 1, got "
                              f"{team['weights']}")
    # Truncation needs SMACv2's info["episode_limit"], set only with continuing_episode.
    kwargs["continuing_episode"] = True
    return kwargs


# -- the adapter ------------------------------------------------------------------------

def _distributions(wrapper: Any) -> list[Any]:
    """SMACv2's scenario distributions and the sub-distributions they hold, in a fixed
    order (the wrapper's ``env_key_to_distribution_map``, then attribute order)."""
    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen or not hasattr(obj, "generate"):
            return
        seen.add(id(obj))
        found.append(obj)
        for value in list(vars(obj).values()) if hasattr(obj, "__dict__") else []:
            visit(value)

    for dist in dict(getattr(wrapper, "env_key_to_distribution_map", {}) or {}).values():
        visit(dist)
    return found


class SMACv2Env(HostEnv):
    """One SMACv2 scenario; see the module docstring.

    ``factory(**kwargs)`` builds the SMACv2 wrapper (``StarCraftCapabilityEnvWrapper``
    in :func:`build_smacv2`); ``kwargs`` are :func:`wrapper_kwargs`. Building it does not
    start StarCraft II: the game process starts at the first ``reset``.
    """

    def __init__(self, name: str, scenario: str, kwargs: dict[str, Any],
                 factory: Callable[..., Any], env_args: dict[str, Any] | None = None) -> None:
        self.env_args = dict(env_args or {})
        self.scenario = scenario
        self._kwargs, self._factory = kwargs, factory
        self.env = self._make(seed=None)  # not started: only read for its sizes
        info = self.env.get_env_info()
        n, n_actions = int(info["n_agents"]), int(info["n_actions"])
        race = parse_scenario(scenario)[0]
        self.spec = EnvSpec(
            name=name, n_agents=n, n_actions=n_actions, obs_dim=int(info["obs_shape"]),
            state_dim=int(info["state_shape"]), episode_limit=int(info["episode_limit"]),
            info_keys=("won",), default_t_max=10_050_000,
            agents=tuple(f"agent_{i}" for i in range(n)),
            # App. E: one-layer OPT on SMAC-v2; target entropy 0.32 n (terran), 0.24 n.
            # Initial α (not in the paper): SMACv2 scales a won episode's return to ~20,
            # ten times SMAX's ~2, so 0.1 keeps the entropy bonus in the ratio to the
            # reward that SMAX's measured 0.01 has (meigm/config.py, alpha_init). Untested
            # on StarCraft II here.
            config_defaults=(("opt_layers", 1), ("alpha_init", 0.1),
                             ("target_entropy", 0.32 if race == "terran" else 0.24)),
        )
        self._started = False  # a game process exists for self.env
        self._decided = 0  # episodes this game ended itself (SMACv2's episode count)
        self._running = False
        self._t = 0
        self._last: HostStep | None = None
        self._dead = np.zeros(n, bool)
        self._py_state = random.Random(0).getstate()
        self._np_state = np.random.RandomState(0).get_state()

    def _make(self, seed: int | None) -> Any:
        return self._factory(**copy.deepcopy(self._kwargs), seed=seed)

    @contextlib.contextmanager
    def _seeded(self) -> Iterator[None]:
        """Run SMACv2 code on this episode's ``random`` / ``np.random`` streams."""
        saved_py, saved_np = random.getstate(), np.random.get_state()
        random.setstate(self._py_state)
        np.random.set_state(self._np_state)
        try:
            yield
        finally:
            self._py_state, self._np_state = random.getstate(), np.random.get_state()
            random.setstate(saved_py)
            np.random.set_state(saved_np)

    # -- conversion --------------------------------------------------------------------

    def _observe(self) -> HostStep:
        """The wrapped game's current arrays, with meigm's dead-agent convention."""
        spec = self.spec
        n, a = spec.n_agents, spec.n_actions
        with self._seeded():
            obs_list = self.env.get_obs()
            state = np.asarray(self.env.get_state(), np.float32).reshape(-1)  # [S]
            avail = np.asarray(self.env.get_avail_actions()).reshape(n, a) > 0  # [N, A]
        obs = np.asarray(obs_list, np.float32)  # [N, O]
        if obs.shape != (n, spec.obs_dim) or state.shape != (spec.state_dim,):
            raise MeigmError(f"{spec.name}: SMACv2 returned obs {obs.shape} and state "
                             f"{state.shape}, its env info says ({n}, {spec.obs_dim}) and "
                             f"({spec.state_dim},)")
        dead = ~avail[:, 1:].any(axis=1)  # [N]: alive units can always stop (action 1)
        obs[dead] = 0.0
        avail[dead] = dead_agent_avail(a)
        self._dead = dead
        return HostStep(obs=obs, state=state, avail=avail)

    # -- HostEnv -----------------------------------------------------------------------

    def reset(self, seed: int) -> HostStep:
        seed = int(seed)
        if not self._started or self._decided == 0:
            # No game yet, or one that has not finished an episode: SMACv2 would start a
            # second game process for it (it launches while its episode count is 0).
            if self._started:
                self.env.close()
            self.env = self._make(seed=seed % 2**32)  # the engine's seed: fixed at launch
            self._started, self._decided = True, 0
        children = np.random.SeedSequence(seed).spawn(3)
        dists = _distributions(self.env)
        for dist, ss in zip(dists, children[0].spawn(len(dists)), strict=True):
            if isinstance(getattr(dist, "rng", None), np.random.Generator):
                dist.rng = np.random.default_rng(ss)
        self._py_state = random.Random(int(children[1].generate_state(1)[0])).getstate()
        self._np_state = np.random.RandomState(children[2].generate_state(4)).get_state()
        with self._seeded():
            self.env.reset()
        self._t, self._running = 0, True
        self._last = self._observe()
        return self._last

    def step(self, actions: np.ndarray) -> HostStep:
        if not self._running or self._last is None:
            raise MeigmError(f"{self.spec.name}: step() after the episode ended; reset first")
        n = self.spec.n_agents
        actions = np.asarray(actions, np.int64).reshape(n)  # [N]
        send = np.where(self._dead, 0, actions)  # dead units: SMACv2's no-op
        bad = [i for i in range(n) if not (0 <= send[i] < self.spec.n_actions
                                           and self._last.avail[i, send[i]])]
        if bad:
            raise MeigmError(f"{self.spec.name}: unavailable actions "
                             f"{[(i, int(send[i])) for i in bad]} (agent, action)")
        with self._seeded():
            reward, ended, info = self.env.step([int(x) for x in send])
        self._t += 1
        info = dict(info or {})
        crashed = bool(ended) and not info
        won = bool(info.get("battle_won", False))
        timeout = bool(info.get("episode_limit", False)) and not won
        if ended and not crashed:
            self._decided += 1
        terminated = bool(ended) and not (timeout or crashed)  # a decided battle
        truncated = not terminated and (bool(ended) or self._t >= self.spec.episode_limit)
        out = self._last if crashed else self._observe()
        self._running = not (terminated or truncated)
        self._last = HostStep(obs=out.obs, state=out.state, avail=out.avail, reward=float(reward),
                              terminated=terminated, truncated=truncated,
                              info={"won": float(won)})
        return self._last

    def close(self) -> None:
        if self._started:
            self.env.close()
        self._started, self._running = False, False


# -- building ---------------------------------------------------------------------------

def _check_starcraft(name: str) -> None:
    """A clear error when StarCraft II or the SMACv2 map is missing (pysc2's lookup:
    ``$SC2PATH``, on Linux ``~/StarCraftII`` when unset)."""
    raw = os.environ.get("SC2PATH")
    if raw:
        root = Path(raw).expanduser()
        if not root.is_dir():
            raise MeigmError(f"{name}: StarCraft II not found: SC2PATH={raw} is not a directory; "
                             f"set SC2PATH to the StarCraftII folder ({INSTALL_HINT})")
    elif sys.platform.startswith("linux"):
        root = Path("~/StarCraftII").expanduser()
        if not root.is_dir():
            raise MeigmError(f"{name}: StarCraft II not found: SC2PATH is unset and {root} does not "
                             f"exist; install it and set SC2PATH ({INSTALL_HINT})")
    else:
        return  # pysc2 looks in the platform's standard install location
    versions = root / "Versions"
    if not versions.is_dir() or not any(versions.glob("Base*")):
        raise MeigmError(f"{name}: SC2PATH {root} is not a StarCraft II installation (no "
                         f"Versions/Base* folder); set SC2PATH to the unzipped StarCraftII folder "
                         f"({INSTALL_HINT})")
    if not (root / "Maps" / MAP_FILE).is_file():
        raise MeigmError(f"{name}: the SMACv2 map {MAP_FILE.name} is missing from "
                         f"{root / 'Maps' / MAP_FILE.parent}; unzip SMAC_Maps.zip from "
                         "https://github.com/oxwhirl/smacv2/releases/tag/maps there (docs/smacv2.md)")


def load_wrapper(name: str) -> Callable[..., Any]:
    """SMACv2's ``StarCraftCapabilityEnvWrapper``, or a one-line install hint."""
    try:
        module = importlib.import_module("smacv2.env")
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "smacv2":
            raise MeigmError(f"{name} needs the smacv2 package, which is not installed: "
                             f"{INSTALL_HINT}") from None
        raise MeigmError(f"{name}: smacv2 is installed but failed to import ({exc}); reinstall it: "
                         f"{INSTALL_HINT}") from None
    wrapper = getattr(module, "StarCraftCapabilityEnvWrapper", None)
    if wrapper is None:
        raise MeigmError(f"{name}: this smacv2 has no smacv2.env.StarCraftCapabilityEnvWrapper; "
                         f"install the current one: {INSTALL_HINT}")
    return wrapper


def build_smacv2(scenario: str, name: str, env_args: dict[str, Any]) -> SMACv2Env:
    """``smacv2:<scenario>``: validate ``env_args``, import smacv2, check StarCraft II.

    Nothing is downloaded and StarCraft II is not started until the first ``reset``.
    """
    kwargs = wrapper_kwargs(scenario, env_args)
    wrapper = load_wrapper(name)
    _check_starcraft(name)

    def factory(**kw: Any) -> Any:
        try:
            return wrapper(**kw)
        except TypeError as exc:
            raise MeigmError(f"{name}: the installed smacv2 rejects its arguments ({exc}); "
                             f"install the current one: {INSTALL_HINT}") from None

    return SMACv2Env(name, scenario, kwargs, factory, env_args)
