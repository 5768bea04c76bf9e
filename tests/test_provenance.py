"""What a run records of what produced it (meigm.provenance, issue 41 item 8)."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

from meigm import provenance as prov

ROOT = Path(__file__).resolve().parent.parent


def test_provenance_names_the_commit_the_libraries_and_the_device():
    p = prov.provenance()
    json.dumps(p)  # serialisable as it is written into results.json and checkpoints
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    if head:
        assert p["git"]["commit"] == head and isinstance(p["git"]["dirty"], bool)
    import jax
    import jaxmarl  # noqa: F401

    assert p["packages"]["jax"] == jax.__version__
    assert p["packages"]["jaxmarl"] is not None
    assert p["device"]["backend"] == jax.default_backend()
    line = prov.describe(p)
    assert "\n" not in line and f"jax {jax.__version__}" in line and p["python"] in line


def test_a_run_recorded_before_provenance_says_so():
    assert "not recorded" in prov.describe(None)


def test_constraints_name_every_pin_the_environment_misses(tmp_path):
    import numpy

    f = tmp_path / "c.txt"
    f.write_text(f"# comment\nnumpy=={numpy.__version__}\nnumpy==0.0.1  # wrong\n"
                 "surely-not-a-package==1.0\nscipy>=1\n")
    problems = prov.check_constraints(f)
    assert problems == ["numpy: pinned 0.0.1, installed " + numpy.__version__,
                        "surely-not-a-package: pinned 1.0, installed nothing",
                        f"{f}: 'scipy>=1' is not a name==version pin"]
    assert prov.main(["--check", str(f)]) == 1
    assert prov.main(["--check", str(tmp_path / "missing.txt")]) == 2


def test_the_committed_constraints_pin_the_recorded_libraries():
    pins = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert set(prov.PACKAGES) - {"meigm"} <= pins


def test_a_run_records_its_provenance_and_wall_time_in_every_leg(tmp_path, capsys):
    """provenance.json gets a leg per start and resume, results.json and every checkpoint
    the provenance too; metrics rows carry wall seconds that keep rising across a resume;
    ``meigm plot --x wall_seconds`` draws them and ``meigm eval`` prints the provenance."""
    import shutil

    from safetensors import safe_open

    from meigm import config
    from meigm.experiments.cli import main
    from meigm.experiments.run import train_run

    out = tmp_path / "run"
    cfg = config.build(None, ["t_max=600", "test_interval=200", "checkpoint_interval=200",
                              "test_episodes=2", "batch_size=8", "buffer_size=16", "hidden_dim=8"],
                       alg="qmix", env="matrix:table1", seeds=2)
    train_run(cfg, out, progress=False, echo=lambda _: None)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    walls = [r["wall_seconds"] for r in rows if r["seed"] == 0]
    assert len(walls) >= 3 and all(b >= a > 0 for a, b in itertools.pairwise(walls))
    results = json.loads((out / "results.json").read_text())
    assert results["provenance"]["packages"]["jax"] and results["provenance"]["device"]["backend"]
    legs = json.loads((out / "provenance.json").read_text())
    assert len(legs) == 1 and legs[0]["resumed_from"] is None and legs[0]["t_env"] == [0, 0]
    ckpts = sorted((out / "checkpoints").glob("*.safetensors"))
    assert ckpts
    for ckpt in ckpts:
        with safe_open(str(ckpt), "np") as f:
            meta = json.loads(f.metadata()["provenance"])
        assert meta["packages"] == results["provenance"]["packages"]

    # resume: a finished run made unfinished again continues its wall clock
    (out / "results.json").unlink()
    (out / "checkpoints" / "final.safetensors").unlink()
    rows_before = len(rows)
    kept = sorted((out / "checkpoints").glob("step_*.safetensors"))
    assert kept
    train_run(config.build(out / "config.yaml"), out, progress=False, echo=lambda _: None,
              resume=True)
    legs = json.loads((out / "provenance.json").read_text())
    assert len(legs) == 2 and legs[1]["resumed_from"] == kept[-1].name
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == rows_before
    walls = [r["wall_seconds"] for r in rows if r["seed"] == 0]
    assert all(b >= a for a, b in itertools.pairwise(walls))

    assert main(["plot", str(out), "--x", "wall_seconds", "--out", str(tmp_path / "plots"),
                 "--metric", "test/return"]) == 0
    assert any(p.suffix == ".png" for p in (tmp_path / "plots").iterdir())
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trained with meigm" in printed and "evaluated with meigm" in printed
    shutil.rmtree(out)
