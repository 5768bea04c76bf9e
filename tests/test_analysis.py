"""``meigm plot`` / ``meigm table`` on synthetic run directories with hand-known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from meigm.errors import MeigmError
from meigm.experiments.analysis import (
    bootstrap_ci,
    curve,
    diff_ci,
    find_runs,
    plot_runs,
    pooled_diff_ci,
    report_run_dirs,
    table_runs,
    up_to,
    verdict,
    window_mean,
)


def _run(root: Path, name: str, env: str, alg: str, finals: list[float], finished: bool = True,
         **cfg) -> Path:
    """A run whose seed s logs 0.0 then finals[s] for test/won."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"alg": alg, "env": env, "seeds": len(finals),
                                                   "seed": 0, "lr": 0.001, **cfg}))
    lines = []
    for t, values in ((100, [0.0] * len(finals)), (200, finals)):
        lines += [json.dumps({"seed": s, "t_env": t + s, "test/won": v, "test/return": 2 * v})
                  for s, v in enumerate(values)]
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if finished:
        (d / "results.json").write_text("{}")
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _run(root, "a", "smax:x", "me_qmix", [0.5, 0.7, 0.9])
    _run(root, "b", "smax:x", "qmix", [0.1, 0.2, 0.3])
    _run(root, "c", "smax:y", "me_qmix", [1.0, 1.0, 1.0])
    _run(root, "d", "smax:y", "qmix", [0.0, 0.2, 0.4])
    return root


def test_table_has_hand_computed_means_stds_and_bold_best(runs, tmp_path):
    result = table_runs([runs], tmp_path)
    md = (tmp_path / "table.md").read_text()
    assert result["metric"] == "test/won"
    assert "| smax:x | **0.70 ± 0.16** | 0.20 ± 0.08 |" in md  # std of [.5,.7,.9] = 0.1633
    assert "| smax:y | **1.00 ± 0.00** | 0.20 ± 0.16 |" in md
    assert result["rows"]["smax:x"]["qmix"]["per_seed"] == [0.1, 0.2, 0.3]
    assert "\\textbf{0.70 $\\pm$ 0.16}" in (tmp_path / "table.tex").read_text()
    agg = result["aggregate"]
    assert agg["probability_of_improvement"]["me_qmix > qmix"] == 1.0  # better in every pair
    assert agg["probability_of_improvement"]["qmix > me_qmix"] == 0.0


def test_iqm_of_constant_scores_is_that_constant_with_a_collapsed_interval(tmp_path):
    _run(tmp_path / "r", "a", "smax:x", "vdn", [0.25] * 4)
    _run(tmp_path / "r", "b", "smax:y", "vdn", [0.25] * 4)
    iqm = table_runs([tmp_path / "r"], tmp_path / "o")["aggregate"]["iqm"]["vdn"]
    assert iqm["iqm"] == pytest.approx(0.25) and iqm["ci95"] == pytest.approx([0.25, 0.25])


def test_bootstrap_band_contains_the_mean_and_is_reproducible():
    values = np.random.default_rng(0).normal(size=(5, 7))
    lo, hi = bootstrap_ci(values, seed=3)
    assert np.all(lo <= values.mean(0)) and np.all(values.mean(0) <= hi) and np.all(lo < hi)
    lo2, hi2 = bootstrap_ci(values, seed=3)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)
    lo1, hi1 = bootstrap_ci(values[:1])
    assert np.array_equal(lo1, hi1)  # one seed: no spread


def test_plot_writes_png_and_pdf_per_scenario(runs, tmp_path):
    paths = plot_runs([runs], tmp_path, metric="test/return")
    assert sorted(p.name for p in paths) == sorted(
        f"smax_{e}_test_return.{x}" for e in "xy" for x in ("png", "pdf"))
    assert all(p.stat().st_size > 1000 for p in paths)


def test_plot_reference_lines_from_the_cli(runs, tmp_path, capfd):
    from meigm.experiments.cli import main

    out = tmp_path / "ref"
    assert main(["plot", str(runs), "--out", str(out), "--metric", "test/return",
                 "--reference", "random policy=-0.25"]) == 0
    assert (out / "smax_x_test_return.png").is_file()
    assert main(["plot", str(runs), "--out", str(out), "--reference", "random"]) != 0
    assert "--reference must be LABEL=NUMBER, got 'random'" in capfd.readouterr().err


