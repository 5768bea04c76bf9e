"""How a finished SMAX run loses (issue 14, item 5): greedy episodes from the same starts
for every seed of every run given, and what they say about the losses.

    python benchmarks/skill_losses.py RUN_DIR [RUN_DIR ...] [--episodes 512]

Per seed: win rate, episode lengths, allies and enemies alive at the end of lost and won
episodes, the start distance between the teams. Over all seeds of all runs: how many of
them lose each start, against what independent seeds with the same win rates would give
(binomial) — a start that every policy loses points at the scenario, losses spread
evenly point at the policies. Same starts: episode ``k`` of every seed resets with the
same key. A draw (both teams dead) counts as lost, as in ``test/won``.

``--replays R`` plays every start R times with the same reset key and fresh step keys:
what changes between replays is only the battle's own chance (SMAX jitters each
weapon cooldown by a uniform −1/16..+2/16 s and its heuristic enemy walks towards a
random visible unit), never the policy or the start. Each seed's losses then split into
starts it always loses (a start or a policy problem) and starts it wins on some replays
and loses on others (the dice), with each start's win probability estimated from its R
replays.
"""

from __future__ import annotations

import argparse
from math import comb

import jax
import jax.numpy as jnp
import numpy as np

from meigm import ops
from meigm.experiments.evaluate import load_run
from meigm.networks.agent import agent_inputs


def play(run, n_episodes: int, key: jax.Array, replays: int = 1, trace: bool = False):
    """Greedy episodes of every seed from the same starts -> (start positions [seeds, E,
    units, 2], alive at the end [seeds, E, units], lengths [seeds, E], won [seeds, E]);
    with ``replays`` R > 1 every start is played R times with fresh step keys and each
    array gains an axis after E: [seeds, E, R, ...]. ``trace`` adds a fifth element, the
    steps (see :func:`action_summary`): ``act`` [seeds, E, T, n], ``in_range`` [.., n, m]
    (the attack part of the available actions), ``enemy_health`` [.., m] and ``acting``
    [.., n] (alive and the episode still running), with T the episode limit."""
    env, learner = run.env, run.learner
    n, a, limit = env.spec.n_agents, env.spec.n_actions, env.spec.episode_limit
    n_moves = env.env._env.num_movement_actions  # SMAX: 4 moves, then stop; attacks follow

    def episode(params, key, replay=None):
        k_reset, k_steps = jax.random.split(key)
        if replay is not None:  # same start (k_reset), the battle's chance drawn afresh
            k_steps = jax.random.fold_in(k_steps, replay)
        state, ts = env.reset(k_reset)
        start = state.inner.state.unit_positions

        def body(carry, k):
            state, ts, h, last, done = carry
            h2, q = learner.agent.apply(params["agent"], h, agent_inputs(ts.obs, last))
            act = ops.masked_argmax(q, ts.avail)
            inner = state.inner.state
            step = {"act": act, "in_range": ts.avail[:, n_moves:], "enemy_health": inner.unit_health[n:],
                    "acting": inner.unit_alive[:n] & ~done} if trace else None
            s2, ts2 = env.step(k, state, act)

            def keep(new, old):
                return jax.tree.map(lambda x, y: jnp.where(done, y, x), new, old)

            return (keep(s2, state), keep(ts2, ts), keep(h2, h),
                    keep(jax.nn.one_hot(act, a), last), done | ts2.done), step

        init = (state, ts, jnp.zeros((n, learner.hidden_dim)), jnp.zeros((n, a)), jnp.array(False))
        (state, ts, *_), steps = jax.lax.scan(body, init, jax.random.split(k_steps, limit))
        out = start, state.inner.state.unit_alive, state.t, ts.info["won"]
        return (*out, steps) if trace else out

    keys = jnp.broadcast_to(jax.random.split(key, n_episodes), (run.cfg.seeds, n_episodes, 2))
    if replays == 1:
        fn = jax.vmap(jax.vmap(episode, in_axes=(None, 0)), in_axes=(0, 0))
        return jax.device_get(jax.jit(fn)(run.state.params, keys))
    per_start = jax.vmap(episode, in_axes=(None, None, 0))  # R replays of one start
    fn = jax.vmap(jax.vmap(per_start, in_axes=(None, 0, None)), in_axes=(0, 0, None))
    return jax.device_get(jax.jit(fn)(run.state.params, keys, jnp.arange(replays)))


def action_summary(steps: dict[str, np.ndarray], won: np.ndarray, n_moves: int) -> dict[str, float]:
    """What one seed's greedy policy does, from :func:`play`'s trace: ``act`` [E, T, n],
    ``in_range`` [E, T, n, m], ``enemy_health`` [E, T, m], ``acting`` [E, T, n]; ``won`` [E].

    SMAX's actions: ``0..n_moves-1`` move, ``n_moves - 1`` stops (the last movement
    slot), ``n_moves + j`` attacks enemy j. Over the steps where a living ally has an
    enemy in range: the shares it shoots, moves and stops (overall, and in won and lost
    episodes); over the steps where at least two allies shoot: the share where all shoot
    the same enemy (focus fire); over all shots: the share at the weakest enemy in range
    (among equally weak enemies, the lowest index counts as the weakest).
    """
    act, acting = np.asarray(steps["act"]), np.asarray(steps["acting"], bool)
    in_range = np.asarray(steps["in_range"], bool)
    can_shoot = in_range.any(-1) & acting  # [E, T, n]
    shoot = (act >= n_moves) & acting
    moving = (act < n_moves - 1) & acting
    target = np.where(shoot, act - n_moves, -1)
    lo = np.where(shoot, target, in_range.shape[-1]).min(-1)  # m: above every enemy index
    hi = target.max(-1)
    several = shoot.sum(-1) >= 2  # [E, T]
    health = np.where(in_range, np.asarray(steps["enemy_health"])[..., None, :], np.inf)
    weakest = health.argmin(-1)  # [E, T, n]
    won = np.asarray(won) > 0
    out = {
        "shoot_in_range": float(shoot[can_shoot].mean()),
        "move_in_range": float(moving[can_shoot].mean()),
        "stop_in_range": float(((act == n_moves - 1) & acting)[can_shoot].mean()),
        "focus": float((lo == hi)[several].mean()) if several.any() else float("nan"),
        "weakest": float((target == weakest)[shoot].mean()) if shoot.any() else float("nan"),
    }
    for name, episodes in (("won", won), ("lost", ~won)):
        sel = can_shoot & episodes[:, None, None]
        out[f"move_in_range_{name}"] = float(moving[sel].mean()) if sel.any() else float("nan")
    return out


