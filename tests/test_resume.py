"""Runs that survive: exact resume after SIGKILL, atomic checksummed checkpoints,
divergence guards, safe loading and resource limits."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import error_line, metrics_rows

from meigm import config as config_mod
from meigm.config import Config
from meigm.errors import MeigmError
from meigm.experiments import checkpoint as ckpt
from meigm.experiments.logging import without_clock
from meigm.experiments.run import memory_check, train_run

REPO = Path(__file__).resolve().parents[1]

#: A run whose checkpoints take long enough to write (2 seeds x 512 SMAX episodes, ~120 MB)
#: that a kill can land inside one, and short enough to run five times.
KILL_ARGS = [
    "--alg", "me_qmix", "--env", "smax:3m", "--seeds", "2", "--no-progress",
    "t_max=3000", "test_interval=200", "checkpoint_interval=400", "keep_checkpoints=2",
    "n_envs=2", "batch_size=8", "buffer_size=512", "test_episodes=2", "hidden_dim=16",
    "mixing_embed=8", "hypernet_embed=16", "opt_hidden=8",
]


def _env() -> dict[str, str]:
    """Subprocesses share the session's compile cache (so each restart compiles nothing)
    and run on the CPU."""
    import tempfile

    cache = os.environ.get("MEIGM_TEST_JAX_CACHE") or os.path.join(
        tempfile.gettempdir(), "meigm-test-jax-cache")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _meigm(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "meigm.experiments.cli", *args], cwd=REPO,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    t0 = time.monotonic()
    while proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("run neither finished nor reached the kill point")
        time.sleep(0.001)
    return False


def _records(run_dir: Path) -> list[dict]:
    return metrics_rows(run_dir)


def test_sigkilled_run_resumes_to_the_uninterrupted_metrics(tmp_path):
    """Three SIGKILLs — after random progress, inside a checkpoint write, and again at
    random — each followed by ``meigm train --resume``: the final metrics equal an
    uninterrupted run's, number for number."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    proc = _meigm("train", "--out", str(ref), *KILL_ARGS)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out

    rng = random.Random(1234)
    metrics = cut / "metrics.jsonl"
    ckdir = cut / "checkpoints"

    def writing_checkpoint() -> bool:
        return ckdir.is_dir() and any(p.name.endswith(".tmp") for p in ckdir.iterdir())

    def after_progress(points: int, extra: float):
        deadline: list[float] = []

        def ready() -> bool:
            if _lines(metrics) < points * 2:
                return False
            if not deadline:
                deadline.append(time.monotonic() + extra)
            return time.monotonic() >= deadline[0]
        return ready

    kill_points = [after_progress(rng.randint(2, 4), rng.uniform(0, 0.3)),
                   writing_checkpoint,
                   after_progress(rng.randint(9, 11), rng.uniform(0, 0.3))]
    proc = _meigm("train", "--out", str(cut), *KILL_ARGS)
    kills, resumed_from, writes_interrupted = 0, [], [False]
    for ready in kill_points:
        assert _kill_when(proc, ready), "the run finished before it could be killed"
        kills += 1
        if ready is writing_checkpoint:
            writes_interrupted[0] = writing_checkpoint()
        left = [p.name for p in ckdir.iterdir()] if ckdir.is_dir() else []
        # never a half-written checkpoint under a real name: each one loads
        for name in left:
            if name.endswith(".safetensors"):
                ckpt.read_metadata(ckdir / name)
        proc = _meigm("train", "--resume", str(cut), "--no-progress")
        resumed_from.append(left)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert kills == 3
    assert "resuming" in out
    assert _records(cut) == _records(ref)
    final_ref = json.loads((ref / "results.json").read_text())["final"]
    assert json.loads((cut / "results.json").read_text())["final"] == final_ref
    # the kill inside a write left only a temporary file, which the resume removed
    if not writes_interrupted[0]:  # the rename won the ~1 ms race against the kill (rare)
        import warnings

        warnings.warn("the write-triggered kill landed just after the checkpoint's rename",
                      stacklevel=1)
    assert not any(p.name.endswith(".tmp") for p in ckdir.iterdir())
    assert len([p for p in ckdir.iterdir() if p.name.startswith("step_")]) <= 2  # keep K