def test_a_budget_keeps_each_seeds_points_before_it_and_its_first_at_or_after_it():
    recs = [{"t_env": t} for t in (150, 300, 301, 450, 603)]
    assert [r["t_env"] for r in up_to(recs, 300)] == [150, 300]
    assert [r["t_env"] for r in up_to(recs, 302)] == [150, 300, 301, 450]  # 450 is "at" 302
    assert [r["t_env"] for r in up_to(recs, 10_000)] == [150, 300, 301, 450, 603]
    assert up_to(recs, None) is recs


def test_curves_cut_at_a_budget_read_a_long_run_beside_a_short_one(runs, tmp_path):
    """Seed s logs at 100 + s and 200 + s: at a 150-step budget both points stay (the
    evaluation "at 150" is the one logged at 200 + s); at 100 only the first one."""
    (run,) = [r for r in find_runs([runs]) if r.path.name == "a"]
    x, y = curve(run, "test/won", max_steps=150)
    assert x.tolist() == [101.0, 201.0] and y[:, -1].tolist() == [0.5, 0.7, 0.9]
    x, y = curve(run, "test/won", max_steps=100)
    assert x.tolist() == [101.0] and y[:, 0].tolist() == [0.0, 0.0, 0.0]
    from meigm.experiments.cli import main

    assert main(["plot", str(runs), "--out", str(tmp_path / "cut"), "--max-steps", "100"]) == 0
    assert (tmp_path / "cut" / "smax_x_test_won.png").is_file()


def test_a_non_positive_budget_is_refused_in_one_line(runs, tmp_path, capfd):
    from meigm.experiments.cli import main

    assert main(["plot", str(runs), "--out", str(tmp_path), "--max-steps", "0"]) != 0
    err = capfd.readouterr().err
    assert "--max-steps must be a positive number of env steps, got 0" in err and "Traceback" not in err


def test_plot_marks_where_the_shaping_reward_ends(tmp_path, monkeypatch):
    """One dotted line per scenario at its runs' shaping horizon; none where shaping is off."""
    from matplotlib.axes import Axes

    seen, draw = [], Axes.axvline
    monkeypatch.setattr(Axes, "axvline",
                        lambda self, x, **kw: seen.append((x, kw.get("label"))) or draw(self, x, **kw))
    _run(tmp_path, "a", "overcooked:cramped_room", "qmix", [0.5], reward_shaping_horizon=150)
    _run(tmp_path, "b", "overcooked:cramped_room", "me_qmix", [0.5], reward_shaping_horizon=150)
    _run(tmp_path, "c", "smax:x", "qmix", [0.5], reward_shaping_horizon=0)
    plot_runs([tmp_path], tmp_path / "out", metric="test/return")
    assert seen == [(150, "shaping ends (150)")]


def test_plot_lines_stay_distinct_past_the_colour_cycle(tmp_path, monkeypatch):
    """Twelve runs on one scenario: the 11th and 12th lines reuse a colour, so they get a
    dash pattern of their own (the 3m plateau figure drew two runs in one blue)."""
    from matplotlib.axes import Axes

    seen, draw = [], Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **kw: seen.append(
        (kw["color"], kw["linestyle"])) or draw(self, *a, **kw))
    for i in range(12):
        _run(tmp_path, f"r{i}", "smax:x", "qmix", [0.5], lr=10.0**-i)
    plot_runs([tmp_path], tmp_path / "out", metric="test/won")
    assert len(seen) == 12 and len(set(seen)) == 12
    assert [style for _, style in seen].count("-") == 10


def test_plot_names_keep_dots_in_scenario_names(tmp_path):
    _run(tmp_path, "a", "pettingzoo:mpe2.simple_spread_v3", "qmix", [0.5])
    paths = plot_runs([tmp_path], tmp_path / "out", metric="test/return")
    assert sorted(p.name for p in paths) == [
        f"pettingzoo_mpe2.simple_spread_v3_test_return.{x}" for x in ("pdf", "png")]


def test_runs_differing_only_in_a_field_get_separate_labels(tmp_path):
    _run(tmp_path, "a", "smax:x", "me_qmix", [0.5], transform="opt")
    _run(tmp_path, "b", "smax:x", "me_qmix", [0.5], transform="none")
    assert sorted(r.label for r in find_runs([tmp_path])) == [
        "me_qmix transform=none", "me_qmix transform=opt"]


