"""The Table 1 view: what a learner believes at the first step of a game.

For a one-step (matrix) game the whole joint action space can be enumerated, so we can
put side by side what the paper's Table 1 shows: the learned ``Q_tot`` for every joint
action, each agent's local policy, the greedy joint action (decentralised argmax of
``Q_i``; of the actors' policies for FOP), the joint action the local policies find
most likely, and whether those agree with the argmax of ``Q_tot`` — the *misalignment*
ME-IGM is built to remove.

Everything is a pure function of one seed's parameters; vmap it over seeds. The same
function applied to the untrained parameters gives each seed's *initial* policy, which on
Table 1 decides where a seed ends (benchmarks/table1_threshold.py).
Shapes: N agents, A actions (padded), ``A^N`` joint actions.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from meigm import ops
from meigm.envs import Env
from meigm.learners import Learner
from meigm.learners.common import mix
from meigm.networks.agent import agent_inputs
from meigm.program import Trainer
from meigm.rollout.collect import first_step
from meigm.types import Params


def joint_actions(n_agents: int, n_actions: int) -> jax.Array:
    """Every joint action, row-major (agent 0 slowest): [A^N, N] int32."""
    grids = jnp.meshgrid(*([jnp.arange(n_actions)] * n_agents), indexing="ij")
    return jnp.stack([g.reshape(-1) for g in grids], axis=-1).astype(jnp.int32)


def first_step_view(learner: Learner, env: Env, params: Params, key: jax.Array) -> dict:
    """Learned values and policies at the first step of an episode.

    Returns arrays (one seed):
      ``q_local`` [N, A] — ``Q_i(τ_i, ·)``;
      ``q_tot`` [A^N] — ``Q_tot(s, a)`` for every joint action (row-major);
      ``probs`` [N, A] — local policies (one-hot greedy for ε-greedy learners);
      ``greedy`` [N] — decentralised argmax of the agent network's output, what
      evaluation executes: ``Q_i`` for value-based learners, the actors' logits for FOP;
      ``policy_mode`` [N] — the mode of the joint local policy, which is the per-agent
      mode of π_i because the joint policy factorises; actions tied to float32 count as
      modes and the one with the largest ``Q_i`` is shown (:func:`meigm.ops.policy_mode`);
      ``q_tot_argmax`` [N] — argmax of the enumerated ``Q_tot`` over available joints;
      ``igm_gap`` [] — ``max_a Q_tot(s,a) − Q_tot(s, policy_mode)`` (Figure 2's gap), ≥ 0;
      ``avail`` [N, A] — the actions that exist at that step (a game whose agents have
      different action counts pads the smaller ones; the summary shows real ones only).

    A learner whose critic is not the agent network (FOP: actors run, twin critics and
    mixers value) provides ``joint_values(params, inputs, state, avail, joints)`` giving
    ``q_local`` and ``q_tot``; the others are valued here with their own mixer.

    Misalignment is judged on ``igm_gap``, not on action indices: when two joint actions
    have the same ``Q_tot`` to float precision (B and C in Table 1 are exactly
    equivalent) either is an argmax, and picking the other one is not a misalignment.
    """
    spec = env.spec
    n, a = spec.n_agents, spec.n_actions
    ts = first_step(env, key)
    hidden = jnp.zeros((n, learner.hidden_dim), jnp.float32)
    last = jnp.zeros((n, a), jnp.float32)
    inputs = agent_inputs(ts.obs, last)  # [N, I]
    _, out = learner.agent.apply(params["agent"], hidden, inputs)  # [N, A] what execution argmaxes

    joints = joint_actions(n, a)  # [J, N]
    n_joints = joints.shape[0]
    joint_values = getattr(learner, "joint_values", None)  # learners with a separate critic (FOP)
    if joint_values is None and not hasattr(learner, "mixer"):
        # no joint action values at all (the PPO family): the policies and greedy actions
        # only; Q_tot, its argmax and the IGM gap are undefined (NaN)
        q, q_tot = out, jnp.full((n_joints,), jnp.nan, jnp.float32)
    elif joint_values is None:  # the agent network is the critic: Q_i, mixed by the learner's mixer
        q = out
        state = jnp.broadcast_to(ts.state, (n_joints, ts.state.shape[-1]))
        q_tot = mix(learner.mixer, params["mixer"], jnp.broadcast_to(q, (n_joints, n, a)), joints,
                    jnp.broadcast_to(ts.avail, (n_joints, n, a)), state)  # [J]
    else:
        q, q_tot = joint_values(params, inputs, ts.state, ts.avail, joints)  # [N, A], [J]
    joint_avail = jnp.all(ts.avail[jnp.arange(n)[None, :], joints], axis=-1)  # [J]
    best = jnp.argmax(jnp.where(joint_avail, q_tot, -jnp.inf))

    log_probs = learner.policy_log_probs(params, out, ts.state, ts.avail)  # [N, A]
    probs = jnp.where(ts.avail, jnp.exp(log_probs), 0.0)
    # the policy's order: its logits where the learner has them apart from log π (ME-IGM)
    scores_fn = getattr(learner, "policy_scores", None)
    scores = log_probs if scores_fn is None else scores_fn(params, out, ts.state)
    mode = ops.policy_mode(scores, q, ts.avail)  # [N] ties (to float32) broken by Q_i
    mode_index = jnp.sum(mode * (a ** jnp.arange(n - 1, -1, -1)))  # row-major joint index
    return {
        "q_local": q,
        "q_tot": q_tot,
        "probs": probs,
        "greedy": ops.masked_argmax(out, ts.avail),
        "policy_mode": mode,
        "q_tot_argmax": joints[best],
        "igm_gap": q_tot[best] - q_tot[mode_index],
        "avail": ts.avail,
    }


def initial_params(trainer: Trainer, keys: jax.Array, hyper: dict | None = None) -> Params:
    """Each seed's untrained learner parameters, as its run starts from them.

    keys [seeds, 2] (``meigm.program.seed_keys``), hyper {lane field: [seeds]} (None: the
    program's config) -> params, leaves [seeds, ...]. Seed by
    seed, as :func:`meigm.program.init_seeds` initialises (and for the reason it gives),
    but one compiled initialisation called once per seed rather than every seed unrolled
    into one program: only the small parameters are kept, so nothing is gained by writing
    them at once, and the unrolled program of 30 seeds took minutes to compile."""
    if hyper is None:
        init = jax.jit(lambda key: trainer.init(key).learner.params)
        return jax.tree.map(lambda *xs: jnp.stack(xs), *[init(key) for key in keys])
    init = jax.jit(lambda key, h: trainer.init(key, h).learner.params)  # each lane's own α_init
    return jax.tree.map(lambda *xs: jnp.stack(xs), *[init(key, {k: v[i] for k, v in hyper.items()})
                                                     for i, key in enumerate(keys)])


def success_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) ``level`` interval for a success probability from ``k``
    successes in ``n`` trials: the seeds whose greedy joint action is the optimum.

    It covers the true rate with probability ≥ ``level`` for every rate, at the price of
    being wide: 2/10 -> [0.025, 0.556], 0/10 -> [0, 0.308]."""
    from scipy.stats import binomtest

    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def is_misaligned(igm_gap: np.ndarray, q_tot: np.ndarray, rtol: float = 1e-4) -> np.ndarray:
    """A positive IGM gap beyond float round-off of the ``Q_tot`` scale.

    igm_gap [...], q_tot [..., J] -> bool [...].
    """
    scale = 1.0 + np.max(np.abs(q_tot), axis=-1)
    return np.asarray(igm_gap) > rtol * scale


def summarise_views(views: dict[str, np.ndarray], env: Env, action_names: list[str],
                    initial: dict[str, np.ndarray] | None = None) -> dict:
    """Per-seed views [seeds, ...] -> JSON-ready summary, including the true payoff's
    optimum (when the scenario has a payoff tensor), the number of seeds whose greedy
    joint action is that optimum with its exact 95% interval, and the misalignment count.
    Joint values, local values and policies cover each agent's real actions only
    (``actions`` names them); action indices (``greedy``, ``policy_mode``, ...) are the env's.

    ``initial``: the same views of the untrained parameters (:func:`initial_params`); each
    seed's entry then holds ``initial_policy`` [N][actions], the policy it started from
    (one-hot greedy for ε-greedy learners, like ``policy``)."""
    spec = env.spec
    n, a = spec.n_agents, spec.n_actions
    seeds = views["greedy"].shape[0]
    payoff = getattr(env, "payoff", None)
    optimum = None
    if payoff is not None:
        optimum = [int(i) for i in np.unravel_index(int(np.argmax(payoff)), payoff.shape)]
    per_seed: list[dict[str, Any]] = []
    for s in range(seeds):
        greedy = [int(x) for x in views["greedy"][s]]
        mode = [int(x) for x in views["policy_mode"][s]]
        best = [int(x) for x in views["q_tot_argmax"][s]]
        has_q_tot = not np.isnan(np.asarray(views["q_tot"][s])).all()
        # only the actions that exist: padded actions of smaller action sets are dropped
        real = [np.flatnonzero(row) for row in np.asarray(views["avail"][s], bool)]
        q_tot = np.asarray(views["q_tot"][s]).reshape((a,) * n)[np.ix_(*real)]
        entry = {
            "actions": [[action_names[j] for j in r] for r in real],
            "q_tot": q_tot.round(3).tolist(),
            "q_local": [np.asarray(views["q_local"][s])[i, r].round(3).tolist()
                        for i, r in enumerate(real)],
            "policy": [np.asarray(views["probs"][s])[i, r].round(3).tolist()
                       for i, r in enumerate(real)],
            # four places: the initial policies of Table 1's seeds differ in the third
            **({} if initial is None else {
                "initial_policy": [np.asarray(initial["probs"][s])[i, r].round(4).tolist()
                                   for i, r in enumerate(real)]}),
            "greedy": greedy,
            "greedy_names": [action_names[i] for i in greedy],
            "policy_mode": mode,
            "q_tot_argmax": best,
            "igm_gap": round(float(views["igm_gap"][s]), 6),
            "misaligned": bool(is_misaligned(views["igm_gap"][s], views["q_tot"][s])),
            "greedy_is_optimal": None if optimum is None else greedy == optimum,
        }
        if payoff is not None:
            entry["greedy_payoff"] = float(payoff[tuple(greedy)])
        if not has_q_tot:  # a learner without joint values (PPO): nothing to show there
            entry.update(q_tot=None, q_tot_argmax=None, igm_gap=None, misaligned=False)
        per_seed.append(entry)
    summary: dict[str, Any] = {
        "optimum": optimum,
        "misaligned_seeds": sum(e["misaligned"] for e in per_seed),
        "per_seed": per_seed,
    }
    if optimum is not None:
        k = sum(bool(e["greedy_is_optimal"]) for e in per_seed)
        summary["optimal_seeds"] = k
        summary["fraction_optimal"] = k / seeds
        summary["fraction_optimal_ci95"] = [round(x, 4) for x in success_interval(k, seeds)]
    return summary


def optimal_fraction_text(summary: dict) -> str:
    """'2/10 seeds (20%, 95% CI 3–56%)' for a summary with an optimum; '' without one."""
    if "fraction_optimal" not in summary:
        return ""
    n = len(summary["per_seed"])
    k = summary.get("optimal_seeds", round(summary["fraction_optimal"] * n))
    lo, hi = summary.get("fraction_optimal_ci95") or success_interval(k, n)
    return f"{k}/{n} seeds ({k / n:.0%}, 95% CI {lo:.0%}–{hi:.0%})"


def action_names(n_actions: int) -> list[str]:
    """A, B, C, ... as in the paper's Table 1."""
    return [chr(ord("A") + i) if i < 26 else str(i) for i in range(n_actions)]


def format_view(summary: dict, alg: str, names: list[str], payoff: np.ndarray | None,
                has_policy: bool, max_seeds: int = 3, has_q_tot: bool = True) -> str:
    """Text rendering in the layout of the paper's Table 1 (two-agent games show a
    matrix; larger games list their greedy joint actions)."""
    lines = [f"== {alg}: greedy joint action optimal in "
             + (optimal_fraction_text(summary) or "? seeds (no optimum)")
             + (f", misaligned in {summary['misaligned_seeds']}" if has_policy and has_q_tot else "")]
    if payoff is not None and payoff.ndim == 2:
        lines.append("   true payoff:")
        payoff = np.asarray(payoff)
        lines += _matrix_lines(payoff, names[:payoff.shape[0]], names[:payoff.shape[1]])
    for s, e in enumerate(summary["per_seed"][:max_seeds]):
        q = np.asarray(e["q_tot"])
        real = e.get("actions") or [names[:len(p)] for p in e["policy"]]
        lines.append(f"   seed {s}: greedy ({', '.join(e['greedy_names'])})"
                     + (f" -> payoff {e['greedy_payoff']:g}" if "greedy_payoff" in e else ""))
        if q.ndim == 2 and has_q_tot:
            lines.append("   learned Q_tot:")
            lines += _matrix_lines(q, real[0], real[1])
        if has_policy:
            for i, p in enumerate(e["policy"]):
                line = f"   π_{i + 1}: " + "  ".join(f"{real[i][j]}:{v:.2f}" for j, v in enumerate(p))
                if "initial_policy" in e:
                    line += "   untrained: " + "  ".join(
                        f"{real[i][j]}:{v:.3f}" for j, v in enumerate(e["initial_policy"][i]))
                lines.append(line)
    if len(summary["per_seed"]) > max_seeds:
        rest = summary["per_seed"][max_seeds:]
        lines.append("   other seeds' greedy joint actions: "
                     + " ".join("(" + ",".join(e["greedy_names"]) + ")" for e in rest))
    optimum = summary.get("optimum")
    if has_policy and optimum is not None and "initial_policy" in summary["per_seed"][0]:
        # what decides Table 1: each seed's untrained π_i(optimal action), one pair per seed
        lines.append(f"   untrained π_i({','.join(names[a] for a in optimum)}) per seed, "
                     "* = greedy optimal:")
        cells = [" ".join(f"{e['initial_policy'][i][a]:.3f}" for i, a in enumerate(optimum))
                 + ("*" if e["greedy_is_optimal"] else " ") for e in summary["per_seed"]]
        lines += ["     " + "  ".join(cells[i:i + 5]) for i in range(0, len(cells), 5)]
    return "\n".join(lines)


def _matrix_lines(m: np.ndarray, rows: list[str], cols: list[str]) -> list[str]:
    """Agent 1's actions down, agent 2's across."""
    header = "        " + "".join(f"{c:>9}" for c in cols)
    rows = [f"     {r:>2} " + "".join(f"{v:9.2f}" for v in m[i]) for i, r in enumerate(rows)]
    return [header, *rows]
