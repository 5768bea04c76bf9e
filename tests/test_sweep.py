"""Sweeps on a local Ray: expansion and validation of presets, a killed run retried,
a finished sweep resumed as a no-op, plots and tables matching the runs' metrics, and
every built-in preset at its smoke budget."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import error_line, metrics_rows

from meigm.errors import ConfigError, MeigmError
from meigm.experiments.cli import main
from meigm.experiments.sweep import builtin_presets, load_sweep

#: Sweep tests train tiny programs whose time is all XLA compilation: LLVM's
#: optimisation level 0 halves it (a smoke SMAX run: 23 s -> 12 s) and changes nothing
#: these tests check.
FAST_COMPILE = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}

TINY_OVERRIDES = {"hidden_dim": 16, "mixing_embed": 8, "hypernet_embed": 16, "opt_hidden": 8,
                  "batch_size": 8, "buffer_size": 32, "test_episodes": 4}


def _preset(tmp_path: Path, **changes) -> Path:
    preset = {
        "name": "tiny", "seeds": 2, "scenarios": ["matrix:table1"],
        "algorithms": {"me_qmix": "me_qmix", "qmix": {"alg": "qmix", "lr": 0.002}},
        "overrides": {**TINY_OVERRIDES, "t_max": 1200, "test_interval": 40},
        "budgets": {"smoke": {"overrides": {"t_max": 200}}},
        **changes,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


# ------------------------------------------------------------- expansion
def test_preset_expands_to_the_grid_with_budget_overrides(tmp_path):
    path = _preset(tmp_path, grid=[{"lr": [0.001, 0.003]}, {"gamma": [0.9]}])
    sweep = load_sweep(path, "laptop")
    assert [r.run_id for r in sweep.runs] == [
        "matrix_table1/me_qmix,lr=0.001", "matrix_table1/me_qmix,lr=0.003",
        "matrix_table1/me_qmix,gamma=0.9", "matrix_table1/qmix,lr=0.001",
        "matrix_table1/qmix,lr=0.003", "matrix_table1/qmix,gamma=0.9",
    ]
    assert all(r.config().t_max == 1200 and r.config().seeds == 2 for r in sweep.runs)
    smoke = load_sweep(path, "smoke")
    assert {r.config().t_max for r in smoke.runs} == {200}
    assert smoke.runs[3].config().lr == 0.001  # the grid wins over the label's own lr


@pytest.mark.parametrize("change, message", [
    ({"algorithms": {"x": "nope"}}, "unknown algorithm 'nope'"),
    ({"overrides": {"t_maxx": 3}}, "t_maxx"),
    ({"colour": "red"}, "unknown key(s) colour; allowed: name"),
    ({"grid": {"lr": 0.1}}, "'grid' must map config keys to non-empty lists"),
    ({"scenarios": []}, "'scenarios' must be a non-empty list"),
])
def test_bad_presets_are_one_line_errors(tmp_path, change, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_sweep(_preset(tmp_path, **change))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_label_given_twice_or_outside_the_sweep_is_refused(tmp_path):
    """Issue 41: a preset with one label twice kept only the last; a label with a path in
    it put its run directory outside the sweep directory."""
    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\nscenarios: [matrix:table1]\nalgorithms:\n  a: qmix\n  a: vdn\n")
    with pytest.raises(ConfigError, match=r"key 'a' appears twice \(lines 4 and 5\)"):
        load_sweep(path)
    for label in ("../../../escape", "a/b", "..", "."):
        with pytest.raises(ConfigError, match=r"run label .* must be one directory name"):
            load_sweep(_preset(tmp_path, algorithms={label: "qmix"}))
    with pytest.raises(ConfigError, match=r"run label 'qmix,wandb_project=a/b' must be one"):
        load_sweep(_preset(tmp_path, algorithms=["qmix"], grid={"wandb_project": ["a/b"]}))


def test_unknown_budget_and_preset_name_the_allowed_values(tmp_path, capfd):
    with pytest.raises(ConfigError, match="unknown budget 'huge'; allowed: smoke, laptop, paper"):
        load_sweep(_preset(tmp_path), "huge")
    assert main(["sweep", "tabel3"]) == 2
    line = error_line(capfd)
    assert "unknown sweep preset 'tabel3'" in line and "table3" in line
    with pytest.raises(MeigmError, match="max_retries must be >= 0"):
        from meigm.experiments.sweep import run_sweep
        run_sweep(load_sweep(_preset(tmp_path)), tmp_path / "o", max_retries=-1)


def test_a_preset_name_beats_a_directory_of_that_name(tmp_path, monkeypatch):
    """`meigm sweep verdict --out verdict` run twice from one directory resumes the preset."""
    from meigm.experiments.sweep import PRESET_DIR, preset_path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "verdict").mkdir()
    assert preset_path("verdict") == PRESET_DIR / "verdict.yaml"
    (tmp_path / "mine").write_text("x")
    assert preset_path("mine") == Path("mine")
    with pytest.raises(MeigmError, match=r"sweep preset not found: gone\.yaml"):
        preset_path("gone.yaml")


@pytest.mark.parametrize("name", builtin_presets())
@pytest.mark.parametrize("budget", ["smoke", "laptop", "paper"])
def test_every_builtin_preset_loads_at_every_budget(name, budget):
    sweep = load_sweep(name, budget)
    assert sweep.runs and len({r.run_id for r in sweep.runs}) == len(sweep.runs)


def test_dry_run_lists_and_runs_nothing(tmp_path, capfd):
    out = tmp_path / "sweep"
    assert main(["sweep", str(_preset(tmp_path)), "--dry-run", "--out", str(out)]) == 0
    text = capfd.readouterr().out
    assert "2 runs, 0 finished, 2 to run" in text and "matrix_table1/qmix" in text
    assert not out.exists()


def test_only_selects_runs_by_pattern_and_a_pattern_matching_nothing_is_an_error(tmp_path, capfd):
    out = tmp_path / "sweep"
    assert main(["sweep", str(_preset(tmp_path)), "--dry-run", "--out", str(out), "--only", "*/qmix"]) == 0
    text = capfd.readouterr().out
    assert "1 runs, 0 finished, 1 to run" in text and "matrix_table1/qmix" in text
    assert "matrix_table1/me_qmix" not in text
    assert main(["sweep", str(_preset(tmp_path)), "--dry-run", "--out", str(out), "--only", "*/qmix",
                 "--only", "matrix_table1/me_*"]) == 0
    assert "2 runs" in capfd.readouterr().out
    assert main(["sweep", str(_preset(tmp_path)), "--dry-run", "--only", "smax_3m/*"]) == 2
    line = error_line(capfd)
    assert "'smax_3m/*' matches no run" in line and "matrix_table1/me_qmix" in line


def test_a_partial_sweep_keeps_the_other_runs_status_entries(tmp_path):
    from meigm.experiments.sweep import _Status, select_runs

    whole = load_sweep(_preset(tmp_path))
    status = _Status(tmp_path, whole)
    status.set("matrix_table1/me_qmix", status="finished", wall_seconds=12.5, attempts=1)
    part = _Status(tmp_path, select_runs(whole, ["*/qmix"]))
    assert part.data["runs"]["matrix_table1/me_qmix"]["wall_seconds"] == 12.5
    assert part.data["runs"]["matrix_table1/qmix"]["status"] == "pending"
    part.write()
    again = _Status(tmp_path, whole)
    assert again.data["runs"]["matrix_table1/me_qmix"]["wall_seconds"] == 12.5


def test_two_drivers_on_disjoint_runs_keep_each_others_progress(tmp_path):
    from meigm.experiments.sweep import _Status, select_runs

    whole = load_sweep(_preset(tmp_path))
    a = _Status(tmp_path, select_runs(whole, ["*/me_qmix"]))
    b = _Status(tmp_path, select_runs(whole, ["*/qmix"]))
    a.set("matrix_table1/me_qmix", status="running")
    b.set("matrix_table1/qmix", status="finished", wall_seconds=3.0)
    a.set("matrix_table1/me_qmix", status="finished", wall_seconds=4.0)  # after b's write
    on_disk = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert on_disk["matrix_table1/qmix"]["status"] == "finished"
    assert on_disk["matrix_table1/qmix"]["wall_seconds"] == 3.0
    assert on_disk["matrix_table1/me_qmix"]["wall_seconds"] == 4.0
    # Each driver's own entries come from its memory, never from the file.
    b.set("matrix_table1/qmix", attempts=2)
    on_disk = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert on_disk["matrix_table1/me_qmix"]["status"] == "finished"
    assert on_disk["matrix_table1/qmix"]["attempts"] == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_a_queued_run_is_marked_running_once_its_task_writes_its_pid_file(tmp_path):
    from meigm.experiments.sweep import _mark_started, _pid_file, _Status

    status = _Status(tmp_path, load_sweep(_preset(tmp_path)))
    ids = ["matrix_table1/me_qmix", "matrix_table1/qmix"]
    for run_id in ids:
        status.set(run_id, status="queued")
    _mark_started(status, ids, tmp_path)
    assert [status.data["runs"][r]["status"] for r in ids] == ["queued", "queued"]
    _pid_file(tmp_path, ids[1]).parent.mkdir(parents=True)
    _pid_file(tmp_path, ids[1]).write_text("123")
    _mark_started(status, ids, tmp_path)
    on_disk = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert on_disk[ids[0]]["status"] == "queued" and "started" not in on_disk[ids[0]]
    assert on_disk[ids[1]]["status"] == "running" and on_disk[ids[1]]["started"].endswith("Z")


# ------------------------------------------------------------- on Ray
def _final_by_seed(run_dir: Path, metric: str) -> dict[int, float]:
    last: dict[int, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        last[rec["seed"]] = rec[metric]
    return last


#: How long a sweep may show no sign of progress before a test gives up on it. Not a
#: budget for the whole sweep: on a loaded machine one compile alone took over 240 s.
STALL_SECONDS = 300.0


def _progress(out: Path) -> tuple:
    """What changes while a sweep works: its files (names, sizes, times) and the CPU time
    of the workers in its pid files (a compile writes nothing for minutes, but burns CPU)."""
    files = []
    for path in out.rglob("*"):
        try:
            st = path.stat()
        except OSError:  # gone between the listing and the stat
            continue
        files.append((str(path), st.st_size, st.st_mtime_ns))
    cpu = 0
    for pid_file in (out / ".pids").rglob("*.pid"):
        try:
            stat = Path(f"/proc/{int(pid_file.read_text())}/stat").read_text()
            cpu += sum(int(x) for x in stat.rsplit(")", 1)[1].split()[11:13])  # utime, stime
        except (OSError, ValueError):
            pass  # no /proc (not Linux), or the worker has ended
    return sorted(files), cpu


def _wait(proc: subprocess.Popen, out: Path, log: Path, done=lambda: False) -> bool:
    """Poll until ``done()`` (True) or the sweep process ends (False); fail once nothing
    has progressed (:func:`_progress`) for ``STALL_SECONDS``."""
    last, seen = _progress(out), time.monotonic()
    while proc.poll() is None:
        if done():
            return True
        time.sleep(0.2)
        now = _progress(out)
        if now != last:
            last, seen = now, time.monotonic()
        elif time.monotonic() - seen > STALL_SECONDS:
            proc.kill()
            proc.wait()
            pytest.fail(f"the sweep made no progress for {STALL_SECONDS:.0f} s:\n{log.read_text()}")
    return False


@pytest.fixture(scope="module")
def killed_sweep(tmp_path_factory):
    """A two-run sweep in a subprocess whose first run's worker is SIGKILLed mid-way. It
    waits on the sweep's progress, not on the clock, so a slow compile on a loaded
    machine does not fail it."""
    tmp = tmp_path_factory.mktemp("sweep")
    overrides = {**TINY_OVERRIDES, "t_max": 480, "test_interval": 40, "checkpoint_interval": 80}
    preset, out, log = _preset(tmp, overrides=overrides), tmp / "out", tmp / "sweep.log"
    # Ray's memory monitor off: on a loaded box it can kill a worker too (seen: a third
    # attempt, OutOfMemoryError, with two training runs beside the suite), and this test
    # counts only the kill it makes itself
    env = {**os.environ, **FAST_COMPILE, "JAX_PLATFORMS": "cpu", "RAY_memory_monitor_refresh_ms": "0",
           "JAX_COMPILATION_CACHE_DIR": os.environ.get("MEIGM_TEST_JAX_CACHE", str(tmp / "cache"))}
    with log.open("w") as sink:  # a file, not a pipe: a full pipe would stall the sweep
        proc = subprocess.Popen(
            [sys.executable, "-m", "meigm.experiments.cli", "sweep", str(preset), "--out", str(out),
             "--num-cpus", "2", "--max-retries", "2"],
            stdout=sink, stderr=subprocess.STDOUT, text=True, env=env)
    victim = "matrix_table1/me_qmix"
    pid_file, metrics = out / ".pids" / f"{victim}.pid", out / victim / "metrics.jsonl"

    def mid_way() -> bool:  # 3 evaluation points and the checkpoint at 80 env steps written
        return pid_file.is_file() and metrics.is_file() and metrics.read_text().count("\n") >= 6

    if not _wait(proc, out, log, mid_way):
        pytest.fail(f"the sweep ended before its first run got mid-way:\n{log.read_text()}")
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    _wait(proc, out, log)
    return out, proc.returncode, log.read_text(), victim


def test_killed_run_is_retried_and_the_sweep_finishes(killed_sweep):
    out, rc, log, victim = killed_sweep
    assert rc == 0, log
    status = json.loads((out / "sweep.json").read_text())["runs"]
    assert status[victim]["status"] == "finished" and status[victim]["attempts"] == 2, status[victim]
    assert len(status[victim]["errors"]) == 1
    assert status["matrix_table1/qmix"] == {**status["matrix_table1/qmix"], "status": "finished",
                                             "attempts": 1, "errors": []}
    assert "retry 1/2: " + victim in log
    # the retry resumed the killed attempt from its checkpoint
    resumed = json.loads((out / victim / "results.json").read_text())["resumed_from"]
    assert re.search(r"checkpoints/step_\d+\.safetensors$", resumed), resumed
    for run_id in status:  # no evaluation point twice, whatever the kill left in metrics.jsonl
        recs = [json.loads(x) for x in (out / run_id / "metrics.jsonl").open()]
        for seed in (0, 1):
            episodes = [r["episodes"] for r in recs if r["seed"] == seed]
            assert episodes == sorted(set(episodes))
        assert (out / run_id / "results.json").is_file()
        assert (out / run_id / "label.txt").read_text().strip() == run_id.split("/")[1]


def test_rerunning_a_finished_sweep_does_nothing(killed_sweep, capfd):
    out, _, _, _ = killed_sweep
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "sweep.json"}
    preset = out.parent / "tiny.yaml"
    assert main(["sweep", str(preset), "--out", str(out)]) == 0
    assert "nothing to do" in capfd.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "sweep.json"}
    assert after == before


def test_plot_and_table_match_the_runs_metrics(killed_sweep, tmp_path):
    out, _, _, _ = killed_sweep
    assert main(["plot", str(out), "--out", str(tmp_path)]) == 0
    assert main(["table", str(out), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "matrix_table1_test_return.png").is_file()
    assert (tmp_path / "matrix_table1_test_return.pdf").is_file()
    table = json.loads((tmp_path / "table.json").read_text())
    text = json.dumps(table)
    for label in ("me_qmix", "qmix"):
        finals = _final_by_seed(out / "matrix_table1" / label, "test/return")
        mean = sum(finals.values()) / len(finals)
        assert f"{mean:.2f}" in (tmp_path / "table.md").read_text()
        for v in finals.values():
            assert repr(v)[:8] in text or f"{v}" in text


# ------------------------------------------------------------- every preset
@pytest.mark.parametrize("budget", ["smoke", "laptop", "paper"])
def test_every_builtin_preset_expands_to_valid_configs(budget):
    for name in builtin_presets():
        sweep = load_sweep(name, budget)
        assert sweep.runs, name
        for run in sweep.runs:
            run.config()  # every run's config validates


@pytest.mark.slow  # ~10 min on 2 cores: one compiled program per preset run
def test_every_builtin_preset_runs_at_smoke_budget(tmp_path):
    """All presets at their smoke budget in one local Ray; identical programs (the same
    algorithm and scenario in several presets) compile once through JAX's cache."""
    import ray

    from meigm.experiments.sweep import run_sweep

    cache = os.environ.get("MEIGM_TEST_JAX_CACHE") or "/tmp/meigm-test-jax-cache"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {**FAST_COMPILE, "JAX_PLATFORMS": "cpu",
                                       "JAX_COMPILATION_CACHE_DIR": cache,
                                       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}})
    try:
        for name in builtin_presets():
            status = run_sweep(load_sweep(name, "smoke"), tmp_path / name, max_retries=0,
                               echo=lambda _: None)
            failed = {k: v["errors"] for k, v in status["runs"].items() if v["status"] != "finished"}
            assert not failed, (name, failed)
            for run_id in status["runs"]:
                assert (tmp_path / name / run_id / "results.json").is_file()
    finally:
        ray.shutdown()


