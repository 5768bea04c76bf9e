"""The temperature report (benchmarks/temperature.py), on hand-made runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from meigm.errors import MeigmError

_spec = importlib.util.spec_from_file_location(
    "temperature_report", Path(__file__).resolve().parent.parent / "benchmarks" / "temperature.py")
temperature = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(temperature)


def _run(root: Path, name: str, alpha_init: float, alpha_lr: float, points: int,
         alg: str = "me_qmix") -> Path:
    """Seed s at evaluation i (t_env = 100 i + s, i = 1..points): entropy 0.1 i + s,
    α 0.01 i, return i + s, won 0.1 i."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"alg": alg, "env": "smax:x", "alpha_init": alpha_init,
                                                   "alpha_lr": alpha_lr, "t_max": 100 * points}))
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"seed": s, "t_env": 100 * i + s, "train/entropy": 0.1 * i + s,
                    "train/target_entropy": 0.24, "train/alpha": 0.01 * i, "test/return": i + s,
                    "test/won": 0.1 * i}) + "\n"
        for i in range(1, points + 1) for s in range(2)))
    return d


def test_rows_hold_hand_computed_per_seed_figures_cut_at_the_budget(tmp_path):
    _run(tmp_path / "runs", "short", 0.1, 0.3, points=3)
    _run(tmp_path / "runs", "long", 0.01, 0.3, points=10)
    rows = temperature.report([tmp_path / "runs"], tmp_path / "out", max_steps=300, early=150)
    short, long_ = sorted(rows, key=lambda r: r["alpha_init"])[::-1]
    assert long_["label"] == "me_qmix α₀=0.01 alpha_lr=0.3"
    # The long run read at 300: its points 100, 200, 300 (seed 1: 101, 201, 301 — the
    # evaluation "at" 300 is the first one at or after it), as the short run's.
    for row in (short, long_):
        assert row["t_env"] == [300, 301]
        assert row["entropy_early"] == pytest.approx([0.2, 1.2])  # the point at 150 is i = 2
        assert row["entropy_final"] == pytest.approx([0.3, 1.3])
        assert row["alpha_final"] == pytest.approx([0.03, 0.03])
        assert row["return_last3"] == pytest.approx([2.0, 3.0])  # mean of i + s over i = 1..3
        assert row["won_last3"] == pytest.approx([0.2, 0.2])
        assert row["won_final"] == pytest.approx([0.3, 0.3])
        assert row["won_final_ci95"] == pytest.approx([0.3, 0.3])
    md = (tmp_path / "out" / "table.md").read_text()
    assert ("| 0.20 / 1.20 | 0.30 / 1.30 | 0.0300 / 0.0300 | 2.00 / 3.00 | 20.0 / 20.0% | "
            "**30%** [30%, 30%] |") in md
    assert (tmp_path / "out" / "smax_x_train_entropy.png").is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == ["long", "short"]
    assert (tmp_path / "out" / "runs" / "long" / "label.txt").read_text() == long_["label"]


def test_only_me_igm_runs_of_one_scenario_and_a_positive_budget(tmp_path, capsys):
    _run(tmp_path / "a", "q", 0.01, 0.3, points=2, alg="qmix")
    with pytest.raises(MeigmError, match="no ME-IGM run"):
        temperature.report([tmp_path / "a"], tmp_path / "out", None, 100)
    assert temperature.main([str(tmp_path / "a"), "--out", str(tmp_path / "o"), "--max-steps", "-5"]) == 2
    assert "--max-steps must be a positive number of env steps, got -5" in capsys.readouterr().err
