"""Does a seed's untrained policy decide whether ME-QMIX finds Table 1's optimum? Predict, then train.

    nice -n 5 python benchmarks/table1_threshold.py                 # 30 seeds, all three parts
    python benchmarks/table1_threshold.py --seeds 10 --parts me_qmix

The claim under test (issue 40): on ``matrix:table1`` a seed of ME-QMIX ends on (A,A)
exactly when *both* agents' untrained policies put at least ≈0.355 on A. In a one-step
game the soft target is the reward, so the critic is a regression of the payoff on data
drawn from the current soft policy; an additive fit ranks A above B for an agent only
when its partner plays A with probability above 3/8 (8p − 12(1−p) > −12p), and the first
128 episodes all come from the untrained policy, so the basin is chosen before α or
the OPT can move it.

Parts, each on the same seeds 0..N−1 (one program of N seeds):

* ``me_qmix`` — first, before any training, every seed's untrained policy is computed
  (the Table 1 view of its initial parameters) and a success is *predicted* when
  min_i π_i(A) ≥ ``--threshold``; the predictions are written to the JSON file; then the
  seeds train with the defaults and predicted × observed is tabulated, with the sweep of
  the rule over thresholds.
* ``cc`` — the control: the same game with the optimum moved to (C,C)
  (``matrix:custom``). The untrained parameters do not depend on the payoff, so the same
  rule on π_i(C) must now pick other seeds.
* ``qmix`` — QMIX with the 100k-step ε anneal of pymarl2 (the ``table1`` preset's):
  its success rate, which the paper reports as 0 (it settles on (B,B)).
* ``streams`` — how much the untrained parameters decide alone: every seed's initial
  parameters trained again with a new key for its roll-outs and batches (the actions
  sampled, the episodes replayed); each seed's two outcomes are compared (needs the
  ``me_qmix`` part in the same JSON file).

Writes ``benchmarks/results/table1_threshold/threshold.{json,md}`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from meigm import config
from meigm.experiments.diagnostics import first_step_view, initial_params, success_interval
from meigm.experiments.run import train_run
from meigm.program import compiled, make_program, seed_keys

OUT = Path(__file__).parent / "results" / "table1_threshold"
TABLE1 = [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]]
CC = [[0, 0, -12], [0, 0, -12], [-12, -12, 8]]  # Table 1 with A and C swapped: optimum (C,C)
THRESHOLDS = (0.30, 0.32, 0.33, 0.34, 0.345, 0.35, 0.355, 0.36, 0.365, 0.37, 0.375, 0.38, 0.40)

#: part -> (algorithm, overrides, the optimal action of every agent)
PARTS: dict[str, tuple[str, list[str], int]] = {
    "me_qmix": ("me_qmix", [], 0),
    "cc": ("me_qmix", [f"env_args.payoff={json.dumps(CC)}"], 2),
    "qmix": ("qmix", ["epsilon_anneal_steps=100000"], 0),
    "streams": ("me_qmix", [], 0),
}
STREAM_KEY = 10_000  # the new streams' keys: split(PRNGKey(STREAM_KEY), seeds)


def build(part: str, seeds: int) -> config.Config:
    alg, overrides, _ = PARTS[part]
    env = "matrix:custom" if part == "cc" else "matrix:table1"
    return config.build(None, overrides, alg=alg, env=env, seeds=seeds)


def untrained_policies(cfg: config.Config) -> np.ndarray:
    """Each seed's untrained policy at the game's one step: [seeds, N, A], computed as
    ``meigm train``'s Table 1 view computes it (same initial parameters, same function)."""
    program = make_program(cfg)
    params = initial_params(program.trainer, seed_keys(program.cfg))
    view = jax.jit(jax.vmap(lambda p: first_step_view(
        program.learner, program.env, p, jax.random.PRNGKey(0))))(params)
    return np.asarray(jax.device_get(view["probs"]), np.float64)