# ------------------------------------------------------------- resuming a run directory
def test_an_unfinished_run_resumes_under_its_recorded_config_unless_the_sweep_changed_it(tmp_path):
    """A run stopped part-way (here: its results.json removed, checkpoints kept) resumes
    from its own config.yaml even where a default it recorded no longer matches today's
    (a changed default must not throw the progress away or change the program under it);
    a value the sweep itself sets that differs from the record starts the run afresh."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from meigm.experiments.sweep import train_task

    values = {**TINY_OVERRIDES, "alg": "qmix", "env": "matrix:table1", "seeds": 2, "t_max": 240,
              "test_interval": 40, "checkpoint_interval": 80, "keep_checkpoints": 3}
    run, pids = tmp_path / "run", tmp_path / "pids" / "run.pid"
    train_task([values], [str(run)], ["qmix"], [str(pids)])
    full = metrics_rows(run)

    def stop_part_way(value: float = 0.123, edit_checkpoints: bool = True) -> None:
        """results.json gone, and the run recorded with a default this sweep does not set at
        another value than today's (in its config.yaml and, as a real run records it, in
        every checkpoint's config; without ``edit_checkpoints``: a config.yaml edited by
        hand since, which the checkpoints contradict)."""
        (run / "results.json").unlink()
        record = yaml.safe_load((run / "config.yaml").read_text())
        record["hasac_alpha_lr"] = value
        (run / "config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
        for path in (run / "checkpoints").glob("*.safetensors") if edit_checkpoints else ():
            with safe_open(str(path), framework="numpy") as f:
                meta = dict(f.metadata())
            meta["config"] = json.dumps({**json.loads(meta["config"]), "hasac_alpha_lr": value})
            save_file(load_file(str(path)), str(path), metadata=meta)

    stop_part_way()
    train_task([values], [str(run)], ["qmix"], [str(pids)])
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["hasac_alpha_lr"] == 0.123  # resumed under its record, not cleared
    assert metrics_rows(run) == full  # exact continuation (the wall clock aside)

    # issue 41: a config.yaml edited by hand since its checkpoints is neither resumed on the
    # new value nor cleared: the task fails (not retried), and the run is left as it was
    stop_part_way(0.5, edit_checkpoints=False)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(MeigmError, match=r"no longer matches checkpoint step_160\.safetensors: "
                                         r"hasac_alpha_lr \(0\.5 now, 0\.123 in the checkpoint\)"):
        train_task([values], [str(run)], ["qmix"], [str(pids)])
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before

    train_task([{**values, "lr": 0.002}], [str(run)], ["qmix"], [str(pids)])  # the preset was edited
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["lr"] == 0.002 and record["hasac_alpha_lr"] != 0.123  # started afresh


# ------------------------------------------------------------- packing (lanes)
def test_runs_pack_only_with_runs_that_differ_in_lane_fields(tmp_path):
    from meigm.experiments.sweep import packs

    path = _preset(tmp_path, grid={"lr": [0.001, 0.003], "seed": [0, 5], "hidden_dim": [16, 8]})
    runs = list(load_sweep(path, "laptop").runs)  # 2 algorithms x 8 points, 2 seeds each
    groups = packs(runs, lanes=8)
    for group in groups:
        cfgs = [r.config() for r in group]
        assert len({(c.alg, c.hidden_dim) for c in cfgs}) == 1  # only lane fields and seed differ
        assert len(group) * cfgs[0].seeds <= 8
    assert sorted(r.run_id for g in groups for r in g) == sorted(r.run_id for r in runs)
    assert [len(g) for g in groups] == [4, 4, 4, 4]
    assert [len(g) for g in packs(runs, lanes=1)] == [1] * 16
    assert [len(g) for g in packs(runs, lanes=3)] == [1] * 16  # two 2-seed runs need 4 lanes


def test_by_default_a_cpu_sweep_packs_to_keep_every_worker_busy_within_memory(tmp_path):
    """Lanes cost what their work costs alone on the CPU (benchmarks/README.md), so the
    default packs — up to the lanes that give every worker a program, and no more than a
    worker's share of memory holds."""
    from meigm.experiments.sweep import BASE_RUN_MEMORY, default_lanes, run_memory_bytes

    path = _preset(tmp_path, algorithms={"qmix": "qmix"}, grid={"lr": [0.001, 0.003, 0.01], "seed": [0, 5]})
    runs = list(load_sweep(path, "laptop").runs)  # 6 runs of 2 seeds: 12 lanes
    plenty = 10**12
    assert default_lanes(runs, workers=2, available=plenty) == 6
    assert default_lanes(runs, workers=12, available=plenty) == 1
    assert default_lanes(runs, workers=1, available=plenty) == 12
    assert default_lanes([], workers=2) == 1
    per_lane = (run_memory_bytes(runs[0]) - BASE_RUN_MEMORY) / 2
    # room for three lanes per worker beside the allowance, at 80% of what is available
    tight = int(2 * (BASE_RUN_MEMORY + 3.5 * per_lane) / 0.8)
    assert default_lanes(runs, workers=2, available=tight) == 3
    assert default_lanes(runs, workers=2, available=1) == 1  # never below one lane


