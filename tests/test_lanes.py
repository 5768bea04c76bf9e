"""Lanes (issue 43 item 2): variants that differ only in numeric hyper-parameters train as
lanes of one compiled program, each exactly as it trains alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import meigm
from meigm import config
from meigm.config import Config
from meigm.errors import ConfigError
from meigm.experiments.logging import without_clock
from meigm.lanes import FREE_FIELDS, LANE_FIELDS, check_variants, lane_values, stack_hyper
from meigm.program import compiled, init_seeds, jit_run, make_program
from tests.conftest import TINY

SHORT = [*TINY, "t_max=600", "test_interval=300", "batch_size=8", "buffer_size=32"]

#: Per family, a variant that moves several lane fields its learner reads.
MOVED = {
    "qmix": ["lr=0.003", "epsilon_anneal_steps=200", "gamma=0.9", "td_lambda=0.8", "grad_clip=1.0"],
    "me_qmix": ["lr=0.003", "alpha_lr=0.03", "alpha_init=0.3", "target_entropy=0.5", "opt_lr=0.01"],
    "mappo": ["ppo_lr=0.002", "ppo_clip=0.1", "entropy_coef=0.05", "gae_lambda=0.8"],
}


def _cfg(alg: str, extra: list[str] = ()) -> Config:
    base = [*SHORT, "n_envs=8"] if alg == "mappo" else SHORT
    return config.build(None, [*base, *extra], alg=alg, env="matrix:table1", seeds=2)


def _train(program, points: int = 2):
    """Every lane of ``program`` trained over ``points`` evaluation intervals -> host state."""
    state = init_seeds(program.trainer.init, program.lane_keys(), program.lane_hyper())
    run, _ = compiled(program.trainer)
    for k in range(1, points + 1):
        state, _ = run(state, k * program.cfg.test_interval)
    return jax.device_get(state)


def _lanes(state, lanes: slice) -> list[np.ndarray]:
    """The learner state, replay data and counters of ``lanes``, leaf by leaf."""
    return [np.asarray(x)[lanes] for x in jax.tree.leaves((state.learner, state.data, state.t_env,
                                                           state.key))]


#: How closely a lane matches its variant alone, per family. Replay learners update lane
#: after lane (meigm.types.per_seed), so their numbers are the alone program's bit for
#: bit. The PPO family's update is a plain vmap over lanes, and XLA's CPU code for a
#: 4-lane batch may round differently from a 2-lane one where the vector units are wide:
#: on an AVX-512 AMD EPYC, 14 of 32 elements of one MAPPO weight differed by at most
#: 3e-8 after 600 steps (bit-equal on the machines of earlier sessions and of CI).
LANE_MATCH = {"qmix": {"rtol": 0, "atol": 0}, "mappo": {"rtol": 1e-5, "atol": 1e-6}}


@pytest.mark.parametrize("alg", ["qmix", "mappo"])
def test_a_lane_trains_as_its_variant_alone(alg):
    """Variant B packed after variant A (2 seeds each) computes what B computes in its own
    2-seed program, and A what A does (``LANE_MATCH``: bit for bit for a replay learner,
    to float reassociation for PPO): the hyper-parameters are the lane's, and nothing of
    the other lanes leaks in. (Against a 1-seed program the numbers agree only to float
    reassociation: XLA inlines the one-iteration loop of a single lane's update and fuses
    its multiply-adds differently, the same as for seeds before lanes.)"""
    base, moved = _cfg(alg), _cfg(alg, MOVED[alg])
    packed = _train(make_program(moved, variants=[base]))
    alone_moved, alone_base = _train(make_program(moved)), _train(make_program(base))
    for lane, alone in ((slice(0, 2), alone_moved), (slice(2, 4), alone_base)):
        for x, y in zip(_lanes(packed, lane), _lanes(alone, slice(0, 2)), strict=True):
            if x.dtype.kind == "f":
                np.testing.assert_allclose(x, y, **LANE_MATCH[alg])
            else:  # counters, keys, actions: always exact
                np.testing.assert_array_equal(x, y)
    # and the moved fields did change the training, by far more than the tolerance (the
    # comparison above is not vacuous)
    assert max(float(np.max(np.abs(x - y))) for x, y in
               zip(_lanes(alone_moved, slice(0, 2)), _lanes(alone_base, slice(0, 2)), strict=True)
               if x.dtype.kind == "f" and x.size) > 1e-3


def test_me_qmix_lanes_start_at_their_own_temperature():
    """ME-QMIX's temperature fields reach its lanes: α starts at each lane's alpha_init."""
    base, moved = _cfg("me_qmix"), _cfg("me_qmix", MOVED["me_qmix"])
    program = make_program(base, variants=[moved])
    state = init_seeds(program.trainer.init, program.lane_keys(), program.lane_hyper())
    alpha = np.exp(np.asarray(state.learner.params["log_alpha"]))
    np.testing.assert_allclose(alpha, [1.0, 1.0, 0.3, 0.3], rtol=1e-6)


@pytest.mark.slow  # CI time: the README grid example trains me_qmix lanes in the default run
def test_me_qmix_lanes_train_as_their_variants_alone():
    """ME-QMIX's lanes, temperature fields moved, train as their variants alone."""
    base, moved = _cfg("me_qmix"), _cfg("me_qmix", MOVED["me_qmix"])
    packed, alone = _train(make_program(base, variants=[moved]), 1), _train(make_program(moved), 1)
    for x, y in zip(_lanes(packed, slice(2, 4)), _lanes(alone, slice(0, 2)), strict=True):
        np.testing.assert_array_equal(x, y)