def prediction_table(p_min: np.ndarray, observed: np.ndarray, threshold: float) -> dict[str, Any]:
    """Predicted (p_min ≥ threshold) × observed success, per seed [S] -> counts and the
    margins: the largest p_min among failures and the smallest among successes."""
    predicted = p_min >= threshold
    observed = observed.astype(bool)
    fails, wins = p_min[~observed], p_min[observed]
    return {
        "threshold": threshold,
        "pred_success_obs_success": int(np.sum(predicted & observed)),
        "pred_success_obs_failure": int(np.sum(predicted & ~observed)),
        "pred_failure_obs_success": int(np.sum(~predicted & observed)),
        "pred_failure_obs_failure": int(np.sum(~predicted & ~observed)),
        "accuracy": float(np.mean(predicted == observed)),
        "largest_min_p_among_failures": round(float(fails.max()), 4) if fails.size else None,
        "smallest_min_p_among_successes": round(float(wins.min()), 4) if wins.size else None,
        "separated": bool(fails.size == 0 or wins.size == 0 or fails.max() < wins.min()),
    }


def threshold_sweep(p_min: np.ndarray, observed: np.ndarray,
                    thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict[str, Any]]:
    """The rule's accuracy and errors at each threshold."""
    return [{k: v for k, v in prediction_table(p_min, observed, t).items()
             if k in ("threshold", "accuracy", "pred_success_obs_failure", "pred_failure_obs_success")}
            for t in thresholds]


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = success_interval(k, n)
    return {"successes": k, "seeds": n, "rate": k / n, "ci95": [round(lo, 4), round(hi, 4)]}


def rate_text(r: dict[str, Any]) -> str:
    return (f"{r['successes']}/{r['seeds']} ({r['rate']:.0%}, exact 95% CI "
            f"{r['ci95'][0]:.0%}–{r['ci95'][1]:.0%})")


