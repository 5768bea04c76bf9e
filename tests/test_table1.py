"""Table 1 (issue 40): the preset's ε schedule for the ε-greedy baselines, each seed's
untrained policy in the Table 1 view, exact binomial intervals on success rates, and the
threshold benchmark's prediction table on hand-made seeds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY

from meigm import config
from meigm.experiments.cli import VARIANTS, _summary_line, main
from meigm.experiments.diagnostics import (
    action_names,
    first_step_view,
    format_view,
    success_interval,
)
from meigm.experiments.run import train_run
from meigm.experiments.sweep import load_sweep
from meigm.program import make_program

_spec = importlib.util.spec_from_file_location(
    "table1_threshold", Path(__file__).resolve().parent.parent / "benchmarks" / "table1_threshold.py")
table1_threshold = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table1_threshold)

SHORT = [*TINY, "t_max=200", "test_interval=100"]


@pytest.fixture(scope="module")
def me_qmix_run():
    cfg = config.build(None, SHORT, alg="me_qmix", env="matrix:table1", seeds=3)
    return train_run(cfg, progress=False)


# ---------------------------------------------------------------- the preset
@pytest.mark.parametrize("budget", ["laptop", "smoke"])
def test_table1_preset_anneals_the_epsilon_greedy_baselines_over_100k_steps(budget):
    runs = {r.label: r.config().resolve(5_000) for r in load_sweep("table1", budget).runs}
    for label in ("qmix", "vdn"):
        cfg = runs[label]
        assert cfg.alg == label and cfg.epsilon_anneal_steps == 100_000
        assert cfg.t_max < cfg.epsilon_anneal_steps  # ε stays near 1: near-uniform data
    assert runs["me_qmix"].epsilon_anneal_steps == runs["me_qmix"].t_max // 20  # untouched


def test_compare_uses_the_presets_epsilon_for_qmix_and_vdn():
    preset = {r.label: r.values for r in load_sweep("table1").runs}
    for label in ("qmix", "vdn"):
        alg, overrides = VARIANTS[label]
        cfg = config.build(None, overrides, alg=alg, env="matrix:table1")
        assert cfg.epsilon_anneal_steps == preset[label]["epsilon_anneal_steps"]
    # what a user writes on the line still wins over the variant's setting
    alg, overrides = VARIANTS["qmix"]
    assert config.build(None, [*overrides, "epsilon_anneal_steps=7"], alg=alg).epsilon_anneal_steps == 7


# ---------------------------------------------------------------- the untrained policy
def test_view_holds_each_seeds_untrained_policy(me_qmix_run):
    """initial_policy is the Table 1 view's policy at the parameters seed s starts from,
    ``learner.init(split(PRNGKey(s))[0])``, computed here seed by seed without the run."""
    program = make_program(me_qmix_run["config"])
    per_seed = me_qmix_run["first_step"]["per_seed"]
    assert len(per_seed) == 3
    for s, entry in enumerate(per_seed):
        k_learner, _ = jax.random.split(jax.random.PRNGKey(s))
        params = program.learner.init(k_learner).params
        probs = first_step_view(program.learner, program.env, params, jax.random.PRNGKey(0))["probs"]
        start = np.asarray(entry["initial_policy"])  # [N, A]
        assert start.shape == (2, 3)
        np.testing.assert_allclose(start.sum(axis=-1), 1.0, atol=1e-3)
        np.testing.assert_allclose(start, np.asarray(probs), atol=1e-4)
    starts = [np.asarray(e["initial_policy"]) for e in per_seed]
    assert not np.allclose(starts[0], starts[1])  # each seed its own draw


def test_view_and_summary_print_the_untrained_policy_and_the_interval(me_qmix_run):
    view = me_qmix_run["first_step"]
    k = view["optimal_seeds"]
    assert view["fraction_optimal"] == k / 3
    assert view["fraction_optimal_ci95"] == pytest.approx(success_interval(k, 3), abs=1e-4)
    text = format_view(view, "me_qmix", action_names(3), np.asarray(table1_threshold.TABLE1),
                       has_policy=True)
    assert f"optimal in {k}/3 seeds" in text and "95% CI" in text
    assert text.count("untrained: A:") == 2 * 3  # both agents of the three seeds shown
    pairs = text.split("untrained π_i(A,A) per seed")[1]
    for e in view["per_seed"]:
        assert f"{e['initial_policy'][0][0]:.3f} {e['initial_policy'][1][0]:.3f}" in pairs
    line = _summary_line("me_qmix", me_qmix_run)
    lo, hi = view["fraction_optimal_ci95"]
    assert f"{k}/3 seeds ({k / 3:.0%}, 95% CI {lo:.0%}–{hi:.0%})" in line


def test_compare_records_the_interval(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--algs", "qmix", "--seeds", "2", "--out", str(out), "--no-progress",
                 *SHORT]) == 0
    qmix = json.loads((out / "comparison.json").read_text())["variants"]["qmix"]
    k = round(qmix["fraction_optimal"] * 2)
    assert qmix["fraction_optimal_ci95"] == pytest.approx(success_interval(k, 2), abs=1e-4)
    assert qmix["overrides"] == ["epsilon_anneal_steps=100000"]


# ---------------------------------------------------------------- exact intervals
@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 10, 0.0, 0.3085),      # 1 - 0.025 ** (1/10)
    (10, 10, 0.6915, 1.0),     # 0.025 ** (1/10)
    (2, 10, 0.0252, 0.5561),
    (1, 1, 0.025, 1.0),        # one trial: the lower end solves p = 0.025
    (15, 30, 0.3130, 0.6870),  # symmetric about 1/2
])
def test_clopper_pearson_interval_by_hand(k, n, lo, hi):
    got = success_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_interval_rejects_impossible_counts():
    for k, n in ((3, 2), (-1, 4), (0, 0)):
        with pytest.raises(ValueError, match="0 <= k <= n"):
            success_interval(k, n)


# ---------------------------------------------------------------- the benchmark's table
def test_prediction_table_on_hand_made_seeds():
    p_min = np.array([0.40, 0.36, 0.35, 0.30, 0.37, 0.20])
    observed = np.array([True, True, False, False, False, True])
    t = table1_threshold.prediction_table(p_min, observed, 0.355)
    assert (t["pred_success_obs_success"], t["pred_success_obs_failure"],
            t["pred_failure_obs_success"], t["pred_failure_obs_failure"]) == (2, 1, 1, 2)
    assert t["accuracy"] == pytest.approx(4 / 6)
    assert t["largest_min_p_among_failures"] == 0.37
    assert t["smallest_min_p_among_successes"] == 0.20
    assert not t["separated"]
    sweep = table1_threshold.threshold_sweep(p_min[:4], observed[:4], (0.3, 0.355, 0.5))
    assert [r["accuracy"] for r in sweep] == [0.5, 1.0, 0.5]  # 0.3: all four predicted wins
