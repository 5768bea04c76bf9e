"""``benchmarks/sweep_cost.py``: a run's wall time taken apart and projected."""

from __future__ import annotations

import dataclasses
import importlib.util
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
