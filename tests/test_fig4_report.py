"""The Figure 4 report's early-stage statistics (benchmarks/fig4.py), on hand-made runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from meigm.experiments.analysis import diff_ci, find_runs, window_mean

_spec = importlib.util.spec_from_file_location(
    "fig4_report", Path(__file__).resolve().parent.parent / "benchmarks" / "fig4.py")
fig4 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fig4)


def _run(root: Path, label: str, soups: dict[int, list[float]], t_max: int = 60,
         horizon: int = 30, **cfg) -> Path:
    d = root / "overcooked_cramped_room" / label
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({
        "alg": label, "env": "overcooked:cramped_room", "t_max": t_max,
        "reward_shaping_horizon": horizon, **cfg}))
    (d / "label.txt").write_text(label)
    lines = [json.dumps({"seed": s, "t_env": 10 * (i + 1), "test/soups": v, "test/return": 20 * v,
                         "train/info/soups": v / 2})
             for s, vs in soups.items() for i, v in enumerate(vs)]
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_the_early_stage_is_the_mean_of_each_seeds_points_up_to_the_shaping_end(tmp_path):
    _run(tmp_path, "qmix", {0: [0, 1, 2, 6, 6, 6], 1: [0, 0, 3, 0, 0, 0]})
    (run,) = find_runs([tmp_path])
    np.testing.assert_allclose(window_mean(run, "test/soups", 30), [1.0, 1.0])
    np.testing.assert_allclose(window_mean(run, "test/soups", 60), [3.5, 0.5])
    np.testing.assert_allclose(window_mean(run, "train/info/soups", 30), [0.5, 0.5])
    assert window_mean(run, "test/soups", 70) is None  # no seed has reached 70 yet


def test_a_run_whose_seeds_have_not_all_reached_the_point_is_not_compared(tmp_path):
    _run(tmp_path, "qmix", {0: [0, 1, 2, 6], 1: [0, 0]})
    (run,) = find_runs([tmp_path])
    assert window_mean(run, "test/soups", 30) is None
    np.testing.assert_allclose(window_mean(run, "test/soups", 20), [0.5, 0.0])


def test_the_difference_interval_holds_the_difference_and_separates_only_clear_gaps():
    d, lo, hi = diff_ci(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    assert d == pytest.approx(3.0) and 0 < lo <= d <= hi
    d, lo, hi = diff_ci(np.array([0.0, 6.0, 0.0]), np.array([1.0, 1.0, 1.0]))
    assert d == pytest.approx(1.0) and lo < 0 < hi
    d, lo, hi = diff_ci(np.array([2.0, 2.0]), np.array([2.0, 2.0]))
    assert (d, lo, hi) == (0.0, 0.0, 0.0)


def test_the_report_compares_each_me_learner_with_its_base(tmp_path):
    sweep = tmp_path / "sweep"
    _run(sweep, "qmix", {0: [0, 0, 0, 1, 1, 1], 1: [0, 0, 0, 0, 1, 1]})
    _run(sweep, "me_qmix", {0: [1, 2, 3, 3, 3, 3], 1: [2, 2, 2, 3, 3, 3]})
    out = fig4.report(sweep, tmp_path / "report", eval_episodes=0)
    early = [c for c in out["comparisons"] if c["statistic"] == "early_test_soups"]
    assert len(early) == 1 and early[0]["me"] == "me_qmix" and early[0]["base"] == "qmix"
    assert early[0]["difference"] == pytest.approx(2.0) and early[0]["verdict"] == "ME ahead"
    assert (tmp_path / "report" / "overcooked_cramped_room_test_soups.png").is_file()
    assert "me_qmix − qmix" in (tmp_path / "report" / "comparison.md").read_text()


def test_the_report_keeps_runs_it_reported_before_when_their_sweep_directory_is_gone(tmp_path):
    """A sweep directory does not outlive its machine; the report's own copies stand in."""
    old_sweep, report_dir = tmp_path / "old", tmp_path / "report"
    _run(old_sweep, "qmix", {0: [0, 0, 0, 1, 1, 1], 1: [0, 0, 0, 0, 1, 1]})
    fig4.report(old_sweep, report_dir, eval_episodes=0)
    new_sweep = tmp_path / "new"
    _run(new_sweep, "me_qmix", {0: [1, 2, 3, 3, 3, 3], 1: [2, 2, 2, 3, 3, 3]})
    out = fig4.report(new_sweep, report_dir, eval_episodes=0)
    rows = {row["label"]: row for row in out["runs"]}
    assert set(rows) == {"qmix", "me_qmix"}
    assert rows["qmix"]["archived"] and not rows["me_qmix"]["archived"]
    assert rows["qmix"]["early_test_soups"] == [0.0, 0.0]
    early = [c for c in out["comparisons"] if c["statistic"] == "early_test_soups"]
    assert early[0]["difference"] == pytest.approx(2.0)
    table = (report_dir / "table.md").read_text()
    assert "(stopped)" in table and "(running)" in table  # neither has results.json
    assert (report_dir / "runs" / "overcooked_cramped_room" / "me_qmix" / "metrics.jsonl").is_file()