# ----------------------------------------------------------------- in-process helpers

TINY = dict(hidden_dim=16, mixing_embed=8, hypernet_embed=16, opt_hidden=8, batch_size=8,
            buffer_size=32, test_episodes=4, n_envs=4)


def _cfg(**kw) -> Config:
    base = dict(alg="me_qmix", env="matrix:table1", seeds=2, t_max=400, test_interval=40,
                checkpoint_interval=80, **TINY)
    base.update(kw)
    return Config(**base)


def _quiet(msg: str) -> None:
    pass


def test_resume_in_process_matches_and_tolerates_corrupt_checkpoints(tmp_path):
    """Stop a run after 3 checkpoints (by deleting what came after), corrupt the newest
    (truncated) and the next (one flipped bit): resume warns about both by name, uses
    the third, and ends with the uninterrupted run's metrics."""
    cfg = _cfg(keep_checkpoints=5)
    train_run(cfg, tmp_path / "ref", progress=False, echo=_quiet)
    run = tmp_path / "run"
    train_run(cfg, run, progress=False, echo=_quiet)
    ref_records = _records(tmp_path / "ref")
    # pretend the run died after the 4th interval checkpoint
    (run / "results.json").unlink()
    (run / "checkpoints" / "final.safetensors").unlink()
    steps = ckpt.list_checkpoints(run)
    assert len(steps) == 4  # 80, 160, 240, 320
    newest, second = steps[-1], steps[-2]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # truncated
    data = bytearray(second.read_bytes())
    data[-5] ^= 0x10  # one bit in the last tensor's data
    second.write_bytes(bytes(data))
    warnings: list[str] = []
    results = train_run(Config(**config_mod.load_yaml(run / "config.yaml", what="cfg")), run,
                        progress=False, echo=warnings.append, resume=True)
    skipped = [w for w in warnings if w.startswith("warning: skipping checkpoint")]
    assert len(skipped) == 2
    assert newest.name in skipped[0] and second.name in skipped[1]
    assert "checksum" in skipped[1]
    assert results["resumed_from"].endswith(steps[-3].name)
    assert _records(run) == ref_records
    # speed and wall time of a resumed run: the rate counts only this leg's env steps, and
    # the total adds the wall time the restored checkpoint recorded for the earlier process
    before = ckpt.read_metadata(steps[-3])
    leg_steps = sum(results["t_env"]) - sum(before["t_env"])
    assert 0 < leg_steps < sum(results["t_env"])
    assert results["env_steps_per_second"] == pytest.approx(leg_steps / results["wall_seconds"], rel=0.01)
    assert before["run"]["wall_seconds"] > 0
    assert results["total_wall_seconds"] == pytest.approx(
        before["run"]["wall_seconds"] + results["wall_seconds"], abs=0.002)
    fresh = json.loads((tmp_path / "ref" / "results.json").read_text())
    assert fresh["total_wall_seconds"] == fresh["wall_seconds"]


def _poison(monkeypatch, at_call: int, seed_index: int, key: str) -> None:
    """Make the compiled chunk's output non-finite for one seed, once, on the host: in
    the training metric ``key``, or in the parameters for ``key='parameters'``."""
    import meigm.experiments.run as run_mod

    real_compiled = run_mod.compiled

    def compiled(trainer, donate=False):
        run, evaluate = real_compiled(trainer, donate)
        calls = {"n": 0}

        def poisoned_run(state, t_target):
            state, metrics = run(state, t_target)
            calls["n"] += 1
            if calls["n"] == at_call:
                metrics = dict(jax.device_get(metrics))
                if key == "parameters":
                    fc1 = state.learner.params["agent"]["params"]["fc1"]["kernel"]
                    fc1 = fc1.at[seed_index, 0, 0].set(np.nan)
                    params = jax.tree.map(lambda x: x, state.learner.params)
                    params["agent"]["params"]["fc1"]["kernel"] = fc1
                    state = state.replace(learner=state.learner.replace(params=params))
                    flags = np.array(metrics["finite_params"])
                    flags[seed_index] = False
                    metrics["finite_params"] = flags
                else:
                    values = np.array(metrics[key])
                    values[seed_index] = np.nan
                    metrics[key] = values
            return state, metrics

        return poisoned_run, evaluate

    monkeypatch.setattr(run_mod, "compiled", compiled)


