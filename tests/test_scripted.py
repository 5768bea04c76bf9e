"""Scripted SMAX teams (benchmarks/scripted.py): target choice, outcomes, interval, CLI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from meigm.envs.registry import make_env

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "scripted.py"
_spec = importlib.util.spec_from_file_location("scripted", _PATH)
scripted = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scripted)


def _battle_in_range():
    """smax:3m with every unit packed in the map's centre: every enemy in every ally's
    range, enemy healths 30 / 10 / 20 (of 45)."""
    env = make_env("smax:3m")
    smax = env.env._env
    state, _ = env.reset(jax.random.PRNGKey(0))
    inner = state.inner.state
    centre = jnp.array([smax.map_width / 2, smax.map_height / 2])
    offsets = jnp.array([[-1.0, 0.0], [-1.0, 0.5], [-1.0, -0.5], [1.0, 0.0], [1.0, 0.5], [1.0, -0.5]])
    inner = inner.replace(unit_positions=centre + offsets,
                          unit_health=jnp.array([45.0, 45.0, 45.0, 30.0, 10.0, 20.0]))
    obs = jnp.stack([smax.get_obs(inner)[a] for a in smax.agents[:3]])
    avail = jnp.stack([smax.get_avail_actions(inner)[a] for a in smax.agents[:3]])
    return smax, inner, obs, avail


def test_focus_teams_shoot_the_weakest_enemy_in_range():
    smax, inner, obs, avail = _battle_in_range()
    n_moves = smax.num_movement_actions
    assert bool(avail[:, n_moves:].all()), "every enemy should be in range"
    for team in ("focus", "focus_chase", "focus_hold"):
        act, _ = scripted._team(team, smax, 3)(jax.random.PRNGKey(1), inner, obs, avail, None)
        np.testing.assert_array_equal(np.asarray(act), [n_moves + 1] * 3, err_msg=team)
    # Equal healths: every unit takes the same (lowest-index) target, so fire is focused.
    tied = inner.replace(unit_health=jnp.full((6,), 45.0))
    act, _ = scripted._team("focus", smax, 3)(jax.random.PRNGKey(1), tied, obs, avail, None)
    np.testing.assert_array_equal(np.asarray(act), [n_moves] * 3)


def test_focus_retreat_pulls_back_a_damaged_unit_only():
    smax, inner, obs, avail = _battle_in_range()
    n_moves = smax.num_movement_actions
    team = scripted._team("focus_retreat", smax, 3)
    # Healthy team: the same shots as focus.
    act, _ = team(jax.random.PRNGKey(1), inner, obs, avail, None)
    np.testing.assert_array_equal(np.asarray(act), [n_moves + 1] * 3)
    # Ally 1 at 10 of 45 (22%) with healthy allies beside it steps away from the
    # nearest enemy (enemies to its right: movement (-1, 0)); the others keep shooting.
    hurt = inner.replace(unit_health=inner.unit_health.at[1].set(10.0))
    act, _ = team(jax.random.PRNGKey(1), hurt, obs, avail, None)
    assert int(act[0]) == int(act[2]) == n_moves + 1
    direction, _ = smax._decode_discrete_actions(act[1:2])
    np.testing.assert_allclose(np.asarray(direction), [[-1.0, 0.0]], atol=1e-6)
    # With every ally as hurt, nobody is left to take the fire: all shoot.
    all_hurt = inner.replace(unit_health=inner.unit_health.at[:3].set(10.0))
    act, _ = team(jax.random.PRNGKey(1), all_hurt, obs, avail, None)
    np.testing.assert_array_equal(np.asarray(act), [n_moves + 1] * 3)


def test_focus_walks_towards_the_nearest_enemy_out_of_range():
    smax, inner, obs, _ = _battle_in_range()
    n_moves = smax.num_movement_actions
    no_target = jnp.ones((3, n_moves + 3), bool).at[:, n_moves:].set(False)
    # Allies left of the enemies: the nearest enemy is to the right, movement (1, 0).
    act, _ = scripted._team("focus", smax, 3)(jax.random.PRNGKey(1), inner, obs, no_target, None)
    directions, _ = smax._decode_discrete_actions(jnp.asarray(act))
    np.testing.assert_allclose(np.asarray(directions), [[1.0, 0.0]] * 3, atol=1e-6)
    act, _ = scripted._team("focus_hold", smax, 3)(jax.random.PRNGKey(1), inner, obs, no_target, None)
    np.testing.assert_array_equal(np.asarray(act), [n_moves - 1] * 3)


def test_outcomes_random_loses_focus_wins():
    key = jax.random.PRNGKey(3)
    rand = scripted.play("smax:3m", "random", 32, key)
    focus = scripted.play("smax:3m", "focus", 32, key)
    assert rand["won"].sum() == 0
    assert focus["won"].sum() >= 8  # 58% over 4096 episodes; fewer than 8 of 32 has p < 1e-4
    # A lost episode leaves an enemy alive or is a draw; a won one leaves none.
    assert (focus["enemies"][focus["won"]] == 0).all()
    assert ((rand["length"] >= 1) & (rand["length"] <= 100)).all()


@given(st.integers(1, 100_000), st.floats(0.0, 1.0))
def test_wilson_interval_holds_the_estimate(m, frac):
    k = round(frac * m)
    lo, hi = scripted.wilson(k, m)
    assert 0.0 <= lo <= k / m + 1e-12 and k / m - 1e-12 <= hi <= 1.0


def test_unknown_team_is_a_one_line_error():
    r = subprocess.run([sys.executable, str(_PATH), "--teams", "focus,kamikaze"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown team 'kamikaze'; allowed: random, mirror" in r.stderr
    assert "Traceback" not in r.stderr
