"""Run tooling: checkpoints, ``meigm eval``, TensorBoard logs and GIF rendering.

What a user relies on after training: a checkpoint restores the learner state exactly
and refuses a state of another config (naming the tensor), checkpoints land where the
interval says, ``meigm eval`` reproduces the logged test metrics bit for bit, the
TensorBoard files hold the same scalars as ``metrics.jsonl``, episodes render to
multi-frame GIFs, and broken inputs give one-line errors with exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY, error_line
from PIL import Image

from meigm import config
from meigm.envs import make_env, registered
from meigm.errors import MeigmError
from meigm.experiments.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from meigm.experiments.cli import main
from meigm.program import compiled, init_seeds, make_program, seed_keys

MATRIX = ["--env", "matrix:table1", "--seeds", "2", *TINY, "t_max=400", "test_interval=100",
          "checkpoint_interval=150"]
# SMAX episodes end at different steps, so seeds' env steps and the returns are irregular
# floats: a real test of bitwise reproduction and of checkpoints "at or after" a multiple.
SMAX = ["--env", "smax:3m", "--seeds", "2", *TINY, "n_envs=2", "batch_size=4", "buffer_size=8",
        "test_episodes=4", "t_max=300", "test_interval=100", "checkpoint_interval=100"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "matrix"
    assert main(["train", "--alg", "me_qmix", "--out", str(out), "--no-progress", *MATRIX]) == 0
    return out


@pytest.fixture(scope="module")
def smax_ckpt_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "smax"
    assert main(["train", "--alg", "me_qmix", "--out", str(out), "--no-progress", *SMAX]) == 0
    return out


def _trainer(alg: str, extra: tuple[str, ...] = ()):
    cfg = config.build(None, [*TINY, "t_max=400", "test_interval=100", *extra], alg=alg,
                       env="matrix:table1", seeds=2)
    program = make_program(cfg)
    return program.cfg, program.trainer


def _template(cfg, trainer):
    return jax.eval_shape(jax.vmap(trainer.init), seed_keys(cfg)).learner


# ----------------------------------------------------------------- memory
def test_a_donating_chunk_writes_its_state_over_the_input_and_gives_the_same_numbers():
    """The training loop donates each chunk's input, so the replay buffers are held once.
    XLA must actually take the donation (no 'not usable' warning, the input's buffers
    are gone), and the numbers must be those of the chunk that does not donate."""
    import warnings

    cfg, trainer = _trainer("me_qmix")
    plain = compiled(trainer)[0](init_seeds(trainer.init, seed_keys(cfg)), 100)
    state = init_seeds(trainer.init, seed_keys(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Some donated buffers were not usable" fails
        donated = compiled(trainer, donate=True)[0](state, 100)
    assert state.data.buffer.data.obs.is_deleted() and state.learner.params["log_alpha"].is_deleted()
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(donated), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_is_exact(tmp_path):
    cfg, trainer = _trainer("me_qmix")
    state = init_seeds(trainer.init, seed_keys(cfg))
    state, _ = compiled(trainer)[0](state, 100)  # 100 steps: Adam moments and α have moved
    learner = jax.device_get(state.learner)
    log_alpha = np.asarray(learner.params["log_alpha"])  # [seeds]
    assert not np.allclose(log_alpha, np.log(cfg.alpha_init))
    path = save_checkpoint(tmp_path / "c.safetensors", learner, cfg, [100, 100], 0)

    restored, meta = load_checkpoint(path, _template(cfg, trainer))
    assert jax.tree.structure(restored) == jax.tree.structure(learner)
    for a, b in zip(jax.tree.leaves(learner), jax.tree.leaves(restored), strict=True):
        assert np.asarray(a).dtype == b.dtype and np.array_equal(np.asarray(a), b)
    assert np.array_equal(restored.params["log_alpha"], log_alpha)  # α
    assert not np.array_equal(np.asarray(restored.params["agent"]["params"]["fc1"]["kernel"]),
                              np.asarray(restored.target_params["agent"]["params"]["fc1"]["kernel"]))
    assert meta["alg"] == "me_qmix" and meta["env"] == "matrix:table1"
    assert meta["seeds"] == [0, 1] and meta["t_env"] == [100, 100] and meta["eval_index"] == 0
    assert meta["meigm_version"] and meta["config"]["hidden_dim"] == cfg.hidden_dim
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_checkpoint_of_another_config_names_the_tensor(tmp_path):
    cfg, trainer = _trainer("me_qmix")
    state = jax.device_get(init_seeds(trainer.init, seed_keys(cfg)).learner)
    path = save_checkpoint(tmp_path / "c.safetensors", state, cfg, [0, 0], 0)

    wide_cfg, wide = _trainer("me_qmix", ("hidden_dim=8",))
    with pytest.raises(MeigmError, match=r"tensor 'params/agent/params/fc1/bias' is float32\[2, 16\] "
                                         r"in the file, float32\[2, 8\] expected"):
        load_checkpoint(path, _template(wide_cfg, wide))
    vdn_cfg, vdn = _trainer("vdn")
    with pytest.raises(MeigmError, match=r"tensor '(params|target_params|opt_state)/\S+' .*config"):
        load_checkpoint(path, _template(vdn_cfg, vdn))
    three = dataclasses.replace(cfg, seeds=3)
    with pytest.raises(MeigmError, match=r"float32\[3, .*seed count"):
        load_checkpoint(path, _template(three, trainer))


def test_checkpoints_land_at_the_interval(matrix_run, smax_ckpt_run):
    # matrix:table1: 4 one-step episodes per iteration, 25 iterations per chunk -> evaluation
    # points at exactly 100, 200, 300, 400 env steps; interval 150 -> first points >= 150, 300.
    names = [p.name for p in list_checkpoints(matrix_run)]
    assert names == ["step_200.safetensors", "step_300.safetensors", "final.safetensors"]
    assert latest_checkpoint(matrix_run).name == "final.safetensors"
    assert read_metadata(matrix_run / "checkpoints" / "step_300.safetensors")["eval_index"] == 2

    # SMAX: irregular env steps; each checkpoint is the first evaluation point at or after a
    # multiple of 100 (counted by the slowest seed), final excluded. Rows come one per seed
    # per evaluation point, in order.
    rows = _metrics(smax_ckpt_run)
    points = [min(r["t_env"] for r in rows[i:i + 2]) for i in range(0, len(rows), 2)]
    expected, due = [], 100
    for t in points[:-1]:
        if t >= due:
            expected.append(f"step_{t}.safetensors")
            due = (t // 100 + 1) * 100
    names = [p.name for p in list_checkpoints(smax_ckpt_run)]
    assert len(expected) >= 2 and names == [*expected, "final.safetensors"]


# ------------------------------------------------------------------- meigm eval
def test_eval_reproduces_the_logged_test_metrics(smax_ckpt_run, capfd):
    capfd.readouterr()
    assert main(["eval", str(smax_ckpt_run)]) == 0
    out = capfd.readouterr().out
    assert "identical to metrics.jsonl" in out and "mean" in out
    result = json.loads((smax_ckpt_run / "eval.json").read_text())
    last = _metrics(smax_ckpt_run)[-2:]  # the last evaluation point, one line per seed
    assert result["reproduces_log"] is True
    for logged, got in zip(last, result["per_seed"], strict=True):
        assert got["seed"] == logged["seed"] and got["t_env"] == logged["t_env"]
        for key in ("test/return", "test/won", "test/length"):
            assert got[key] == logged[key]  # bitwise: same params, keys and program
    assert set(result["mean"]) >= {"test/return", "test/won"}

    # An interval checkpoint reproduces the line logged at its own env steps.
    first = list_checkpoints(smax_ckpt_run)[0]
    assert main(["eval", str(smax_ckpt_run), "--checkpoint", first.name]) == 0
    result = json.loads((smax_ckpt_run / "eval.json").read_text())
    assert result["reproduces_log"] is True and result["checkpoint"].endswith(first.name)
    logged = {(r["seed"], r["t_env"]): r for r in _metrics(smax_ckpt_run)}
    for got in result["per_seed"]:
        assert got["test/return"] == logged[(got["seed"], got["t_env"])]["test/return"]

    # Another episode count is a different evaluation: allowed, and not claimed to match.
    assert main(["eval", str(smax_ckpt_run), "--episodes", "2"]) == 0
    result = json.loads((smax_ckpt_run / "eval.json").read_text())
    assert result["test_episodes"] == 2 and result["reproduces_log"] is None


def test_eval_user_errors_are_one_line(matrix_run, tmp_path, capfd):
    cases = [
        (["eval", str(tmp_path / "nope")], "run directory not found"),
        (["eval", str(tmp_path)], "is not a run directory (no config.yaml)"),
        (["eval", str(matrix_run), "--checkpoint", "missing.safetensors"], "checkpoint not found"),
        (["eval", str(matrix_run), "--render", str(tmp_path / "x.gif")],
         "no renderer for the 'matrix' family; renderers exist for: smax, overcooked"),
        (["eval", str(matrix_run), "--episodes", "0"], "--episodes must be positive"),
        (["eval", str(matrix_run), "--seed-index", "99"],
         "--seed-index chooses the seed --render animates"),
        (["train", "checkpoint_interval=-1"], "'checkpoint_interval' must be >= 0"),
    ]
    for argv, expected in cases:
        capfd.readouterr()
        assert main(argv) == 2, argv
        line = error_line(capfd)
        assert line.startswith(f"meigm {argv[0]}: error:") and expected in line, line


def test_eval_of_a_corrupt_or_foreign_checkpoint_is_one_line(matrix_run, tmp_path, capfd):
    run = tmp_path / "copy"
    shutil.copytree(matrix_run, run)
    final = run / "checkpoints" / "final.safetensors"
    good = final.read_bytes()
    for corrupt in (b"\x00garbage" * 10, good[: len(good) // 2]):
        final.write_bytes(corrupt)
        capfd.readouterr()
        assert main(["eval", str(run), "--checkpoint", "final.safetensors"]) == 2
        assert "cannot read checkpoint" in error_line(capfd)
        # issue 16: the default (newest) falls back to the one before, as --resume does
        assert main(["eval", str(run)]) == 0
        err = capfd.readouterr().err
        assert "warning: skipping checkpoint" in err and "using step_300.safetensors" in err
        assert json.loads((run / "eval.json").read_text())["checkpoint"].endswith("step_300.safetensors")

    other_cfg, other = _trainer("me_qmix", ("hidden_dim=8",))
    state = jax.device_get(init_seeds(other.init, seed_keys(other_cfg)).learner)
    save_checkpoint(final, state, other_cfg, [0, 0], 0)
    capfd.readouterr()
    assert main(["eval", str(run), "--checkpoint", "final.safetensors"]) == 2
    line = error_line(capfd)
    assert "does not match this config: tensor 'params/agent/params/fc1/bias' is float32[2, 8]" in line


def test_wandb_without_the_package_fails_before_writing(tmp_path, capfd):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "wandb=true", *TINY]) == 2
    assert "wandb package is not installed" in error_line(capfd)
    assert not out.exists()


# ------------------------------------------------------------------- TensorBoard
def _read_events(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of one event file, parsed from its TFRecord framing: u64 length, u32 CRC,
    payload (an ``Event`` proto), u32 CRC."""
    from tensorboardX.proto.event_pb2 import Event

    data, i, out = path.read_bytes(), 0, {}
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_holds_the_logged_scalars(matrix_run):
    rows = _metrics(matrix_run)
    for seed in (0, 1):
        files = list((matrix_run / "tb" / f"seed_{seed}").glob("events.out.tfevents.*"))
        assert len(files) == 1
        scalars = _read_events(files[0])
        mine = [r for r in rows if r["seed"] == seed]
        for tag in ("test/return", "train/loss_q", "train/alpha", "train/entropy"):
            assert scalars[tag] == [(r["t_env"], pytest.approx(r[tag], rel=1e-6)) for r in mine], tag
        assert "seed" not in scalars and "t_env" not in scalars