def test_injected_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _poison(monkeypatch, at_call=4, seed_index=1, key="parameters")  # env steps 120 -> 160
    with pytest.raises(MeigmError) as info:
        train_run(_cfg(), tmp_path / "stop", progress=False, echo=_quiet)
    msg = str(info.value)
    assert "non-finite parameters at env step 160 of seed 1" in msg
    assert "last good checkpoint is" in msg and "step_80.safetensors" in msg
    kept = ckpt.list_checkpoints(tmp_path / "stop")
    assert [p.name for p in kept] == ["step_80.safetensors"]
    assert ckpt.read_metadata(kept[0])["t_env"] == [80, 80]
    assert not (tmp_path / "stop" / "results.json").exists()


def test_mask_mode_flags_only_the_diverged_seed(tmp_path, monkeypatch):
    _poison(monkeypatch, at_call=3, seed_index=1, key="train/loss_q")  # env steps 80 -> 120
    echoed: list[str] = []
    results = train_run(_cfg(on_divergence="mask"), tmp_path / "mask", progress=False,
                        echo=echoed.append)
    assert results["diverged"] == {"1": "train/loss_q at env step 120 of seed 1"}
    assert any("seed 1" in e and "frozen" in e for e in echoed)
    assert results["t_env"] == [400, 80]  # seed 0 finished; seed 1 frozen at its last good state
    recs = _records(tmp_path / "mask")
    seed1 = [(r["t_env"], r.get("diverged", False)) for r in recs if r["seed"] == 1]
    assert seed1 == [(40, False), (80, False)] + [(80, True)] * 8
    assert not any(r.get("diverged") for r in recs if r["seed"] == 0)
    assert [r["t_env"] for r in recs if r["seed"] == 0] == list(range(40, 401, 40))


# ----------------------------------------------------------------- loading and limits

def test_mismatched_config_and_other_version_are_clear_errors(tmp_path, monkeypatch):
    cfg = _cfg(t_max=100)
    train_run(cfg, tmp_path / "a", progress=False, echo=_quiet)
    final = tmp_path / "a" / "checkpoints" / "final.safetensors"
    from meigm.program import make_program, seed_keys

    other = _cfg(t_max=100, hidden_dim=32).resolve(1000, {})
    trainer = make_program(other).trainer
    template = jax.eval_shape(jax.vmap(trainer.init), seed_keys(other)).learner
    with pytest.raises(MeigmError, match=r"does not match this config: tensor .* is float32\[2, "):
        ckpt.load_checkpoint(final, template)
    with pytest.raises(MeigmError, match=r"holds no replay buffer .* cannot be resumed from"):
        ckpt.load_train_state(final, jax.eval_shape(jax.vmap(trainer.init), seed_keys(other)))
    import meigm

    monkeypatch.setattr(meigm, "__version__", "9.9.9")
    with pytest.raises(MeigmError, match=r"written by meigm 0\.1\.0, this is meigm 9\.9\.9"):
        ckpt.read_metadata(final)


def test_resume_cli_errors(tmp_path, capfd):
    from conftest import error_line

    from meigm.experiments.cli import main

    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in error_line(capfd)
    cfg = _cfg(t_max=80)
    train_run(cfg, tmp_path / "done", progress=False, echo=_quiet)
    assert main(["train", "--resume", str(tmp_path / "done")]) == 2
    assert "has finished" in error_line(capfd)
    assert main(["train", "--resume", str(tmp_path / "done"), "lr=0.1"]) == 2
    assert "--resume takes no other options (got lr=0.1)" in error_line(capfd)