def test_the_early_stage_ends_at_the_last_evaluation_mark_before_the_shaping_ends(tmp_path):
    """Evaluations every 10 steps, shaping over 35: the point at 40 already judges the
    unshaped game, so the early stage is the points at 10, 20 and 30."""
    sweep = tmp_path / "sweep"
    _run(sweep, "qmix", {0: [3, 3, 3, 9, 9, 9], 1: [0, 0, 0, 9, 9, 9]}, horizon=35, test_interval=10)
    out = fig4.report(sweep, tmp_path / "report", eval_episodes=0)
    (row,) = out["runs"]
    assert row["early_test_soups"] == [3.0, 0.0]


def test_a_probe_is_compared_with_the_runs_given_with_it_on_the_stage_they_share(tmp_path):
    """A probe of one setting (a grid label ``me_qmix,target_entropy=1.4``, half the budget)
    against the Figure 4 runs passed with ``--with``: against ME-QMIX at its defaults and
    against QMIX, on the early stage only, and those runs are not copied into the report."""
    fig = tmp_path / "fig4runs"
    _run(fig, "qmix", {0: [2, 2, 2, 2, 2, 2, 2, 2], 1: [2, 2, 2, 2, 2, 2, 2, 2]}, t_max=80)
    _run(fig, "me_qmix", {0: [0] * 8, 1: [0] * 8}, t_max=80)
    probe = tmp_path / "probe"
    _run(probe, "me_qmix,target_entropy=1.4", {0: [1, 1, 1, 1, 1], 1: [1, 1, 1, 1, 1]}, t_max=50,
         alg="me_qmix")
    report_dir = tmp_path / "report"
    out = fig4.report(probe, report_dir, eval_episodes=0, also=(fig,))
    got = {(c["me"], c["base"], c["statistic"]): c for c in out["comparisons"]}
    variant = "me_qmix,target_entropy=1.4"
    vs_default = got[(variant, "me_qmix", "early_test_soups")]
    assert vs_default["difference"] == pytest.approx(1.0) and vs_default["verdict"] == f"{variant} ahead"
    vs_base = got[(variant, "qmix", "early_test_soups")]
    assert vs_base["difference"] == pytest.approx(-1.0) and vs_base["verdict"] == "qmix ahead"
    # other budgets: no whole-run or final comparison; the fig4 pair itself keeps all of them
    assert not any(k[0] == variant and not k[2].startswith("early") for k in got)
    assert got[("me_qmix", "qmix", "whole_test_soups")]["verdict"] == "base ahead"
    assert sorted(p.name for p in (report_dir / "runs" / "overcooked_cramped_room").iterdir()) == [variant]