def replay_summary(won: np.ndarray) -> dict[str, float]:
    """Where one seed's losses come from, given each start replayed R times: ``won`` [E, R].

    ``p`` is each start's win frequency over its replays. ``always_lost`` / ``always_won``:
    the share of starts lost (won) on every replay; ``loss_from_always_lost``: the share of
    all lost episodes that come from always-lost starts (the rest are lost to chance on
    starts the policy also wins); ``majority``: the win rate if every start went the way
    it goes most often — what the policy would score were the battle's dice removed.
    """
    w = np.asarray(won) > 0
    p = w.mean(1)  # [E]
    lost = (~w).sum()
    always_lost = p == 0
    return {
        "win_rate": float(w.mean()),
        "always_won": float((p == 1).mean()),
        "always_lost": float(always_lost.mean()),
        "mixed": float(((p > 0) & (p < 1)).mean()),
        "loss_from_always_lost": float((~w)[always_lost].sum() / lost) if lost else 0.0,
        "majority": float((p > 0.5).mean() + 0.5 * (p == 0.5).mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--episodes", type=int, default=512)
    p.add_argument("--key", type=int, default=1000, help="PRNG key of the starts (default 1000)")
    p.add_argument("--replays", type=int, default=1, metavar="R",
                   help="play every start R times with fresh step keys (default 1)")
    p.add_argument("--actions", action="store_true",
                   help="also say what each seed does: shooting, moving, focus fire")
    args = p.parse_args()
    if args.replays < 1 or args.episodes < 1:
        p.error("--episodes and --replays must be at least 1")
    if args.replays > 1:
        for run_dir in args.runs:
            run = load_run(run_dir)
            *_, won = play(run, args.episodes, jax.random.PRNGKey(args.key), args.replays)
            print(f"== {run_dir}: {run.cfg.alg} on {run.cfg.env}, {args.episodes} starts x "
                  f"{args.replays} replays per seed")
            for s in range(run.cfg.seeds):
                r = replay_summary(won[s])
                print(f"  seed {s}: won {r['win_rate']:.3f}; starts always won {r['always_won']:.3f}, "
                      f"always lost {r['always_lost']:.3f}, mixed {r['mixed']:.3f}; losses on "
                      f"always-lost starts {r['loss_from_always_lost']:.3f}; each start its "
                      f"likelier way {r['majority']:.3f}")
        return
    lost_all = []
    for run_dir in args.runs:
        run = load_run(run_dir)
        n = run.env.spec.n_agents
        start, alive, length, won, *trace = play(run, args.episodes, jax.random.PRNGKey(args.key),
                                                 trace=args.actions)
        print(f"== {run_dir}: {run.cfg.alg} on {run.cfg.env}, {args.episodes} greedy episodes per seed")
        for s in range(run.cfg.seeds):
            w = won[s] > 0
            allies, enemies = alive[s][:, :n].sum(-1), alive[s][:, n:].sum(-1)
            gap = np.linalg.norm(start[s][:, :n].mean(1) - start[s][:, n:].mean(1), axis=-1)
            print(f"  seed {s}: won {w.mean():.3f}; length won {length[s][w].mean():.1f}, lost "
                  f"{length[s][~w].mean():.1f}; lost with enemies alive (0..{n}) "
                  f"{np.bincount(enemies[~w], minlength=n + 1).tolist()}; won with allies alive "
                  f"{np.bincount(allies[w], minlength=n + 1).tolist()}; start gap won "
                  f"{gap[w].mean():.2f} lost {gap[~w].mean():.2f}")
            if args.actions:
                steps = {k: v[s] for k, v in trace[0].items()}
                r = action_summary(steps, won[s], run.env.env._env.num_movement_actions)
                print(f"    with an enemy in range: shoot {r['shoot_in_range']:.3f}, move "
                      f"{r['move_in_range']:.3f} (won {r['move_in_range_won']:.3f}, lost "
                      f"{r['move_in_range_lost']:.3f}), stop {r['stop_in_range']:.3f}; two or more "
                      f"shooting: one target {r['focus']:.3f}; shots at the weakest in range "
                      f"{r['weakest']:.3f}")
        lost_all.append(won <= 0)
    lost = np.concatenate(lost_all)  # [all seeds, E]
    k, m = lost.sum(0), lost.shape[0]
    rate = lost.mean()
    print(f"== over {m} seeds: seeds losing each start (0..{m}): {np.bincount(k, minlength=m + 1).tolist()}")
    print(f"   binomial with the same loss rate {rate:.3f}: "
          f"{[round(args.episodes * comb(m, i) * rate**i * (1 - rate)**(m - i)) for i in range(m + 1)]}")
    print(f"   starts won by every seed {(k == 0).mean():.3f} (independent "
          f"{np.prod(1 - lost.mean(1)):.3f}); lost by every seed {(k == m).mean():.3f}")


if __name__ == "__main__":
    main()
