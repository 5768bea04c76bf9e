"""The reproduction report (benchmarks/paper.py): it reads every meigm figure from the
committed runs it cites, refuses a missing or unpoolable run loudly, and docs/reproduction.md
is what it generates from today's runs."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from meigm.errors import MeigmError
from meigm.experiments.analysis import load_run, protocol_scores

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("paper_report", ROOT / "benchmarks" / "paper.py")
paper = importlib.util.module_from_spec(_spec)
sys.modules["paper_report"] = paper  # its dataclasses look their module up by name
_spec.loader.exec_module(paper)

#: The committed results the report reads (copied, so a test may break them).
CITED = ("skill/runs", "fig2_laptop", "fig4_laptop/runs", "alpha", "plateau_3m", "table1_comparison.json")


@pytest.fixture()
def results(tmp_path, monkeypatch) -> Path:
    """A private copy of the committed results the report cites, with the report pointed at it."""
    root = tmp_path / "results"
    for rel in CITED:
        src = ROOT / "benchmarks" / "results" / rel
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.png", "*.pdf"))
        else:
            shutil.copy2(src, dst)
    monkeypatch.setattr(paper, "RESULTS", root)
    monkeypatch.setattr(paper, "VERDICT_RUNS", root / "verdict" / "runs")
    return root


def _set_metric(run: Path, metric: str, value) -> None:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    for i, rec in enumerate(lines):
        if metric in rec:
            rec[metric] = value(rec, i) if callable(value) else value
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def test_the_committed_report_is_what_the_committed_runs_give():
    """docs/reproduction.md is regenerated whenever a run it cites lands."""
    assert paper.main(["--check"]) == 0


def test_a_missing_cited_run_stops_the_report_with_one_line_naming_it(results, tmp_path, capsys):
    shutil.rmtree(results / "fig2_laptop" / "smax_zerg_5_vs_5" / "fop")
    out = tmp_path / "docs" / "reproduction.md"
    assert paper.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fig2_laptop/smax_zerg_5_vs_5/fop" in err
    assert not out.exists()


def test_an_unfinished_or_short_run_is_refused(results, tmp_path):
    run = results / "skill" / "runs" / "smax_terran_5_vs_5" / "qmix"
    (run / "results.json").unlink()
    with pytest.raises(MeigmError, match="has not finished"):
        paper.generate(tmp_path / "fig", draw=False)
    (run / "results.json").write_text("{}")
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs
                                               if r["t_env"] < 600_000))
    with pytest.raises(MeigmError, match="of the 1,000,000 env steps"):
        paper.generate(tmp_path / "fig", draw=False)


def test_runs_with_another_config_are_not_pooled(results, tmp_path):
    """A verdict run with another learning rate must not join the skill run's seeds."""
    src = results / "skill" / "runs" / "smax_zerg_5_vs_5" / "qmix"
    extra = results / "verdict" / "runs" / "smax_zerg_5_vs_5" / "qmix,seed=3"
    shutil.copytree(src, extra)
    cfg = yaml.safe_load((extra / "config.yaml").read_text())
    (extra / "config.yaml").write_text(yaml.safe_dump({**cfg, "lr": 5e-4, "seed": 3, "seeds": 1}))
    _set_metric(extra, "seed", lambda rec, i: rec["seed"] + 3)
    with pytest.raises(MeigmError, match="differ in lr"):
        paper.generate(tmp_path / "fig", draw=False)


def test_every_meigm_figure_is_read_from_the_runs(results, tmp_path):
    """Set every cited race run's win rate to one constant: every meigm cell of the races
    reads it, the differences are 0, and a fourth seed added as a verdict run is counted."""
    for run in (results / "skill" / "runs").glob("smax_*_5_vs_5/*"):
        _set_metric(run, "test/won", 0.25)
    extra = results / "verdict" / "runs" / "smax_protoss_5_vs_5" / "me_qmix,seed=3"
    shutil.copytree(results / "skill" / "runs" / "smax_protoss_5_vs_5" / "me_qmix", extra)
    cfg = yaml.safe_load((extra / "config.yaml").read_text())
    (extra / "config.yaml").write_text(yaml.safe_dump({**cfg, "seed": 3, "seeds": 1}))
    recs = [json.loads(x) for x in (extra / "metrics.jsonl").read_text().splitlines()]
    (extra / "metrics.jsonl").write_text("".join(json.dumps({**r, "seed": 3}) + "\n"
                                                 for r in recs if r["seed"] == 0))
    text = paper.generate(tmp_path / "fig", draw=False)
    central = _section(text, "## Does ME-IGM help?")
    rows = [line for line in central.splitlines() if line.startswith("| protoss") or
            line.startswith("| terran") or line.startswith("| zerg")]
    assert len(rows) == 3
    for row in rows:
        assert row.count("25.0 [25.0, 25.0]") == 2 and "+0.0 [+0.0, +0.0]" in row
    assert "(4 seeds)" in rows[0] and "(3 seeds)" in rows[1]
    table2 = _section(text, "## Table 2")
    # every measured cell of Table 2 is a race's qmix / me_qmix / ppo / hasac run: 25.0 where set
    for scen in ("protoss_5_vs_5", "terran_5_vs_5", "zerg_5_vs_5"):
        row = next(line for line in table2.splitlines() if line.startswith(f"| {scen} "))
        measured = re.findall(r"· (\d+\.\d) \[", row)
        assert measured and set(measured) == {"25.0"}