def test_bad_input_names_the_problem(runs, tmp_path):
    with pytest.raises(MeigmError, match=r"no such file or directory: .*missing"):
        table_runs([tmp_path / "missing"], tmp_path)
    (tmp_path / "empty2").mkdir()
    with pytest.raises(MeigmError, match="no finished run directories"):
        table_runs([tmp_path / "empty2"], tmp_path)
    with pytest.raises(MeigmError, match=r"metric 'test/soups' is not in every run; available: .*test/won"):
        table_runs([runs], tmp_path, metric="test/soups")
    with (runs / "a" / "metrics.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(MeigmError, match=r"a/metrics.jsonl line 7 is not valid JSON"):
        table_runs([runs], tmp_path)


def test_tables_leave_out_unfinished_runs_plots_draw_them(runs, tmp_path):
    _run(runs, "e", "smax:z", "vdn", [0.3], finished=False)  # still training
    assert "smax:z" not in table_runs([runs], tmp_path)["rows"]
    assert any("smax_z" in p.name for p in plot_runs([runs], tmp_path))


def test_a_report_covers_the_sweeps_runs_then_the_archived_ones_it_does_not_hold(tmp_path):
    def run(root: Path, rel: str, logged: bool = True) -> Path:
        d = root / rel
        d.mkdir(parents=True)
        (d / "config.yaml").write_text("alg: qmix\nenv: smax:3m\n")
        (d / "metrics.jsonl").write_text('{"seed": 0, "t_env": 1}\n' if logged else "")
        return d

    sweep, archive = tmp_path / "sweep", tmp_path / "report" / "runs"
    fresh = run(sweep, "smax_3m/qmix")
    run(sweep, "smax_3m/vdn", logged=False)  # just started: nothing logged yet
    run(archive, "smax_3m/qmix")  # an older copy of a run being trained again
    kept = run(archive, "smax_3m/vdn")
    only_archived = run(archive, "smax_8m/qmix")
    got = report_run_dirs(sweep, archive)
    assert got == [(fresh, Path("smax_3m/qmix")), (kept, Path("smax_3m/vdn")),
                   (only_archived, Path("smax_8m/qmix"))]
    assert report_run_dirs(tmp_path / "lost", archive)[0][0] == archive / "smax_3m/qmix"
    assert report_run_dirs(tmp_path / "lost", tmp_path / "none") == []


def test_a_window_takes_each_seeds_points_at_its_ends_on_the_seeds_own_grid(runs):
    """Seed s logs at 100 + s and 200 + s, so its point "at" 150 is the one at 200 + s: a
    window ending at 150 holds both points, one starting at 150 only the second."""
    (run,) = [r for r in find_runs([runs]) if r.path.name == "a"]
    np.testing.assert_allclose(window_mean(run, "test/won", 150), [0.25, 0.35, 0.45])
    np.testing.assert_allclose(window_mean(run, "test/won", 150, since=150), [0.5, 0.7, 0.9])
    np.testing.assert_allclose(window_mean(run, "test/won", 100), [0.0, 0.0, 0.0])
    assert window_mean(run, "test/won", 203) is None  # seeds 0-2 end at 200-202: none at 203


_seeds = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(_seeds, _seeds, st.floats(-1e6, 1e6, allow_nan=False))
def test_a_difference_interval_holds_its_estimate_and_moves_with_a_shift(a, b, shift):
    a, b = np.array(a), np.array(b)
    d, lo, hi = diff_ci(a, b)
    tol = 1e-6 * (1 + np.abs(a).max() + np.abs(b).max() + abs(shift))
    assert lo - tol <= d <= hi + tol
    assert d == pytest.approx(a.mean() - b.mean(), abs=tol)
    d2, lo2, hi2 = diff_ci(a + shift, b)  # the spreads are unchanged, every mean moved
    assert (d2, lo2, hi2) == pytest.approx((d + shift, lo + shift, hi + shift), abs=tol)
    da, lo_r, hi_r = diff_ci(b, a)  # swapping the runs mirrors the interval
    assert (da, lo_r, hi_r) == pytest.approx((-d, -hi, -lo), abs=tol)
    if min(len(a), len(b)) == 1:  # one seed: no spread to estimate, nothing separated
        assert (lo, hi) == (-np.inf, np.inf)


@pytest.mark.parametrize("scale", [1e-108, 1e-160, 1e150])
def test_the_difference_interval_is_scale_free_at_tiny_and_huge_spreads(scale):
    """Welch's dof squares each run's variance: for spreads of 1e-108 that underflowed to
    0/0 and gave a NaN bound (hypothesis found it: a = 0, 0; b = 0, 2.7e-108)."""
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 3.0])
    d, lo, hi = diff_ci(a, b)
    ds, los, his = diff_ci(a * scale, b * scale)
    assert np.isfinite([ds, los, his]).all()
    assert (ds, los, his) == pytest.approx((d * scale, lo * scale, hi * scale), rel=1e-9)
    _, lo0, hi0 = diff_ci(np.zeros(2), np.array([0.0, 2.7183459004526277e-108]))
    assert np.isfinite([lo0, hi0]).all() and lo0 < 0 < hi0