def test_no_loader_in_the_project_uses_pickle():
    """Checkpoints (safetensors), exported policies (npz without pickle) and configs (safe
    YAML) load without executing code."""
    offenders = []
    for path in sorted((REPO / "meigm").rglob("*.py")):
        text = path.read_text()
        for bad in ("import pickle", "cloudpickle", "allow_pickle=True", "yaml.load(",
                    "yaml.unsafe_load", "torch.load", "dill"):
            if bad in text:
                offenders.append(f"{path.relative_to(REPO)}: {bad}")
        if "np.load(" in text and "allow_pickle=False" not in text:
            offenders.append(f"{path.relative_to(REPO)}: np.load without allow_pickle=False")
    assert not offenders, offenders


def test_a_buffer_that_does_not_fit_is_refused_before_allocation():
    from meigm.program import make_program

    cfg = Config(env="smax:protoss_5_vs_5", seeds=3, buffer_size=5000)
    program = make_program(cfg)
    with pytest.raises(MeigmError) as info:
        memory_check(program, available=4 * 2**30)
    msg = str(info.value)
    assert "need 4.4 GiB (3 seeds x 5000 episodes x 0.30 MiB) and the rest of the run" in msg
    assert "only 4.0 GiB" in msg and "seeds=2" in msg
    memory_check(make_program(Config(env="smax:protoss_5_vs_5", seeds=2, buffer_size=5000)),
                 available=4 * 2**30)  # the suggested seed count fits
    # the suggested buffer fits beside the rest of the run
    fit = int(re.search(r"buffer_size=(\d+)", msg).group(1))
    memory_check(make_program(Config(env="smax:protoss_5_vs_5", seeds=3, buffer_size=fit)),
                 available=4 * 2**30)
    with pytest.raises(MeigmError):
        memory_check(make_program(Config(env="smax:protoss_5_vs_5", seeds=3, buffer_size=fit + 50)),
                     available=4 * 2**30)
    memory_check(program, available=64 * 2**30)  # fits: no error

    # issue 16: a small episode is shown in a unit that shows it, not as "0.00 MiB"
    cfg = Config(env="matrix:table1", seeds=2, buffer_size=10**8)
    with pytest.raises(MeigmError) as info:
        memory_check(make_program(cfg), available=2**30)
    assert "0.00 MiB" not in str(info.value)
    assert re.search(r"2 seeds x 100000000 episodes x \d+ B\)", str(info.value)), str(info.value)


def test_a_twenty_unit_race_fits_this_machine_at_half_width():
    """Issue 44: the paper's 5,000-episode buffer of a 20-unit race is 22 GiB of float32,
    over 80% of this 24 GiB machine; the refusal names ``replay_dtype=float16``, which
    stores the same episodes in half the bytes, and that run passes the check."""
    from meigm.program import make_program

    box = 23 * 2**30  # what this machine reports available when it is idle
    cfg = Config(env="smax:protoss_20_vs_20", alg="qmix", buffer_size=5000, test_episodes=128)
    with pytest.raises(MeigmError) as info:
        memory_check(make_program(cfg), available=box)
    assert "use replay_dtype=float16 (10.45 GiB, the same episodes) or buffer_size=" in str(info.value)
    memory_check(make_program(dataclasses.replace(cfg, replay_dtype="float16")), available=box)


@pytest.mark.parametrize(("overrides", "env", "part", "knob"), [
    (["hidden_dim=100000"], "matrix:table1", "training state", "hidden_dim"),
    (["--alg", "mappo", "n_envs=100000", "buffer_size=100000"], "smax:3m", "update batch", "n_envs"),
    (["test_episodes=100000000"], "matrix:table1", "evaluation", "test_episodes"),
    (["buffer_size=1000000000"], "matrix:table1", "replay buffers", "buffer_size"),
])
def test_sizes_that_cannot_fit_are_refused_before_compiling(overrides, env, part, knob, tmp_path,
                                                          capfd, monkeypatch):
    """Issue 41: these used to hang in allocation or die in an XLA traceback after minutes
    of compiling. Now: one line naming the largest part and the setting, exit 2, and no
    run directory. The box is given 16 GiB, as a laptop has."""
    from meigm.experiments import run as run_mod
    from meigm.experiments.cli import main

    monkeypatch.setattr(run_mod, "available_memory", lambda: 16 * 2**30)
    compiled = []
    monkeypatch.setattr(run_mod, "_train_program", lambda *a, **k: compiled.append(a))
    out = tmp_path / "run"
    assert main(["train", "--env", env, *overrides, "--out", str(out)]) == 2
    line = error_line(capfd)
    assert part.split()[0] in line and knob.split("_")[0] in line and "only 16.0" in line, line
    assert not compiled and not out.exists()