def test_protocol_score_is_the_mean_of_the_last_five_points_within_the_budget(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"alg": "qmix", "env": "smax:3m", "t_max": 800}))
    won = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # points at 100 ... 1000
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"seed": s, "t_env": 100 * (i + 1) + s, "test/won": w + s / 10}) + "\n"
        for s in (0, 1) for i, w in enumerate(won)))
    run = load_run(d)
    # seed 0: the point at 800 is t=800 -> points 400..800; seed 1: first at/after 800 is 801
    np.testing.assert_allclose(protocol_scores(run, "test/won", 800), [0.5, 0.6])
    np.testing.assert_allclose(protocol_scores(run, "test/won", None), [0.7, 0.8])
    with pytest.raises(MeigmError, match="of the 5,000 env steps"):
        protocol_scores(run, "test/won", 5000)
    with pytest.raises(MeigmError, match="needs 5"):
        protocol_scores(run, "test/won", 300)


def test_verdict_words_follow_the_interval():
    assert paper.above(0.1, 0.3) == "reproduced"
    assert paper.above(-0.3, -0.1) == "reversed"
    assert paper.above(-0.1, 0.1) == "not separated"
    v, lo, hi = paper.majority(10, 10)
    assert v == "reproduced" and hi == 1.0 and lo == pytest.approx(0.6915, abs=1e-4)
    v, lo, hi = paper.majority(0, 10)
    assert v == "not reproduced" and lo == 0.0 and hi == pytest.approx(0.3085, abs=1e-4)
    assert paper.majority(5, 10)[0] == "not separated"


@pytest.mark.parametrize(("preset", "label", "base", "own"), [
    ("verdict", "qmix", "qmix", ()), ("verdict", "me_qmix", "me_qmix", ()),
    ("table3", "+entropy", "me_qmix", ("transform",)), ("table4", "me_qmix_mlp", "me_qmix", ("transform",)),
    ("fig5", "qmix_eps_1M", "qmix", ("epsilon_anneal_steps",)),
    # opt_lr resolves to lr (QMIX has no OPT to use it)
    ("tuning", "qmix_eps100k_lr5e-4", "qmix", ("epsilon_anneal_steps", "lr", "opt_lr")),
    ("tuning", "me_qmix_alr3e-3_te0.1", "me_qmix", ("alpha_lr", "target_entropy")),
])
def test_the_protocol_presets_train_what_the_skill_runs_trained(preset, label, base, own):
    """A one-seed run of the protocol presets differs from the committed skill run it is
    compared with (or pooled with) only in its seeds, in the layout of its updates and in
    the one field its label changes: otherwise the report would refuse to pool it or, worse,
    compare two protocols."""
    import dataclasses

    from meigm.envs import make_env
    from meigm.experiments.sweep import load_sweep

    run = next(r for r in load_sweep(preset, "laptop").runs
               if r.run_id.startswith(f"smax_protoss_5_vs_5/{label},seed="))
    cfg = run.config()
    env = make_env(cfg.env, cfg.env_args)
    new = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(
        cfg.resolve(env.spec.default_t_max, dict(env.spec.config_defaults)))))
    old = yaml.safe_load((ROOT / "benchmarks/results/skill/runs/smax_protoss_5_vs_5" / base /
                          "config.yaml").read_text())
    differ = {k for k in set(old) & set(new) if old[k] != new[k]} - set(paper.POOLABLE)
    assert differ == set(own)


