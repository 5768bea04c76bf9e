"""SMAX scenarios: JaxMARL's upstream maps and SMACv2-like race scenarios.

The paper's Table 2 runs on SMACv2 (StarCraft II), which most machines cannot install.
JaxMARL's SMAX reimplements its setting in JAX; this module turns it into the paper's
fifteen ``{protoss,terran,zerg}_{5_vs_5,10_vs_10,10_vs_11,20_vs_20,20_vs_23}``
scenarios, always against SMAX's heuristic enemy (``HeuristicEnemySMAX``).

What the race scenarios take from SMACv2, and where they differ:

* **Start positions**: SMACv2's "surrounded and reflect" generator — each episode is,
  with equal probability, a *reflect* start (allies uniform on the left half, each
  mirrored to an enemy on the right, extra enemies uniform on the right half) or a
  *surrounded* start (one team in the centre, the other in groups coming from the
  corners). SMAX's own generator implements both; we use it unchanged.
* **Unit types**: drawn per episode from the race. SMACv2 draws allies i.i.d. from the
  race's distribution, gives the first ``n_allies`` enemies the allies' types (a mirror
  match) and draws the extra enemies of the asymmetric scenarios from the same
  distribution. SMAX has only two unit types per race (protoss: stalker, zealot;
  terran: marine, marauder; zerg: zergling, hydralisk) and none of SMACv2's rare third
  type (colossus, medivac, baneling, drawn with probability 0.1 in SMACv2): we draw
  the two at equal weight. SMAX's *own* unit-type generator (the one behind
  ``smax:smacv2_5_units``) differs from SMACv2 in two ways we do not want: it draws
  from all six unit types of all three races, and (jaxmarl 0.2) it discards the draw
  for extra enemies (a non-in-place ``.at[].set`` whose result is not kept), so every
  extra enemy is a marine whatever the race. :class:`RaceUnitTypes` replaces it.
* Episode limit: SMAX's 100 steps (SMACv2 uses 200 StarCraft steps at a coarser
  action rate); rewards: SMAX's normalised damage reward plus a win bonus, shared by
  the team, learned at 10x (``reward_scale``: SMAC's scale, a return of at most 20).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from meigm.envs.base import Env, JaxMARLEnv, team_mean

#: SMAX unit-type indices (``SMAX.unit_type_names`` order) of each race's two units.
RACE_UNIT_TYPES: dict[str, tuple[str, ...]] = {
    "protoss": ("stalker", "zealot"),
    "terran": ("marine", "marauder"),
    "zerg": ("zergling", "hydralisk"),
}
#: Team sizes (allies, enemies) of the paper's Table 2.
RACE_SIZES: dict[str, tuple[int, int]] = {
    "5_vs_5": (5, 5),
    "10_vs_10": (10, 10),
    "10_vs_11": (10, 11),
    "20_vs_20": (20, 20),
    "20_vs_23": (20, 23),
}
RACE_SCENARIOS = tuple(f"{race}_{size}" for race in RACE_UNIT_TYPES for size in RACE_SIZES)

#: Upstream SMAX maps exposed as ``smax:<map>``.
SMAX_MAPS = ("3m", "8m", "2s3z", "3s5z", "5m_vs_6m", "smacv2_5_units")


class RaceUnitTypes:
    """Unit types of one episode, SMACv2-style, restricted to one race.

    Allies are drawn i.i.d. and uniformly from ``type_ids``; enemy ``j < n_allies``
    copies ally ``j`` (SMACv2's mirror match), extra enemies are drawn like allies.
    ``generate(key) -> [n_allies + n_enemies] uint8`` is the interface SMAX's reset
    calls on its ``unit_type_generator``.
    """

    def __init__(self, type_ids: tuple[int, ...], n_allies: int, n_enemies: int) -> None:
        self.type_ids = jnp.asarray(type_ids, jnp.uint8)
        self.n_allies, self.n_enemies = n_allies, n_enemies

    def generate(self, key: jax.Array) -> jax.Array:
        k_allies, k_extra = jax.random.split(key)
        allies = jax.random.choice(k_allies, self.type_ids, (self.n_allies,))
        n_mirror = min(self.n_allies, self.n_enemies)
        n_extra = self.n_enemies - n_mirror
        extra = jax.random.choice(k_extra, self.type_ids, (n_extra,))
        return jnp.concatenate([allies, allies[:n_mirror], extra]).astype(jnp.uint8)


def _race_env(scenario: str) -> Any:
    from jaxmarl.environments.smax import HeuristicEnemySMAX
    from jaxmarl.environments.smax.smax_env import Scenario

    race, size = scenario.split("_", 1)
    n_allies, n_enemies = RACE_SIZES[size]
    layout = Scenario(
        unit_types=jnp.zeros((n_allies + n_enemies,), jnp.uint8),
        num_allies=n_allies,
        num_enemies=n_enemies,
        smacv2_position_generation=True,
        smacv2_unit_type_generation=True,
    )
    env = HeuristicEnemySMAX(scenario=layout)
    names = list(env._env.unit_type_names)
    type_ids = tuple(names.index(unit) for unit in RACE_UNIT_TYPES[race])
    # SMAX's reset draws unit types from this attribute when smacv2_unit_type_generation
    # is on; ours replaces the all-races generator (see the module docstring).
    env._env.unit_type_generator = RaceUnitTypes(type_ids, n_allies, n_enemies)
    return env


def world_state(smax: Any, state: Any) -> jax.Array:
    """Normalised global state of a SMAX battle: [12 · units].

    Per unit (allies first): health fraction, position centred and scaled to [-1, 1],
    weapon cooldown as a fraction of the unit type's, one-hot unit type (6) — zeroed
    for dead units — then every unit's alive flag and team. SMAX's own
    ``get_world_state`` has the same layout but raw map coordinates (0–32), raw
    cooldowns and raw type indices; fed to the mixer's hyper-networks those made the
    initial ``Q_tot`` hundreds of times larger than any return (measured: Q_tot ≈ 300 at
    the first update of QMIX on protoss_5_vs_5, returns ≈ 0.2), which TD learning then
    took hundreds of thousands of steps to unlearn. Normalised features are what
    pymarl's SMAC state gives the mixer.
    """
    size = jnp.array([smax.map_width, smax.map_height], jnp.float32)
    types = state.unit_types
    health = state.unit_health / smax.unit_type_health[types]  # [U]
    position = (state.unit_positions - size / 2) / (size / 2)  # [U, 2]
    cooldown = jnp.clip(state.unit_weapon_cooldowns / smax.unit_type_weapon_cooldowns[types], 0.0, 1.0)
    onehot = jax.nn.one_hot(types, len(smax.unit_type_names))  # [U, 6]
    alive = state.unit_alive.astype(jnp.float32)  # [U]
    per_unit = jnp.concatenate([health[:, None], position, cooldown[:, None], onehot], axis=-1)
    per_unit = per_unit * alive[:, None]
    return jnp.concatenate([per_unit.reshape(-1), alive, state.unit_teams.astype(jnp.float32)])


def build_smax(scenario: str, name: str) -> Env:
    """``smax:<scenario>`` for an upstream map or a race scenario; metric ``won``."""
    if scenario in RACE_SCENARIOS:
        env = _race_env(scenario)
    else:
        from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

        env = HeuristicEnemySMAX(scenario=map_name_to_scenario(scenario))
    n_allies = env.num_allies
    # App. E: one-layer OPT on SMAC-v2; target entropy 0.32 n for terran, 0.24 n otherwise.
    # α starts at 0.01: SMAX's rewards are ~2 per episode (see Config.alpha_init).
    paper = {"opt_layers": 1, "target_entropy": 0.32 if scenario.startswith("terran") else 0.24,
             "alpha_init": 0.01}
    # Updates follow the episodes' lengths: 8 buckets, and each batch sorted by length
    # into 8 groups trimmed separately. Trimming a batch as a whole (pymarl2's rule) does
    # nothing on the races, where 82-100% of batches of 128 hold a timed-out episode;
    # grouped, only that episode's group pays for it: 1.5x (protoss) to 1.7-1.9x (zerg)
    # train env steps/s against full-length updates (benchmarks/notes/length_groups.md).
    paper["length_buckets"] = 8
    paper["length_groups"] = 8
    # SMAX's team return is at most 2 (1 for all enemy health, 1 for the win); SMAC's is
    # normalised to 20, the scale pymarl2's and the paper's hyper-parameters were tuned
    # on (JaxMARL's own SMAX baselines also multiply by 10). At SMAX's own scale QMIX and
    # ME-QMIX learned ~5x slower on protoss_5_vs_5 (benchmarks/notes/reward_scale.md).
    paper["reward_scale"] = 10.0

    def won(info: dict[str, Any], inner: Any) -> dict[str, jax.Array]:
        alive = inner.state.unit_alive  # [allies + enemies]
        return {"won": jnp.logical_and(jnp.all(~alive[n_allies:]), jnp.any(alive[:n_allies]))}

    return JaxMARLEnv(
        env, name=name, episode_limit=int(env.max_steps),
        state_fn=lambda inner: world_state(env._env, inner.state),
        reward_fn=team_mean, info_fn=won, info_keys=("won",), default_t_max=2_000_000,
        limit_is_truncation=True, config_defaults=paper,
    )