def test_full_disk_while_checkpointing_keeps_the_last_good_one(tmp_path, monkeypatch):
    import safetensors.numpy

    real = safetensors.numpy.save_file
    calls = {"n": 0}

    def flaky(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: the disk fills up mid-write
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.numpy, "save_file", flaky)
    echoed: list[str] = []
    results = train_run(_cfg(), tmp_path / "r", progress=False, echo=echoed.append)
    warn = [e for e in echoed if "No space left on device" in e]
    assert len(warn) == 1 and "step_160.safetensors" in warn[0] and "previous checkpoint stands" in warn[0]
    names = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert "step_160.safetensors" not in names and not any(n.endswith(".tmp") for n in names)
    assert results["t_env"] == [400, 400]


def test_checkpoints_of_the_first_format_still_load(tmp_path):
    """meigm-checkpoint/1 files (no checksums, no run metadata) stay readable for eval."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    train_run(_cfg(t_max=80), tmp_path / "a", progress=False, echo=_quiet)
    final = tmp_path / "a" / "checkpoints" / "final.safetensors"
    with safe_open(str(final), framework="numpy") as f:
        meta = dict(f.metadata())
    meta.pop("sha256"), meta.pop("run")
    meta["format"] = "meigm-checkpoint/1"
    tensors = {k: v for k, v in load_file(str(final)).items() if not k.startswith("train/")}
    save_file(tensors, str(final), metadata=meta)
    got = ckpt.read_metadata(final)
    assert got["sha256"] == {} and got["run"] == {} and got["t_env"] == [80, 80]
    from meigm.experiments.evaluate import evaluate_run, load_run

    assert evaluate_run(load_run(tmp_path / "a"))["reproduces_log"]


# ----------------------------------------------------------------- issue 41: resume and locks

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished run (10 evaluation points, checkpoints at 80..320 env steps) and its
    metrics lines, for the tests below to copy."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train_run(_cfg(keep_checkpoints=5), run, progress=False, echo=_quiet)
    return run, (run / "metrics.jsonl").read_text().splitlines()


def _died(finished: tuple[Path, list[str]], where: Path) -> Path:
    """A copy of ``finished`` as if it had died after its last interval checkpoint."""
    import shutil

    shutil.copytree(finished[0], where)
    (where / "results.json").unlink()
    (where / "checkpoints" / "final.safetensors").unlink()
    return where


def _files(run: Path) -> dict[Path, bytes]:
    """Every file of a run directory but its lock, by content."""
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("edit, differ", [
    (("hidden_dim: 16", "hidden_dim: 32"), "hidden_dim (32 now, 16 in the checkpoint)"),
    (("gamma: 0.99", "gamma: 0.9"), "gamma (0.9 now, 0.99 in the checkpoint)"),
    (("seed: 0", "seed: 7"), "seed (7 now, 0 in the checkpoint)"),
])
def test_resume_refuses_a_config_yaml_edited_since_its_checkpoints(finished, tmp_path, capfd,
                                                                    edit, differ):
    """Issue 41: an edited width made both checkpoints "skipped" and the run start again
    from step 0 over its own history; an edited gamma or seed resumed on the new value
    (the seed relabelled seeds 0/1 as 7/8 half-way through metrics.jsonl). The checkpoint
    records its config: a difference is refused, naming the keys, and nothing changes."""
    from conftest import error_line

    from meigm.experiments.cli import main

    run = _died(finished, tmp_path / "run")
    text = (run / "config.yaml").read_text()
    assert f"\n{edit[0]}\n" in text
    (run / "config.yaml").write_text(text.replace(f"\n{edit[0]}\n", f"\n{edit[1]}\n"))
    before = _files(run)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    line = error_line(capfd)
    assert f"cannot resume {run}: its config.yaml no longer matches checkpoint step_320.safetensors: " \
           f"{differ}; put those values back" in line and "(nothing was changed)" in line
    assert _files(run) == before


def test_config_differences_name_keys_and_skip_keys_added_since():
    """A key the checkpoint predates is compared with the value runs had before it where
    that is known (reward_scale: 1), and not at all otherwise (its config.yaml predates it
    too); tuples and lists are one value."""
    cfg = Config(t_max=100, reward_scale=1.0)
    recorded = json.loads(json.dumps(cfg.to_dict()))
    assert ckpt.config_differences(recorded, cfg) == []
    del recorded["gamma"], recorded["reward_scale"]
    recorded["hidden_dim"] = 32
    assert ckpt.config_differences(recorded, cfg) == ["hidden_dim (64 now, 32 in the checkpoint)"]
    assert ckpt.config_differences(recorded, Config(t_max=100, reward_scale=10.0)) == [
        "hidden_dim (64 now, 32 in the checkpoint)", "reward_scale (10.0 now, 1.0 in the checkpoint)"]


def test_resume_refuses_checkpoints_it_cannot_read_rather_than_starting_over(
        finished, tmp_path, capfd, monkeypatch):
    """Issue 41: checkpoints of another meigm version, or all of them damaged, were skipped
    and the run trained again from step 0 over its history; now that is an error."""
    from conftest import error_line

    import meigm
    from meigm.experiments.cli import main

    run = _died(finished, tmp_path / "run")
    before = _files(run)
    monkeypatch.setattr(meigm, "__version__", "9.9.9")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    line = error_line(capfd)
    assert f"cannot resume {run}: checkpoint" in line and "written by meigm 0.1.0, this is meigm " \
           "9.9.9" in line and line.endswith("(nothing was changed)")
    assert _files(run) == before
    monkeypatch.undo()

    for path in ckpt.list_checkpoints(run):
        path.write_bytes(path.read_bytes()[:1000])  # every one truncated
    before = _files(run)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capfd.readouterr()
    assert "none of its 4 checkpoints can be read" in err.err and "move its checkpoints/ away" in err.err
    assert err.out.count("warning: skipping checkpoint") == 4
    assert _files(run) == before


def test_a_torn_row_inside_the_checkpointed_part_loses_only_itself(finished, tmp_path):
    """Issue 41: a damaged line among the rows a checkpoint covers cut metrics.jsonl there
    (4 of 8 rows left) without a word. Now it warns, and every other row keeps its place:
    a torn row alone (line 5: seed 0's third point) and a torn row run together with the
    next (line 7 + 8: seed 0's fourth point lost, seed 1's kept)."""
    run = _died(finished, tmp_path / "run")
    reference = finished[1]
    lines = list(reference)
    lines[4] = lines[4][:25]
    lines[6] = lines[6][:40] + lines[7]
    del lines[7]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    echoed: list[str] = []
    results = train_run(config_mod.build(run / "config.yaml"), run, progress=False,
                        echo=echoed.append, resume=True)
    warned = [e for e in echoed if "torn or damaged" in e]
    assert len(warned) == 1, echoed
    assert "line(s) 5, 7 are torn" in warned[0]
    assert "seed 0 at evaluation 2, seed 0 at evaluation 3 are lost, the other 14 rows" in warned[0]
    expected = [without_clock(json.loads(ln)) for i, ln in enumerate(reference) if i not in (4, 6)]
    assert metrics_rows(run) == expected
    grid = list(range(40, 401, 40))
    assert results["eval_t_env"] == {"0": [t for t in grid if t not in (120, 160)], "1": grid}
    assert [r["seed"] for r in results["final"]] == [0, 1]


def _hold(path: Path, pid: str = "4242") -> int:
    """Lock ``path``'s lock file as another process would (a second open file description
    conflicts with flock even in this process), writing ``pid`` as its holder."""
    import fcntl

    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{pid}\n".encode())
    return fd


def test_a_run_directory_is_locked_for_the_life_of_its_run(finished, tmp_path, capfd, monkeypatch):
    """Issue 41: two `meigm train --out same` started together both exited 0, the second
    taking over the first's fresh directory as a failed start (t_env 100...600 twice in
    metrics.jsonl). A run holds an flock on its directory while it runs; a new run, a
    resume and a sweep task there are refused, naming the holder's pid, and change nothing."""
    import fcntl

    from conftest import TINY, error_line

    import meigm.experiments.run as run_mod
    from meigm.experiments.cli import main
    from meigm.experiments.sweep import train_task

    fresh = tmp_path / "fresh"
    fd = _hold(fresh)
    assert main(["train", "--env", "matrix:table1", "--out", str(fresh), "--no-progress", *TINY,
                 "t_max=100"]) == 2
    assert f"run directory {fresh} is in use by another meigm process (pid 4242)" in error_line(capfd)
    assert [p.name for p in fresh.iterdir()] == [".lock"]

    resumable = _died(finished, tmp_path / "resumable")
    before = _files(resumable)
    os.close(fd)
    fd = _hold(resumable, "777")
    assert main(["train", "--resume", str(resumable), "--no-progress"]) == 2
    assert "is in use by another meigm process (pid 777)" in error_line(capfd)
    with pytest.raises(MeigmError, match=r"in use by another meigm process \(pid 777\)"):
        train_task([dict(_cfg().to_dict(), hidden_dim=8)], [str(resumable)], ["x"],  # would clear it
                   [str(tmp_path / "pids" / "x.pid")])
    assert _files(resumable) == before
    os.close(fd)

    # held while training, released after; re-entrant within the process
    held = []
    real = run_mod.evaluation_records

    def probe(loop, *args):
        other = os.open(loop.run_dir / ".lock", os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(other)
        return real(loop, *args)

    monkeypatch.setattr(run_mod, "evaluation_records", probe)
    with run_mod.run_dir_lock(tmp_path / "own"):
        train_run(_cfg(t_max=80), tmp_path / "own", progress=False, echo=_quiet)
    assert held == [True, True]
    os.close(_hold(tmp_path / "own"))  # free again
    assert (tmp_path / "own" / ".lock").read_text() == "4242\n"


# ----------------------------------------------------------------- issue 41 item 6: small ones

def test_a_final_checkpoint_that_does_not_fit_still_writes_the_results(tmp_path, monkeypatch):
    """Training finished: a full disk at final.safetensors is a warning naming it, and
    results.json is written and says the checkpoint is missing."""
    real = ckpt.save_checkpoint

    def full_at_the_end(path, *a, **k):
        if Path(path).name == ckpt.FINAL:
            raise ckpt.CheckpointWriteError(f"not enough disk space for checkpoint {ckpt.FINAL}")
        return real(path, *a, **k)

    from meigm.experiments import run as run_mod

    monkeypatch.setattr(run_mod, "save_checkpoint", full_at_the_end)
    echoed: list[str] = []
    results = train_run(_cfg(), tmp_path / "r", progress=False, echo=echoed.append)
    on_disk = json.loads((tmp_path / "r" / "results.json").read_text())
    assert on_disk["t_env"] == results["t_env"] == [400, 400]
    assert "not enough disk space" in on_disk["final_checkpoint_missing"]
    assert any("written without final.safetensors" in e for e in echoed), echoed
    assert not (tmp_path / "r" / "checkpoints" / ckpt.FINAL).exists()


def test_the_disk_space_message_shows_sizes_in_a_unit_that_shows_them(tmp_path, monkeypatch):
    import shutil as shutil_mod
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda _p: usage(10**9, 10**9 - 5000, 5000))
    monkeypatch.setattr(ckpt, "flatten_state",
                        lambda *_a, **_k: {"w": np.zeros((64, 64), np.float32)})  # 16 KiB
    with pytest.raises(ckpt.CheckpointWriteError) as info:
        ckpt.save_checkpoint(tmp_path / "c" / "x.safetensors", None, _cfg(), [0, 0], 0)
    msg = str(info.value)
    assert "0.00 GiB" not in msg and re.search(r"needs \d+\.\d\d KiB, \d+\.\d\d KiB free", msg), msg