@pytest.mark.parametrize(("point", "reads"), sorted(paper.TUNING_READS.items()))
def test_a_tuning_point_read_from_another_preset_has_the_same_config(point, reads):
    """The tuning table reads some points from Figure 5's and Figure 6's runs: only runs of
    the same config may stand in for a point. Figure 5 trains the same one-seed runs;
    Figure 6 trains seeds 0-2 as lanes of one program, which differs in ``seeds`` only
    (a lane trains as its seed alone: tests/test_lanes.py)."""
    import dataclasses

    from meigm.envs import make_env
    from meigm.experiments.sweep import load_sweep

    def config(preset: str, run_id: str) -> dict:  # as trained: the scenario's defaults resolved
        cfg = next(r for r in load_sweep(preset, "laptop").runs
                   if r.run_id == f"smax_protoss_5_vs_5/{run_id}").config()
        env = make_env(cfg.env, cfg.env_args)
        return dataclasses.asdict(cfg.resolve(env.spec.default_t_max, dict(env.spec.config_defaults)))

    preset, name = reads
    own = config("tuning", f"{point},seed=0")
    if preset == "fig5":
        assert config("fig5", f"{name},seed=0") == own
    else:
        other = config("fig6", f"me_qmix,{name}")
        assert other["seeds"] == 3 and other["seed"] == own["seed"] == 0
        assert {k: v for k, v in other.items() if k != "seeds"} == {
            k: v for k, v in own.items() if k != "seeds"}


def test_a_cell_not_run_is_priced_from_the_cost_table_where_it_has_the_cell(tmp_path, monkeypatch):
    """Table 2's cells without a run say what they would cost: from the cost table's own
    measurement of that cell (seeds × its projected 1M wall), a cell the memory check
    refused says so, and a cell the table lacks falls back to a committed run's speed."""
    table = tmp_path / "cells.json"
    table.write_text(json.dumps({"leg": 2000, "device": "cpu (cpu)", "rows": {
        "smax_zerg_10_vs_10/qplex seeds=1": {"wall_1M_h": 0.7},
        "smax_zerg_20_vs_23/fop seeds=1": {"refused": "the replay buffers need ...",
                                           "memory_estimate_gb": {"training state": 40.0,
                                                                  "replay buffers": 39.0,
                                                                  "roll-out": 0.5}}}}))
    monkeypatch.setattr(paper, "CELL_COSTS", table)
    assert paper.projected("zerg_10_vs_10", "qplex", seeds=3) == "not run (≈2.1 h)"
    assert paper.projected("zerg_20_vs_23", "fop", seeds=3) == "not run (does not fit here: 40 GB)"
    assert paper.projected("terran_20_vs_20", "qplex", seeds=3) == "not run"  # no run of its size
    assert "1 cell measured" in paper.speeds_used() and "1 refused" in paper.speeds_used()


def _copy_run(src: Path, dst: Path, won: float) -> None:
    shutil.copytree(src, dst)
    _set_metric(dst, "test/won", won)