def run_part(part: str, seeds: int, threshold: float, record: dict[str, Any], out: Path) -> None:
    cfg = build(part, seeds)
    _, _, best = PARTS[part]
    entry: dict[str, Any] = {"alg": cfg.alg, "env": cfg.env, "overrides": PARTS[part][1]}
    record["parts"][part] = entry
    if cfg.alg != "qmix":
        probs = untrained_policies(cfg)  # [S, N, A]
        p_best = probs[:, :, best]  # [S, N] each agent's untrained π_i(optimal action)
        p_min = p_best.min(axis=1)
        entry["untrained_p_optimal_action"] = p_best.round(4).tolist()
        entry["predicted_success"] = (p_min >= threshold).tolist()
        entry["predicted_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        _save(record, out)  # the prediction is on disk before training starts
        print(f"\n## {part}: predicted before training (min_i π_i({'ABC'[best]}) ≥ {threshold}): "
              f"{int(np.sum(p_min >= threshold))}/{seeds} seeds succeed: "
              f"{[s for s in range(seeds) if p_min[s] >= threshold]}", flush=True)
    t0 = time.perf_counter()
    res = train_run(cfg, out=None, progress=False)
    entry["wall_seconds"] = round(time.perf_counter() - t0, 1)
    view = res["first_step"]
    observed = np.array([bool(e["greedy_is_optimal"]) for e in view["per_seed"]])
    entry["observed_success"] = observed.tolist()
    entry["greedy"] = ["".join(e["greedy_names"]) for e in view["per_seed"]]
    entry["success"] = rate(int(observed.sum()), seeds)
    q_tot = np.array([e["q_tot"] for e in view["per_seed"]])  # [S, A, A] learned Q_tot
    entry["q_tot_mean"], entry["q_tot_sd"] = q_tot.mean(0).round(2).tolist(), q_tot.std(0).round(2).tolist()
    if cfg.alg != "qmix":
        logged = np.array([[p[best] for p in e["initial_policy"]] for e in view["per_seed"]])
        # the run's own view of its untrained parameters agrees with the prediction's input
        assert np.allclose(logged, p_best, atol=1e-4), (logged, p_best)
        entry["table"] = prediction_table(p_min, observed, threshold)
        entry["sweep"] = threshold_sweep(p_min, observed)
        # α, averaged over the seeds and over each interval's updates, at the first
        # evaluation points and the last: how soon the temperature has fallen
        rows = [res["history"][k:k + seeds] for k in range(0, len(res["history"]), seeds)]
        entry["alpha_mean_at"] = {
            str(r[0]["t_env"]): round(float(np.mean([x.get("train/alpha", np.nan) for x in r])), 3)
            for r in [*rows[:3], rows[-1]]}
    print(f"{part}: optimum found in {rate_text(entry['success'])}; {entry['wall_seconds']:.0f} s",
          flush=True)
    _save(record, out)


def run_streams(seeds: int, record: dict[str, Any], out: Path) -> None:
    """Seed s's initial parameters (``learner.init`` of ``PRNGKey(s)``'s first half, as in
    every run) with a new run key for its roll-outs and updates, trained to ``t_max``; its
    outcome beside the ``me_qmix`` part's, where only the key differs."""
    first = record["parts"].get("me_qmix")
    if first is None or len(first["observed_success"]) < seeds:
        raise SystemExit("the streams part needs the me_qmix part of as many seeds in the JSON file")
    cfg = build("streams", seeds)
    program = make_program(cfg)
    init = jax.jit(program.trainer.init)  # one seed's state, compiled once
    states = [init(key) for key in seed_keys(program.cfg)]
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    state = state.replace(key=jax.random.split(jax.random.PRNGKey(STREAM_KEY), seeds))
    t0 = time.perf_counter()
    run, _ = compiled(program.trainer)
    state, _ = run(state, program.cfg.t_max)
    jax.block_until_ready(state)
    wall = time.perf_counter() - t0
    greedy = np.asarray(jax.vmap(lambda p: first_step_view(
        program.learner, program.env, p, jax.random.PRNGKey(0)))(state.learner.params)["greedy"])
    again = np.all(greedy == 0, axis=-1)  # [S] greedy joint action (A,A)
    before = np.array(first["observed_success"][:seeds], bool)
    p_min = np.min(np.array(first["untrained_p_optimal_action"][:seeds]), axis=-1)
    predicted = p_min >= record["threshold"]
    record["parts"]["streams"] = {
        "alg": cfg.alg, "env": cfg.env, "overrides": [], "stream_key": STREAM_KEY,
        "observed_success": again.tolist(),
        "greedy": ["".join("ABC"[a] for a in g) for g in greedy],
        "success": rate(int(again.sum()), seeds),
        "same_outcome_as_me_qmix": int(np.sum(again == before)),
        "success_in_both": int(np.sum(again & before)), "success_in_one": int(np.sum(again != before)),
        "accuracy_of_rule": float(np.mean(predicted == again)),
        "table": prediction_table(p_min, again, record["threshold"]),
        "wall_seconds": round(wall, 1),
    }
    e = record["parts"]["streams"]
    print(f"streams: optimum found in {rate_text(e['success'])}; same outcome as the first stream in "
          f"{e['same_outcome_as_me_qmix']}/{seeds} seeds; the rule's accuracy {e['accuracy_of_rule']:.0%}; "
          f"{wall:.0f} s", flush=True)
    _save(record, out)


def _save(record: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "threshold.json").write_text(json.dumps(record, indent=1))


def markdown(record: dict[str, Any]) -> str:
    thr = record["threshold"]
    lines = [f"# Table 1: untrained policy vs outcome ({record['seeds']} seeds, {record['machine']})", ""]
    for part, e in record["parts"].items():
        if "table" not in e or part == "streams":  # the streams part has its own section
            continue
        t, act = e["table"], "A" if part == "me_qmix" else "C"
        lines += [f"## {part} on {e['env']} {' '.join(e['overrides'])}".rstrip(), "",
                  f"Rule: success iff min_i π_i({act}) ≥ {thr} at the untrained parameters.", "",
                  "| | observed success | observed failure |", "|---|---|---|",
                  f"| predicted success | {t['pred_success_obs_success']} | "
                  f"{t['pred_success_obs_failure']} |",
                  f"| predicted failure | {t['pred_failure_obs_success']} | "
                  f"{t['pred_failure_obs_failure']} |",
                  "",
                  f"Accuracy {t['accuracy']:.0%}; success rate {rate_text(e['success'])}; largest "
                  f"min π({act}) among failures {t['largest_min_p_among_failures']}, smallest among "
                  f"successes {t['smallest_min_p_among_successes']}; mean α at env steps "
                  f"{e['alpha_mean_at']}; {e['wall_seconds']:.0f} s.", "",
                  "| threshold | accuracy | predicted success, failed | predicted failure, succeeded |",
                  "|---|---|---|---|"]
        lines += [f"| {r['threshold']} | {r['accuracy']:.0%} | {r['pred_success_obs_failure']} | "
                  f"{r['pred_failure_obs_success']} |" for r in e["sweep"]]
        lines += ["", f"| seed | π_1({act}) | π_2({act}) | predicted | greedy |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {p[0]:.4f} | {p[1]:.4f} | {'✓' if pr else '·'} | {g}{' ✓' if ob else ''} |"
                  for s, (p, pr, g, ob) in enumerate(zip(e["untrained_p_optimal_action"],
                                                        e["predicted_success"], e["greedy"],
                                                        e["observed_success"], strict=True))]
        lines.append("")
    if "streams" in record["parts"]:
        e, first = record["parts"]["streams"], record["parts"]["me_qmix"]
        t = e["table"]
        lines += ["## The same initial parameters, a new stream of actions and batches", "",
                  f"(A,A) found in {rate_text(e['success'])}; the same outcome as the first stream "
                  f"in {e['same_outcome_as_me_qmix']}/{len(e['greedy'])} seeds ({e['success_in_both']} "
                  f"succeed in both, {e['success_in_one']} in one only); the rule "
                  f"(min π(A) ≥ {thr}) scores {t['accuracy']:.0%} on these outcomes "
                  f"(predicted success: {t['pred_success_obs_success']} succeeded, "
                  f"{t['pred_success_obs_failure']} failed; predicted failure: "
                  f"{t['pred_failure_obs_success']} succeeded, {t['pred_failure_obs_failure']} failed); "
                  f"{e['wall_seconds']:.0f} s.", "",
                  "| seed | min π(A) | first stream | new stream |", "|---|---|---|---|"]
        lines += [f"| {s} | {min(p):.4f} | {g1} | {g2} |" for s, (p, g1, g2) in enumerate(
            zip(first["untrained_p_optimal_action"], first["greedy"], e["greedy"], strict=False))]
        lines.append("")
    if "qmix" in record["parts"]:
        e = record["parts"]["qmix"]
        lines += ["## qmix, ε annealed over 100k env steps", "",
                  f"(A,A) found in {rate_text(e['success'])}; greedy joint actions "
                  f"{' '.join(e['greedy'])}; {e['wall_seconds']:.0f} s.", "",
                  "Learned Q_tot, mean ± sd over the seeds (agent 1 down, agent 2 across):", "",
                  "| | A | B | C |", "|---|---|---|---|"]
        for i, (row, sds) in enumerate(zip(e["q_tot_mean"], e["q_tot_sd"], strict=True)):
            cells = " | ".join(f"{m:.2f} ± {sd:.2f}" for m, sd in zip(row, sds, strict=True))
            lines.append(f"| {'ABC'[i]} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--threshold", type=float, default=0.355)
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated from: {', '.join(PARTS)} ('' rewrites threshold.md from the JSON)")
    p.add_argument("--out", type=Path, default=OUT, help="directory for threshold.{json,md}")
    a = p.parse_args()
    record: dict[str, Any] = {
        "seeds": a.seeds, "threshold": a.threshold,
        "machine": f"{platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "parts": {}}
    saved = a.out / "threshold.json"
    if saved.is_file():  # keep the parts not run again (the streams part reads me_qmix's)
        old = json.loads(saved.read_text())
        if (old["seeds"], old["threshold"]) == (a.seeds, a.threshold):
            record["parts"] = old["parts"]
    for part in filter(None, a.parts.split(",")):  # --parts '' rewrites the tables only
        if part == "streams":
            run_streams(a.seeds, record, a.out)
        else:
            run_part(part, a.seeds, a.threshold, record, a.out)
    text = markdown(record)
    (a.out / "threshold.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