# ------------------------------------------------------------------- rendering
def test_rollout_keeping_states_plays_the_same_episodes():
    """``keep_states`` only adds outputs: the rendered episode is an evaluated one."""
    import jax.numpy as jnp

    from meigm.rollout import random_act, rollout

    env = make_env("smax:3m")
    spec = env.spec

    def agent(params, hidden, inputs):
        return hidden, jnp.zeros((*inputs.shape[:-1], spec.n_actions))

    def play(keep: bool):
        return jax.jit(lambda k: rollout(env, agent, None, random_act, None, 4, k, 2, keep_states=keep))(
            jax.random.PRNGKey(3))

    (ep, stats), (ep_k, stats_k) = play(False), play(True)
    assert stats.env_states is None
    for a, b in zip(jax.tree.leaves((ep, stats)), jax.tree.leaves((ep_k, stats_k.replace(env_states=None))),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    pos = np.asarray(stats_k.env_states.inner.state.unit_positions)  # [E, T+1, units, 2]
    assert pos.shape[:2] == (2, spec.episode_limit + 1)
    t = int(stats_k.lengths[0])
    assert np.array_equal(pos[0, t], pos[0, -1])  # frozen after the episode ends
    assert not np.array_equal(pos[0, 0], pos[0, t])


def _assert_gif(path: Path, min_frames: int = 2) -> None:
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames >= min_frames


def test_smax_episode_renders_to_a_gif(smax_ckpt_run, tmp_path, capfd):
    gif = tmp_path / "smax.gif"
    assert main(["eval", str(smax_ckpt_run), "--render", str(gif), "--seed-index", "1"]) == 0
    assert "rendered seed 1" in capfd.readouterr().out
    result = json.loads((smax_ckpt_run / "eval.json").read_text())
    _assert_gif(gif, result["render"]["length"] + 1)
    assert main(["eval", str(smax_ckpt_run), "--render", str(gif), "--seed-index", "2"]) == 2
    assert "--seed-index must be in [0, 1]" in error_line(capfd)


@pytest.mark.filterwarnings("ignore:OvercookedV2 is now released")
def test_overcooked_renderer_draws_jaxmarl_states(tmp_path):
    """The renderer against JaxMARL's own Overcooked state, independent of the registry."""
    from types import SimpleNamespace

    import jax.numpy as jnp
    from jaxmarl.environments.overcooked import Overcooked, overcooked_layouts

    from meigm.envs.base import EnvState
    from meigm.experiments.render import render_overcooked, write_gif

    env = Overcooked(layout=overcooked_layouts["cramped_room"])
    _, s0 = env.reset(jax.random.PRNGKey(0))

    def step(s, k):
        k_act, k_env = jax.random.split(k)
        acts = {a: jax.random.randint(jax.random.fold_in(k_act, i), (), 0, 6)
                for i, a in enumerate(env.agents)}
        _, s1, rew, _, _ = env.step_env(k_env, s, acts)
        return s1, (s, rew[env.agents[0]])

    last, (states, rewards) = jax.lax.scan(step, s0, jax.random.split(jax.random.PRNGKey(1), 6))
    states = jax.tree.map(lambda xs, x: jnp.concatenate([xs, x[None]]), states, last)  # [7, ...]
    adapter = SimpleNamespace(env=env, spec=SimpleNamespace(name="overcooked:cramped_room"))
    frames = render_overcooked(adapter, EnvState(inner=states, t=jnp.arange(7)), np.asarray(rewards), 6)
    assert len(frames) == 7
    _assert_gif(write_gif(frames, tmp_path / "oc.gif"), 7)


@pytest.mark.skipif("overcooked:cramped_room" not in registered(),
                    reason="overcooked:cramped_room is not registered yet")
def test_overcooked_episode_renders_to_a_gif(tmp_path, capfd):
    out = tmp_path / "oc"
    spec = make_env("overcooked:cramped_room").spec
    steps = 2 * spec.episode_limit
    assert main(["train", "--alg", "vdn", "--env", "overcooked:cramped_room", "--out", str(out),
                 "--no-progress", *TINY, "n_envs=2", "batch_size=2", "buffer_size=4", "test_episodes=2",
                 f"t_max={steps}", f"test_interval={steps}"]) == 0
    gif = tmp_path / "oc.gif"
    assert main(["eval", str(out), "--render", str(gif)]) == 0
    assert json.loads((out / "eval.json").read_text())["reproduces_log"] is True
    _assert_gif(gif)
