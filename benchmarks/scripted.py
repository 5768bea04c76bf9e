"""Scripted teams on SMAX (issue 14, item 5): how much of a scenario is left to learn.

    python benchmarks/scripted.py [--env smax:3m,smax:protoss_5_vs_5] [--episodes 4096]

Every learner stops near 80% on ``smax:3m`` at 300k env steps (benchmarks/notes/skill_smax.md). Is
that a ceiling of the battle against SMAX's heuristic enemy, or skill still to learn? A
hand-written team answers it without training: if a simple script wins far more often,
the scenario has room and the learners are short of it; if the scripts sit near the
learners, the 90% target asks for more than a good, simple micro-policy gets.

Teams (the enemy is always SMAX's heuristic, as in training):

* ``random``: uniform over the available actions.
* ``mirror``: SMAX's own heuristic steering our units — each unit shoots the closest enemy
  in range and keeps that target while it stays in range, otherwise walks towards a
  random visible enemy; the enemy's policy, so the two teams play the same rules.
* ``focus``: every unit with an enemy in range shoots the one with the lowest health
  (ties to the lowest index, so units that share a view share a target), otherwise walks
  towards the closest living enemy. Focus fire is the micro every SMAC learner is known
  to discover; the script reads the true state, so it needs no memory.
* ``focus_chase``: the whole team picks the living enemy with the lowest health (ties to
  the lowest index), shoots it when in range and walks towards it otherwise.
* ``focus_kite``: ``focus``, but a unit whose weapon is cooling down steps away from the
  closest enemy instead (hit and run: it takes fewer shots between its own).
* ``focus_hold``: ``focus``, but a unit with no enemy in range stands still: the team
  lets the heuristic enemy, which walks across the map, come to it.
* ``focus_retreat``: ``focus``, but a unit at or below 30% of its health, within an
  enemy's attack range and with an ally at least 20 points of health fraction above it,
  steps away from the closest enemy: the classic SMAC micro of pulling a damaged unit
  back so the enemy (which keeps its target until it leaves range) wastes time
  re-targeting and the healthier units take the fire.

Win = every enemy dead and an ally alive, as ``test/won``; a draw counts as lost. Same
starts for every team (episode ``k`` resets with the same key). Prints the win rate with
its 95% Wilson interval, the mean episode length, and the enemies left in lost episodes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from meigm.envs.registry import make_env

TEAMS = ("random", "mirror", "focus", "focus_chase", "focus_kite", "focus_hold", "focus_retreat")
RETREAT_BELOW = 0.3  # focus_retreat: health fraction at or below which a unit pulls back
RETREAT_GAP = 0.2  # ... when an ally's health fraction is this much higher


def _move_towards(smax: Any, delta: jax.Array) -> jax.Array:
    """Movement action whose direction is closest to ``delta`` [n, 2] -> [n]."""
    directions, _ = smax._decode_discrete_actions(jnp.arange(4))  # [4, 2]
    return jnp.argmax(delta @ directions.T, axis=-1)


def _team(name: str, smax: Any, n: int) -> Callable[..., tuple[jax.Array, Any]]:
    """Policy ``(key, smax_state, obs [n, d], avail [n, A], memory) -> (actions [n], memory)``."""
    n_moves = smax.num_movement_actions
    if name == "random":
        def random(key, s, obs, avail, memory):
            return jax.random.categorical(key, jnp.where(avail, 0.0, -jnp.inf)), memory
        return random
    if name == "mirror":
        from jaxmarl.environments.smax.heuristic_enemy import create_heuristic_policy

        heuristic = jax.vmap(create_heuristic_policy(smax, 0))

        def mirror(key, s, obs, avail, memory):
            act, memory = heuristic(jax.random.split(key, n), memory, obs)
            return jnp.where(avail[jnp.arange(n), act], act, n_moves - 1), memory
        return mirror

    def scripted(key, s, obs, avail, memory):
        pos, health, alive = s.unit_positions, s.unit_health, s.unit_alive  # [U, 2], [U], [U]
        enemy_pos, enemy_health, enemy_alive = pos[n:], health[n:], alive[n:]
        delta = enemy_pos[None] - pos[:n, None]  # [n, m, 2]
        dist = jnp.linalg.norm(delta, axis=-1)  # [n, m]
        shootable = avail[:, n_moves:].astype(bool)  # [n, m]: alive and in range
        weakest_in_range = jnp.argmin(jnp.where(shootable, enemy_health[None], jnp.inf), axis=-1)
        if name in ("focus", "focus_kite", "focus_hold", "focus_retreat"):
            nearest = jnp.argmin(jnp.where(enemy_alive[None], dist, jnp.inf), axis=-1)  # [n]
            walk = _move_towards(smax, delta[jnp.arange(n), nearest])
            if name == "focus_hold":
                walk = jnp.full((n,), n_moves - 1)  # the stop action
            act = jnp.where(shootable.any(-1), n_moves + weakest_in_range, walk)
            if name == "focus_kite":
                cooling = s.unit_weapon_cooldowns[:n] > 0  # [n]
                act = jnp.where(cooling, _move_towards(smax, -delta[jnp.arange(n), nearest]), act)
            if name == "focus_retreat":
                frac = health[:n] / smax.unit_type_health[s.unit_types[:n]]  # [n]
                enemy_range = smax.unit_type_attack_ranges[s.unit_types[n:]]  # [m]
                threatened = ((dist < enemy_range[None]) & enemy_alive[None]).any(-1)  # [n]
                cover = ((frac[None] > frac[:, None] + RETREAT_GAP) & alive[None, :n]).any(-1)
                retreat = (frac <= RETREAT_BELOW) & threatened & cover
                act = jnp.where(retreat, _move_towards(smax, -delta[jnp.arange(n), nearest]), act)
        else:
            target = jnp.argmin(jnp.where(enemy_alive, enemy_health, jnp.inf))
            walk = _move_towards(smax, delta[:, target])
            act = jnp.where(shootable[:, target], n_moves + target, walk)
        return jnp.where(avail[jnp.arange(n), act], act, n_moves - 1), memory
    return scripted


def play(env_name: str, team: str, n_episodes: int, key: jax.Array) -> dict[str, np.ndarray]:
    """``n_episodes`` of one scripted team -> won [E], length [E], enemies alive [E]."""
    env = make_env(env_name)
    smax = env.env._env
    n, limit = env.spec.n_agents, env.spec.episode_limit
    policy = _team(team, smax, n)

    def episode(key):
        from jaxmarl.environments.smax.heuristic_enemy import get_heuristic_policy_initial_state

        k_reset, k_steps = jax.random.split(key)
        state, ts = env.reset(k_reset)
        memory = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * n),
                              get_heuristic_policy_initial_state())

        def body(carry, k):
            state, ts, memory, done = carry
            k_act, k_env = jax.random.split(k)
            act, memory2 = policy(k_act, state.inner.state, ts.obs, ts.avail, memory)
            s2, ts2 = env.step(k_env, state, act)

            def keep(new, old):
                return jax.tree.map(lambda x, y: jnp.where(done, y, x), new, old)

            return (keep(s2, state), keep(ts2, ts), keep(memory2, memory), done | ts2.done), None

        (state, ts, _, _), _ = jax.lax.scan(body, (state, ts, memory, jnp.array(False)),
                                             jax.random.split(k_steps, limit))
        return ts.info["won"] > 0, state.t, state.inner.state.unit_alive[n:].sum()

    won, length, enemies = jax.jit(jax.vmap(episode))(jax.random.split(key, n_episodes))
    return {"won": np.asarray(won), "length": np.asarray(length), "enemies": np.asarray(enemies)}


def wilson(k: int, m: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k / m."""
    p = k / m
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    return max(0.0, centre - half), min(1.0, centre + half)  # rounding at k = 0 or m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="smax:3m", help="comma-separated SMAX scenarios (default smax:3m)")
    p.add_argument("--teams", default=",".join(TEAMS), help=f"comma-separated, from {', '.join(TEAMS)}")
    p.add_argument("--episodes", type=int, default=4096)
    p.add_argument("--key", type=int, default=1000, help="PRNG key of the starts (default 1000)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    teams = args.teams.split(",")
    bad = [t for t in teams if t not in TEAMS]
    if bad:
        p.error(f"unknown team {bad[0]!r}; allowed: {', '.join(TEAMS)}")
    if args.episodes < 1:
        p.error("--episodes must be at least 1")
    out = {}
    for env_name in args.env.split(","):
        if not env_name.startswith("smax:"):
            p.error(f"{env_name!r} is not a SMAX scenario; scripted teams play smax:<scenario> only")
        print(f"== {env_name}, {args.episodes} episodes per team, same starts")
        print("| team | won | 95% CI | mean length | lost: enemies alive (0..m) |")
        print("|---|---|---|---|---|")
        for team in teams:
            r = play(env_name, team, args.episodes, jax.random.PRNGKey(args.key))
            k = int(r["won"].sum())
            lo, hi = wilson(k, args.episodes)
            lost = r["enemies"][~r["won"]]
            counts = np.bincount(lost, minlength=int(r["enemies"].max(initial=0)) + 1).tolist()
            print(f"| {team} | {k / args.episodes:.1%} | [{lo:.1%}, {hi:.1%}] | "
                  f"{r['length'].mean():.1f} | {counts} |", flush=True)
            out[f"{env_name}/{team}"] = {"episodes": args.episodes, "won": k / args.episodes,
                                         "ci95": [lo, hi], "mean_length": float(r["length"].mean()),
                                         "lost_enemies_alive": counts}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