def test_a_read_only_run_directory_is_one_line_for_resume_and_eval(finished, tmp_path, capfd,
                                                                  monkeypatch):
    """As root a chmod does not stop a write, so the file system's refusal is simulated
    where meigm meets it: the lock file (resume) and eval.json (eval)."""
    from meigm.experiments.cli import main

    run = _died(finished, tmp_path / "run")
    real_open = os.open

    def read_only(path, *a, **k):
        if str(path).startswith(str(run)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    line = error_line(capfd)
    assert line == (f"meigm train: error: cannot lock run directory {run}: Read-only file system "
                    "(training or resuming writes into it; copy it somewhere writable)")
    monkeypatch.setattr(os, "open", real_open)

    from pathlib import Path as P

    real_write = P.write_text

    def no_write(self, *a, **k):
        if str(self).startswith(str(finished[0])):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_write(self, *a, **k)

    monkeypatch.setattr(P, "write_text", no_write)
    assert main(["eval", str(finished[0]), "--episodes", "2"]) == 2
    assert error_line(capfd) == (f"meigm eval: error: cannot write {finished[0] / 'eval.json'}: "
                                 "Read-only file system")


def test_plot_skips_a_killed_runs_torn_last_line_with_a_warning(finished, tmp_path, capfd):
    from meigm.experiments.cli import main

    run = _died(finished, tmp_path / "sweep" / "matrix_table1" / "me_qmix")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"seed": 0, "t_env": 4')  # killed mid-write
    assert main(["plot", str(tmp_path / "sweep"), "--out", str(tmp_path / "plots")]) == 0
    err = capfd.readouterr().err
    assert "warning:" in err and "line 21 is not valid JSON (torn by a killed process?); skipped" in err
    # in a finished run, or anywhere but the last line, it is still an error naming the line
    (run / "results.json").write_text("{}")
    assert main(["plot", str(run), "--out", str(tmp_path / "plots2")]) == 2
    assert "line 21 is not valid JSON" in error_line(capfd)


def test_a_half_width_buffer_checkpoints_and_resumes_exactly(tmp_path):
    """``replay_dtype=float16``: the checkpoint holds the buffer as it is stored (half
    width, no widening on save or load) and a run stopped after its second checkpoint
    resumes to the uninterrupted run's metrics. The matrix game's observations are
    one-hot, exact in 16 bits, so it also trains exactly as the float32 buffer does."""
    cfg = _cfg(replay_dtype="float16", keep_checkpoints=5)
    train_run(cfg, tmp_path / "ref", progress=False, echo=_quiet)
    train_run(_cfg(keep_checkpoints=5), tmp_path / "wide", progress=False, echo=_quiet)
    assert [without_clock(r) for r in _records(tmp_path / "ref")] == \
        [without_clock(r) for r in _records(tmp_path / "wide")]
    run = tmp_path / "run"
    train_run(cfg, run, progress=False, echo=_quiet)
    (run / "results.json").unlink()
    (run / "checkpoints" / "final.safetensors").unlink()
    steps = ckpt.list_checkpoints(run)
    for late in steps[2:]:
        late.unlink()
    from safetensors.numpy import load_file

    stored = {k: v.dtype for k, v in load_file(str(steps[1])).items()
              if k.endswith(("buffer/data/obs", "buffer/data/state"))}
    assert stored and set(stored.values()) == {np.dtype("float16")}, stored
    results = train_run(Config(**config_mod.load_yaml(run / "config.yaml", what="cfg")), run,
                        progress=False, echo=_quiet, resume=True)
    assert results["resumed_from"].endswith(steps[1].name)
    assert _records(run) == _records(tmp_path / "ref")
