"""The skill benchmark's report (benchmarks/skill.py), on hand-made runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from meigm.errors import MeigmError

_spec = importlib.util.spec_from_file_location(
    "skill_report", Path(__file__).resolve().parent.parent / "benchmarks" / "skill.py")
skill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(skill)


def _run(root: Path, label: str, won: dict[int, list[float]], finished: bool = False,
         env: str = "smax:3m") -> Path:
    d = root / env.replace(":", "_") / label
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"alg": label, "env": env, "test_episodes": 128}))
    (d / "label.txt").write_text(label)
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"seed": s, "t_env": 100 * (i + 1), "test/won": v}) + "\n"
        for s, vs in won.items() for i, v in enumerate(vs)))
    if finished:
        (d / "results.json").write_text("{}")
    return d


def test_the_table_holds_each_seeds_last_point_and_keeps_runs_reported_before(tmp_path):
    report_dir = tmp_path / "report"
    _run(tmp_path / "old", "qmix", {0: [0.1, 0.5], 1: [0.2, 0.7], 2: [0.3, 0.9]}, finished=True)
    skill.report(tmp_path / "old", report_dir, {"smax:3m": 200})
    _run(tmp_path / "new", "me_qmix", {0: [0.25], 1: [0.75]})
    rows = {r["label"]: r for r in skill.report(tmp_path / "new", report_dir, {"smax:3m": 200})}
    assert rows["qmix"]["win_rate_per_seed"] == [0.5, 0.7, 0.9]
    assert rows["qmix"]["mean"] == pytest.approx(0.7) and rows["qmix"]["t_env"] == [200, 200, 200]
    assert rows["qmix"]["finished"] and rows["qmix"]["archived"]
    assert rows["me_qmix"]["mean"] == pytest.approx(0.5) and not rows["me_qmix"]["archived"]
    table = (report_dir / "table.md").read_text()
    assert "| smax:3m | me_qmix | 2 | 0k, 0k (running) | **50%** [25%, 75%] | 25% / 75% |" in table
    assert "| smax:3m | qmix | 3 | 0k, 0k, 0k | **70%** [50%, 90%] | 50% / 70% / 90% |" in table
    assert (report_dir / "smax_3m_test_won.png").is_file()


def test_nothing_to_report_is_a_one_line_error(tmp_path):
    with pytest.raises(MeigmError, match="no run with a logged evaluation"):
        skill.report(tmp_path / "empty", tmp_path / "report", {})


def test_the_comparison_reads_both_runs_at_the_budget_and_says_only_what_the_interval_allows(tmp_path):
    sweep = tmp_path / "sweep"
    # points at 100..1000; the last tenth of a 1000-step budget holds the points at 900 and 1000
    _run(sweep, "qmix", {s: [0.1] * 8 + [0.2, 0.3] for s in range(3)}, finished=True)
    _run(sweep, "me_qmix", {0: [0.1] * 8 + [0.5, 0.6], 1: [0.1] * 8 + [0.6, 0.7],
                            2: [0.1] * 8 + [0.7, 0.8]}, finished=True)
    skill.report(sweep, tmp_path / "report", {"smax:3m": 1000})
    got = {c["statistic"]: c for c in json.loads((tmp_path / "report" / "comparison.json").read_text())}
    assert got["final"]["difference"] == pytest.approx(0.4)
    assert got["late"]["difference"] == pytest.approx(0.4) and got["late"]["since"] == 900
    assert got["whole"]["difference"] == pytest.approx(0.08)
    assert got["final"]["verdict"] == "ME ahead"
    text = (tmp_path / "report" / "comparison.md").read_text()
    assert "| smax:3m | me_qmix − qmix | final | +40.0 [" in text


def test_a_run_short_of_its_budget_is_not_compared(tmp_path):
    sweep = tmp_path / "sweep"
    _run(sweep, "qmix", {s: [0.1, 0.2, 0.3] for s in range(3)}, finished=True)
    _run(sweep, "me_qmix", {s: [0.1, 0.2] for s in range(3)})
    skill.report(sweep, tmp_path / "report", {"smax:3m": 300})
    assert json.loads((tmp_path / "report" / "comparison.json").read_text()) == []


def test_the_races_are_pooled_once_all_three_have_finished(tmp_path):
    sweep = tmp_path / "sweep"
    races = ("smax:protoss_5_vs_5", "smax:terran_5_vs_5", "smax:zerg_5_vs_5")
    # Final-point differences +0.3, -0.1, +0.1 (every seed alike): pooled +0.1, no spread.
    for env, (me, base) in zip(races, ((0.5, 0.2), (0.4, 0.5), (0.3, 0.2)), strict=True):
        _run(sweep, "qmix", {s: [0.0, base] for s in range(3)}, finished=True, env=env)
        if env != races[-1]:
            _run(sweep, "me_qmix", {s: [0.0, me] for s in range(3)}, finished=True, env=env)
    budgets = dict.fromkeys(races, 200)
    skill.report(sweep, tmp_path / "report", budgets)
    got = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert skill.RACES_POOLED not in {c["scenario"] for c in got}  # zerg's me_qmix is missing
    _run(sweep, "me_qmix", {s: [0.0, 0.3] for s in range(3)}, finished=True, env=races[-1])
    skill.report(sweep, tmp_path / "report", budgets)
    got = {c["statistic"]: c for c in json.loads((tmp_path / "report" / "comparison.json").read_text())
           if c["scenario"] == skill.RACES_POOLED}
    assert got["final"]["difference"] == pytest.approx(0.1)
    assert got["final"]["ci95"] == pytest.approx([0.1, 0.1])
    assert got["final"]["verdict"] == "ME ahead"
    assert got["whole"]["difference"] == pytest.approx(0.05)  # the curves' areas: half of it
    assert "| 5v5 races, mean of 3 | me_qmix − qmix | final | +10.0 [+10.0, +10.0] | ME ahead |" \
        in (tmp_path / "report" / "comparison.md").read_text()
