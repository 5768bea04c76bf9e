"""``benchmarks/sweep_cost.py``: a run's wall time taken apart and projected."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import TINY

from meigm import config
from meigm.experiments.sweep import load_sweep, select_runs
from meigm.program import make_program

_spec = importlib.util.spec_from_file_location(
    "sweep_cost", Path(__file__).resolve().parent.parent / "benchmarks" / "sweep_cost.py")
sweep_cost = sys.modules["sweep_cost"] = importlib.util.module_from_spec(_spec)  # for its dataclass
_spec.loader.exec_module(sweep_cost)


def test_projection_by_hand():
    # 3 seeds x 1M steps at 10,000 env steps/s = 300 s; 20 evaluations of 0.5 s; compile 40 s
    p = sweep_cost.projection(40.0, 10_000.0, 0.5, 1_000_000, 3, 50_000)
    assert p == {"evaluations": 20, "projected_train_s": 300.0, "projected_wall_s": 350.0}
    # a budget off the grid still ends with an evaluation at t_max: 50, 100, 120
    assert sweep_cost.projection(0.0, 1.0, 1.0, 120, 1, 50)["evaluations"] == 3


def test_programs_take_each_seed_count_and_the_overrides():
    runs = select_runs(load_sweep("skill", "smoke"), ["smax_3m/qmix"]).runs
    progs = sweep_cost.programs(list(runs), [1, 3], {"t_max": 450})
    assert [key for key, _ in progs] == ["smax_3m/qmix seeds=1", "smax_3m/qmix seeds=3"]
    assert [p.cfg.seeds for _, p in progs] == [1, 3]
    assert all(p.cfg.t_max == 450 and p.cfg.alg == "qmix" and p.cfg.env == "smax:3m" for _, p in progs)
    # without seed counts, the preset's own
    assert [p.cfg.seeds for _, p in sweep_cost.programs(list(runs), None, {})] == [2]


@pytest.mark.parametrize("alg", ["qmix", "mappo"])  # a replay learner fills its buffer first
def test_measure_trains_each_leg_and_fills_a_batch_first(alg):
    cfg = config.build(None, [*TINY, "t_max=2000", "test_interval=500", "env_args.steps=4"],
                       alg=alg, env="matrix:table1", seeds=2)
    c = sweep_cost.compile_both(*sweep_cost.lower("tiny", make_program(cfg)))
    r = sweep_cost.measure(c, leg=40, repeats=2)
    assert r["seeds"] == 2 and r["train_env_steps_per_s"] > 0 and r["eval_s"] > 0
    if alg == "qmix":  # 16 episodes of 4 steps before the first timed leg
        assert r["fill_env_steps"] >= 16 * 4
    else:
        assert r["fill_env_steps"] == 0
    assert r["evaluations"] == 4
    assert r["projected_wall_s"] == pytest.approx(
        r["compile_s"] + 2000 * 2 / r["train_env_steps_per_s"] + 4 * r["eval_s"])


def test_no_program_is_read_from_or_written_to_the_persistent_cache(tmp_path):
    """Compile seconds are a figure: inside ``no_persistent_cache`` a program is compiled even
    where the cache holds it, and nothing is written, although this process already used the
    cache (JAX decides once per process); afterwards the cache works again."""
    import jax
    import jax.numpy as jnp
    from jax.experimental.compilation_cache import compilation_cache as cc

    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    cc.reset_cache()
    try:
        jax.jit(lambda x: jnp.sin(x) * 3.25).lower(1.0).compile()  # the cache in use, and written
        written = set(tmp_path.iterdir())
        assert written
        with sweep_cost.no_persistent_cache():
            jax.jit(lambda x: jnp.cos(x) * 7.5).lower(1.0).compile()
        assert set(tmp_path.iterdir()) == written
        jax.jit(lambda x: jnp.tan(x) * 1.5).lower(1.0).compile()
        assert len(set(tmp_path.iterdir())) > len(written)
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        cc.reset_cache()


def test_overrides_may_follow_the_options():
    a = sweep_cost.parser().parse_intermixed_args(
        ["skill", "--only", "smax_3m/qmix", "--leg", "5000", "t_max=30000", "checkpoint_interval=0"])
    assert a.preset == "skill" and a.leg == 5000 and a.only == ["smax_3m/qmix"]
    assert a.overrides == ["t_max=30000", "checkpoint_interval=0"]


def test_vary_packs_the_grid_as_lanes_and_counts_every_lane():
    runs = select_runs(load_sweep("skill", "smoke"), ["smax_3m/qmix"]).runs
    (key, program), = sweep_cost.programs(list(runs), [3], {"t_max": 450},
                                          {"lr": [5e-4, 1e-3], "epsilon_anneal_steps": [100, 200]})
    assert key == "smax_3m/qmix seeds=3 variants=4" and program.lanes == 12
    hyper = program.lane_hyper()
    assert hyper["lr"].tolist() == pytest.approx([5e-4] * 6 + [1e-3] * 6)
    assert hyper["epsilon_anneal_steps"].tolist() == ([100] * 3 + [200] * 3) * 2
    cfg = config.build(None, [*TINY, "t_max=2000", "test_interval=500", "env_args.steps=4"],
                       alg="qmix", env="matrix:table1", seeds=2)
    packed = make_program(cfg, variants=[dataclasses.replace(cfg, lr=0.003)])
    r = sweep_cost.measure(sweep_cost.compile_both(*sweep_cost.lower("tiny", packed)), leg=40, repeats=1)
    assert r["lanes"] == 4 and r["seeds"] == 2
    assert r["projected_train_s"] == pytest.approx(2000 * 4 / r["train_env_steps_per_s"])


def test_vary_refuses_a_field_that_is_not_a_lane(capsys):
    with pytest.raises(SystemExit) as info:
        sys.argv = ["sweep_cost.py", "skill", "--budget", "smoke", "--only", "smax_3m/qmix",
                    "--vary", "hidden_dim=8,16"]
        sweep_cost.main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "hidden_dim=8,16" in err and "a lane field" in err


def test_a_cell_that_cannot_fit_is_a_row_that_says_why_and_a_table_continues(tmp_path, monkeypatch, capsys):
    """Table 2's cost table has 120 cells and takes hours: a cell over the memory check
    is recorded (not compiled), measured cells carry XLA's memory and the 1M/10M
    projections, and a second invocation with the same --json measures nothing again."""
    preset = tmp_path / "tiny.yaml"
    preset.write_text(
        "name: tiny\nseeds: 1\nscenarios: [matrix:table1]\n"
        "algorithms: {qmix: qmix, huge: {alg: qmix, buffer_size: 2000000000}}\n"
        "overrides: {hidden_dim: 16, mixing_embed: 8, hypernet_embed: 16, batch_size: 16,\n"
        "            buffer_size: 64, test_episodes: 8, length_buckets: 1, t_max: 2000,\n"
        "            test_interval: 500, env_args: {steps: 4}}\n")
    out = tmp_path / "cost.json"
    monkeypatch.setattr(sys, "argv", ["sweep_cost.py", str(preset), "--leg", "40", "--repeats", "1",
                                      "--json", str(out)])
    sweep_cost.main()
    rows = json.loads(out.read_text())["rows"]
    huge, fits = rows["matrix_table1/huge seeds=1"], rows["matrix_table1/qmix seeds=1"]
    assert "replay buffers" in huge["refused"] and "compile_s" not in huge
    assert huge["memory_estimate_gb"]["replay buffers"] > 100
    assert fits["chunk_xla_gb"] > 0 and fits["eval_xla_gb"] > 0
    # 1M: 20 evaluations; 10.05M: 201; both on the protocol's 50k grid
    assert fits["wall_10M_h"] * 3600 == pytest.approx(
        fits["compile_s"] + 10_050_000 / fits["train_env_steps_per_s"] + 201 * fits["eval_s"])
    assert fits["wall_1M_h"] < fits["wall_10M_h"]
    if sweep_cost.restart_peak_rss() is not None:  # Linux: the run's own resident peak
        assert 0 < fits["rss_at_start_gb"] <= fits["cell_peak_rss_gb"] <= fits["process_peak_rss_gb"]
    capsys.readouterr()
    sweep_cost.main()  # again: both rows kept, nothing measured
    assert json.loads(out.read_text())["rows"] == rows
    assert "2 runs" in capsys.readouterr().out


def test_render_lists_every_cell_and_grids_the_one_million_step_walls(tmp_path, capsys, monkeypatch):
    """``--render``: one row per run (a refused one says why) and, when the runs are one per
    scenario and label, the 1M wall as a grid with ✗ for a cell that does not fit and –
    for one not measured yet."""
    est = {"training state": 2.0, "replay buffers": 1.5, "roll-out": 0.1, "evaluation": 0.2,
           "update batch": 0.2}
    measured = {"seeds": 1, "compile_s": 31.4, "train_env_steps_per_s": 296.2, "eval_s": 0.6,
                "test_episodes": 128, "chunk_xla_gb": 2.4, "process_peak_rss_gb": 3.3,
                "wall_1M_h": 1.04, "wall_10M_h": 9.51, "memory_estimate_gb": est}
    table = {"preset": "table2", "budget": "paper", "leg": 2000, "repeats": 2, "device": "cpu (cpu)",
             "jax": "0.0", "rows": {
                 "a_5/qmix seeds=1": {"run": "a_5/qmix", **measured},
                 "a_5/fop seeds=1": {"run": "a_5/fop", **measured, "wall_1M_h": 2.26,
                                     "cell_peak_rss_gb": 2.71},
                 "b_20/qmix seeds=1": {"run": "b_20/qmix", "seeds": 1, "refused": "needs 30 GiB",
                                       "memory_estimate_gb": est}}}
    path = tmp_path / "cells.json"
    path.write_text(json.dumps(table))
    text = sweep_cost.render(table)
    assert "| a_5/qmix | 1 | 31 | 296 | 0.60 (128) | 2.5 / 2.4 / 3.3\u2020 | 1.0 | 9.5 |" in text
    assert "| a_5/fop | 1 | 31 | 296 | 0.60 (128) | 2.5 / 2.4 / 2.7 | 2.3 | 9.5 |" in text
    assert "\u2020 the process's peak so far" in text  # a row without its own peak is marked
    assert "| b_20/qmix | 1 | – | – | – | 2.5 / – / – | does not fit: needs 30 GiB | – |" in text
    assert "| scenario | qmix | fop |" in text
    assert "| a_5 | 1.0 | 2.3 |" in text and "| b_20 | ✗ | – |" in text
    monkeypatch.setattr(sys, "argv", ["sweep_cost.py", "--render", str(path)])
    sweep_cost.main()
    assert capsys.readouterr().out.strip() == text
    monkeypatch.setattr(sys, "argv", ["sweep_cost.py", "--render", str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit) as info:
        sweep_cost.main()
    assert info.value.code == 2
    assert "cannot render" in capsys.readouterr().err