def test_figure6_and_the_tuning_grid_read_their_points_from_the_runs(results, tmp_path):
    """Figure 6 at the protocol and the equal-effort grid: each point is read from its own
    archived run, the defaults from the central comparison's cell; the claims follow the
    intervals (a lower α lr 15 points higher: reproduced; every target entropy equal:
    insensitive, reproduced; QMIX's best point 5 points above ME-QMIX's: reversed)."""
    skill = results / "skill" / "runs" / "smax_protoss_5_vs_5"
    for alg in ("qmix", "me_qmix"):
        _set_metric(skill / alg, "test/won", 0.25)
    verdict = results / "verdict" / "runs" / "smax_protoss_5_vs_5"
    text = paper.generate(tmp_path / "fig", draw=False)
    assert "(a) a lower α learning rate ends higher — **not run**" in text
    assert "equal effort — **not run**" in text
    _copy_run(skill / "me_qmix", verdict / "me_qmix,alpha_lr=0.0003", 0.40)
    for value in ("0.003", "0.03"):
        _copy_run(skill / "me_qmix", verdict / f"me_qmix,alpha_lr={value}", 0.25)
    for value in ("0.1", "0.5", "1"):
        _copy_run(skill / "me_qmix", verdict / f"me_qmix,target_entropy={value}", 0.25)
    for alg in paper.TUNING:  # five points are Figure 5's or Figure 6's runs
        for label in paper.TUNING[alg][1:]:
            if label not in paper.TUNING_READS or paper.TUNING_READS[label][0] == "fig5":
                name = paper.TUNING_READS.get(label, ("", label))[1]
                _copy_run(skill / alg, verdict / f"{name},seed=0",
                          0.30 if "eps500k_lr5e-4" in label else 0.25)
    text = paper.generate(tmp_path / "fig", draw=True)
    fig6 = text[text.index("### At the protocol"):text.index("## Tuned with equal effort")]
    assert "| alpha_lr | 0.0003 | 3 | 40.0 [40.0, 40.0] |" in fig6
    assert "| alpha_lr | 0.3 | 3 | 25.0 [25.0, 25.0] |" in fig6
    assert "α lr 3e-4 − 0.3, protocol score +15.0 [+15.0, +15.0]: **reproduced**" in fig6
    assert "0.1 +0.0 [+0.0, +0.0], 0.5 +0.0 [+0.0, +0.0], 1 +0.0 [+0.0, +0.0]: **reproduced**" in fig6
    assert "![fig6a](" in fig6 and (tmp_path / "fig" / "fig6a_protoss_5_vs_5.png").is_file()
    grid = _section(text, "## Tuned with equal effort")
    assert "| qmix | qmix_eps500k_lr5e-4 | 30.0 [30.0, 30.0] (3) |  |" in grid
    assert "| qmix | qmix_eps100k_lr1e-3 | 25.0 [25.0, 25.0] (3) | Figure 5's `qmix_eps_100k` |" in grid
    assert ("| me_qmix | me_qmix_alr3e-3_te0.24 | 25.0 [25.0, 25.0] (3) | Figure 6's "
            "`alpha_lr=0.003` |") in grid
    assert "Best points: QMIX qmix_eps500k_lr5e-4" in grid
    assert "ME-QMIX's best − QMIX's best: -5.0 [-5.0, -5.0]: **reversed**" in grid
    overview = _section(text, "## The claims at a glance")
    assert ("| Figure 6a at the protocol: a lower α learning rate ends higher (protoss, 1M) | "
            "reproduced |") in overview
    assert "| Tuned with equal effort: ME-QMIX's best point above QMIX's best | reversed |" in overview


def test_the_released_code_rows_end_in_a_sentence_that_follows_the_interval(results, tmp_path):
    """Issue 42: once soft_qmix has runs on the three races, the section says in one
    sentence where it stands against ME-QMIX as written, read from the pooled interval."""
    for race in paper.RACES:
        skill = results / "skill" / "runs" / f"smax_{race}_5_vs_5"
        _set_metric(skill / "me_qmix", "test/won", 0.25)
        _copy_run(skill / "me_qmix", results / "verdict" / "runs" / f"smax_{race}_5_vs_5" /
                  "soft_qmix,seed=0", 0.35)
    section = _section(paper.generate(tmp_path / "fig", draw=False), "## The authors' released code")
    assert ("Pooled over the races, soft_qmix − me_qmix is +10.0 [+10.0, +10.0] points: on SMAX at "
            "1M the authors' released variant is above ME-QMIX as the paper writes it") in section


@pytest.mark.parametrize("gain, says", [(0.01, True), (0.08, False)])
def test_the_central_comparison_says_does_not_help_only_when_its_interval_is_within_the_margin(
        results, tmp_path, gain, says):
    """Issue 40: "ME-IGM does not help here" is said in so many words when, and only when,
    the pooled ME-QMIX − QMIX interval lies within ±EQUIVALENCE (the rule of Figure 6b)."""
    for race in paper.RACES:
        skill = results / "skill" / "runs" / f"smax_{race}_5_vs_5"
        _set_metric(skill / "qmix", "test/won", 0.5)
        _set_metric(skill / "me_qmix", "test/won", 0.5 + gain)
    section = _section(paper.generate(tmp_path / "fig", draw=False), "## Does ME-IGM help?")
    assert f"**pooled, each race weighted 1/3** | | | **{100 * gain:+.1f}" in section
    assert ("extension does not help QMIX by 5 points or more" in section) is says


def test_does_not_matter_follows_the_equivalence_rule_first():
    """A difference within ±EQUIVALENCE does not matter even where it excludes 0; one
    that excludes 0 beyond it does; else the seeds cannot tell."""
    e = paper.EQUIVALENCE
    assert paper.insensitive([(0.01, 0.005, 0.02)]) == "reproduced"
    assert paper.insensitive([(0.01, 0.005, 0.02), (0.08, 0.06, 0.1)]) == "not reproduced"
    assert paper.insensitive([(0.0, -2 * e, 2 * e)]) == "not separated"