@pytest.mark.slow  # two sweeps, each starting Ray: CI time
def test_a_packed_sweep_writes_the_run_directories_of_an_unpacked_one(tmp_path, monkeypatch):
    """Four runs (lr x seed) trained as one packed program write, run by run, the rows,
    results and checkpoints the same runs write as four programs."""
    from meigm.experiments.sweep import run_sweep

    for k, v in FAST_COMPILE.items():
        monkeypatch.setenv(k, v)
    path = _preset(tmp_path, algorithms={"qmix": "qmix"}, grid={"lr": [0.001, 0.003], "seed": [0, 7]})
    sweep = load_sweep(path, "smoke")
    quiet = {"max_retries": 0, "num_cpus": 1, "echo": lambda _: None}
    packed = run_sweep(sweep, tmp_path / "packed", lanes=8, **quiet)
    single = run_sweep(sweep, tmp_path / "single", lanes=1, **quiet)
    assert {v["status"] for v in packed["runs"].values()} == {"finished"}
    assert {v["status"] for v in single["runs"].values()} == {"finished"}
    for run in sweep.runs:
        a, b = tmp_path / "packed" / run.run_id, tmp_path / "single" / run.run_id
        assert metrics_rows(a) == metrics_rows(b)
        assert (a / "config.yaml").read_text() == (b / "config.yaml").read_text()
        assert (a / "label.txt").read_text() == (b / "label.txt").read_text()
        assert json.loads((a / "results.json").read_text())["packed"] == {"variants": 4, "lanes": 8}
        assert (a / "checkpoints" / "final.safetensors").is_file()