def _other_value(value):
    """A value unequal to ``value`` of the same kind (what another variant might set)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, dict):
        return {**value, "other": 1}
    return 7  # None


@pytest.mark.parametrize("field", sorted(f.name for f in dataclasses.fields(Config)
                                         if f.name not in LANE_FIELDS and f.name not in FREE_FIELDS))
def test_every_non_lane_field_is_refused_in_one_line(field):
    cfg = _cfg("me_qmix").resolve(1000)
    other = dataclasses.replace(cfg, **{field: _other_value(getattr(cfg, field))})
    with pytest.raises(ConfigError) as info:
        check_variants([cfg, other])
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{field} differs between variants")
    assert "lr" in message  # it says which fields may differ


def test_lane_and_free_fields_may_differ():
    cfg = _cfg("me_qmix").resolve(1000)
    changes = {name: _other_value(lane_values(cfg)[name]) for name in LANE_FIELDS}
    check_variants([cfg, dataclasses.replace(cfg, seed=5, **changes)])  # no error


def test_lane_fields_are_config_fields_with_their_types():
    fields = {f.name for f in dataclasses.fields(Config)}
    assert set(LANE_FIELDS) <= fields and FREE_FIELDS <= fields
    cfg = _cfg("me_qmix").resolve(1000)
    stacked = stack_hyper([cfg, dataclasses.replace(cfg, lr=0.5)], seeds=3)
    assert stacked["lr"].tolist() == pytest.approx([1e-3] * 3 + [0.5] * 3)
    assert stacked["epsilon_anneal_steps"].dtype == np.int32
    assert stacked["opt_lr"].tolist() == pytest.approx([1e-3] * 3 + [1e-3] * 3)  # resolved


def test_a_program_with_other_hyper_parameters_is_the_same_program():
    """Lane fields are data, not constants: two configs that differ only in them lower to
    the same program text, so the persistent cache compiles a grid once."""
    texts = []
    for extra in ([], MOVED["qmix"]):
        program = make_program(_cfg("qmix", extra))
        state = jax.eval_shape(lambda k, h, p=program: init_seeds(p.trainer.init, k, h),
                               program.lane_keys(), program.lane_hyper())
        t = jax.ShapeDtypeStruct((program.lanes,), np.int32)
        texts.append(jit_run(program.trainer).lower(state, t).as_text())
    assert texts[0] == texts[1]


def test_packing_refuses_a_host_environment():
    pytest.importorskip("mpe2")
    cfg = config.build(None, [*SHORT], alg="qmix", env="pettingzoo:mpe2.simple_spread_v3", seeds=1)
    with pytest.raises(ConfigError, match="cannot pack variants"):
        make_program(cfg, variants=[cfg])


def test_memory_check_counts_every_lane():
    from meigm.experiments.run import memory_parts

    cfg = _cfg("qmix")
    one, three = make_program(cfg), make_program(cfg, variants=[cfg, cfg])
    assert three.lanes == 3 * one.lanes
    a, b = memory_parts(one), memory_parts(three)
    for part in ("training state", "replay buffers", "roll-out", "evaluation"):
        assert b[part] == 3 * a[part]


# ------------------------------------------------------------------ grids on disk

GRID_ARGS = ["--alg", "me_qmix", "--env", "matrix:table1", "--seeds", "2", "--no-progress",
             *SHORT, "t_max=3000", "test_interval=100", "checkpoint_interval=100",
             "keep_checkpoints=1", "--vary", "alpha_lr=0.003,0.3", "--vary", "lr=0.001,0.003"]


def _rows(run_dir: Path) -> list[dict]:
    return [without_clock(json.loads(line)) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # three trainings; the README grid example runs in the default suite
def test_a_grid_writes_each_point_as_the_run_it_trains_alone(tmp_path):
    """``meigm.train_grid``: one program, one run directory per point, each holding the
    rows, results and checkpoints of that point trained alone (same seeds, same seed count)."""
    base = _cfg("me_qmix", ["t_max=400", "test_interval=200"])
    grid = meigm.train_grid(base, {"alpha_init": [1.0, 0.3], "gamma": [0.99]}, tmp_path / "grid",
                            echo=lambda _: None)
    assert list(grid) == ["alpha_init=1.0,gamma=0.99", "alpha_init=0.3,gamma=0.99"]
    listing = json.loads((tmp_path / "grid" / "grid.json").read_text())
    assert listing["runs"] == list(grid)
    for name, results in grid.items():
        alone_cfg = config.build(None, [*SHORT, "t_max=400", "test_interval=200",
                                        f"alpha_init={name.split(',')[0].split('=')[1]}"],
                                 alg="me_qmix", env="matrix:table1", seeds=2)
        alone = meigm.train(alone_cfg, tmp_path / f"alone_{name}", echo=lambda _: None)
        assert _rows(tmp_path / "grid" / name) == _rows(tmp_path / f"alone_{name}")
        assert results["packed"] == {"variants": 2, "lanes": 4}
        assert results["first_step"]["per_seed"] == alone["first_step"]["per_seed"]
        on_disk = json.loads((tmp_path / "grid" / name / "results.json").read_text())
        assert on_disk["final"] == alone["final"]
        assert (tmp_path / "grid" / name / "checkpoints" / "final.safetensors").is_file()


def test_a_grid_refuses_what_cannot_be_a_lane(tmp_path, capfd):
    from meigm.experiments.cli import main

    assert main(["train", "--alg", "qmix", "--vary", "hidden_dim=8,16", "--out",
                 str(tmp_path / "g")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hidden_dim cannot be varied" in err[0] and "lr" in err[0]
    assert not (tmp_path / "g").exists()
    with pytest.raises(ConfigError, match="a value is repeated"):
        meigm.train_grid(_cfg("qmix"), {"lr": [0.001, 0.001]})
    with pytest.raises(ConfigError, match="non-empty list"):
        meigm.train_grid(_cfg("qmix"), {"lr": 0.001})


@pytest.mark.slow
def test_a_killed_grid_resumes_exactly(tmp_path):
    """SIGKILL a packed grid once every point has a checkpoint, resume it with
    ``meigm train --resume``: every point ends with the rows of the uninterrupted grid."""
    from tests.test_resume import _kill_when, _meigm

    ref = tmp_path / "ref"
    assert _meigm("train", *GRID_ARGS, "--out", str(ref)).wait() == 0
    run = tmp_path / "run"
    names = json.loads((ref / "grid.json").read_text())["runs"]

    def all_checkpointed() -> bool:
        return all(len(list((run / n / "checkpoints").glob("step_*.safetensors"))) >= 1
                   and _n_rows(run / n) >= 6 for n in names)

    assert _kill_when(_meigm("train", *GRID_ARGS, "--out", str(run)), all_checkpointed, 600)
    assert not (run / names[0] / "results.json").exists()
    resumed = _meigm("train", "--resume", str(run), "--no-progress")
    out = resumed.communicate()[0]
    assert resumed.returncode == 0, out
    assert "resuming" in out
    for n in names:
        assert _rows(run / n) == _rows(ref / n)


def _n_rows(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def test_a_lane_update_does_not_copy_its_buffer():
    """Packed seeds update lane after lane (per_seed), each behind a cond on its own flag
    (frozen at the chunk's target, or still filling; the skipped work is measured in
    benchmarks/sweep_cost.py --against-alone). That cond must not take the lane's replay
    buffer as an operand — XLA then
    materialises the lane's slice of the stacked buffers on every collection (it did:
    three smax:3m seeds trained at 656 env steps/s instead of 1,063). XLA's working set
    beyond the state (``temp``) stays below one seed's buffer."""
    from meigm.rollout import buffer_bytes

    cfg = config.build(None, [*TINY, "env_args.steps=4", "buffer_size=4096", "batch_size=8"],
                       alg="qmix", env="matrix:table1", seeds=3)
    program = make_program(cfg)
    state = jax.eval_shape(lambda k, h: init_seeds(program.trainer.init, k, h),
                           program.lane_keys(), program.lane_hyper())
    chunk = jit_run(program.trainer, donate=True).lower(
        state, jax.ShapeDtypeStruct((program.lanes,), np.int32)).compile()
    temp = chunk.memory_analysis().temp_size_in_bytes
    assert temp < buffer_bytes(program.env.spec, cfg.buffer_size), temp