def test_identical_seeds_give_a_zero_width_interval_and_the_verdict_needs_a_clear_gap():
    assert diff_ci(np.full(3, 0.25), np.full(2, 0.25)) == (0.0, 0.0, 0.0)
    _, lo, hi = diff_ci(np.array([0.9, 0.91, 0.92]), np.array([0.1, 0.11, 0.12]))
    assert verdict(lo, hi) == "ME ahead" and verdict(-hi, -lo) == "base ahead"
    _, lo, hi = diff_ci(np.array([0.0, 0.6, 0.0]), np.array([0.2, 0.2, 0.2]))
    assert verdict(lo, hi) == "not separated"


def test_the_difference_interval_is_welchs_by_hand():
    # a = 1, 2, 3 (mean 2, s² 1); b = 0, 0, 3 (mean 1, s² 3): variance 1/3 + 3/3 = 4/3,
    # Welch-Satterthwaite dof (4/3)² / ((1/3)²/2 + 1²/2) = 3.2, half-width t(0.975, 3.2)·√(4/3).
    d, lo, hi = diff_ci(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 3.0]))
    half = scipy_stats.t.ppf(0.975, 3.2) * np.sqrt(4 / 3)
    assert (d, lo, hi) == pytest.approx((1.0, 1.0 - half, 1.0 + half))
    assert half == pytest.approx(3.55, abs=0.01)  # t(0.975, 3.2) ≈ 3.07, between t3 3.18 and t4 2.78
    # and scipy's own Welch test gives the same interval
    ref = scipy_stats.ttest_ind([1.0, 2.0, 3.0], [0.0, 0.0, 3.0], equal_var=False).confidence_interval()
    assert (lo, hi) == pytest.approx((ref.low, ref.high))


def test_two_runs_of_one_law_are_called_separated_about_one_time_in_twenty_at_three_seeds():
    """What the verdict promises: at 3 seeds a side and no real difference, "separated" at
    most about 5% of the time (a percentile bootstrap of the seeds said it ~19%)."""
    rng = np.random.default_rng(0)
    sims = 2000
    wrong = sum(verdict(*diff_ci(rng.normal(0.8, 0.03, 3), rng.normal(0.8, 0.03, 3))[1:])
                != "not separated" for _ in range(sims))
    assert wrong / sims < 0.06
    # and a real gap of four spreads is found most of the time
    found = sum(verdict(*diff_ci(rng.normal(0.92, 0.03, 3), rng.normal(0.8, 0.03, 3))[1:])
                == "ME ahead" for _ in range(sims))
    assert found / sims > 0.7


def test_pooled_difference_is_the_mean_of_the_scenarios_and_narrows_with_them():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.4, 0.8, 3), rng.uniform(0.3, 0.7, 3)
    assert pooled_diff_ci([(a, b)]) == diff_ci(a, b)  # one scenario: the plain difference
    # By hand: differences +0.2 and -0.1 with no spread within a run -> +0.05, zero width.
    assert pooled_diff_ci([(np.full(3, 0.5), np.full(3, 0.3)), (np.full(2, 0.1), np.full(4, 0.2))]) \
        == pytest.approx((0.05, 0.05, 0.05))
    # Three scenarios alike in spread: the pooled interval is narrower than one's (~1/sqrt 3).
    pairs = [(rng.uniform(0.4, 0.8, 3), rng.uniform(0.3, 0.7, 3)) for _ in range(3)]
    width = [hi - lo for _, lo, hi in (diff_ci(x, y) for x, y in pairs)]
    _, lo, hi = pooled_diff_ci(pairs)
    assert hi - lo < min(width)
