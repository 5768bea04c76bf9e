"""``meigm export``: a trained team that runs on NumPy alone.

What a user relies on: the exported file plus the copied ``<stem>_policy.py`` choose
exactly the actions meigm's greedy evaluation chooses over whole recurrent episodes,
the NumPy network is ``RNNAgent`` to float32 rounding, the reference implementation
imports nothing but NumPy and the standard library, and bad input gives one clear line.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import error_line, random_params
from hypothesis import given, settings
from hypothesis import strategies as st

from meigm import numpy_policy, ops
from meigm.errors import MeigmError
from meigm.experiments.cli import main
from meigm.experiments.export import export_run
from meigm.networks.agent import RNNAgent, agent_inputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(smax_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "team.npz"
    assert main(["export", str(smax_run), str(out), "--seed-index", "1"]) == 0
    return out


def _import_path(path: Path) -> ModuleType:
    """Import a file by its path, as a user with only that file would."""
    name = f"_exported_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_export_writes_both_files_atomically(exported, smax_run, tmp_path, capfd):
    folder = exported.parent
    assert sorted(p.name for p in folder.iterdir()) == ["team.npz", "team_policy.py"]  # no .tmp
    assert (folder / "team_policy.py").read_bytes() == Path(numpy_policy.__file__).read_bytes()
    with np.load(exported, allow_pickle=False) as data:
        assert str(data["format"]) == numpy_policy.FORMAT
        assert (str(data["alg"]), str(data["env"])) == ("me_qmix", "smax:3m")
        assert int(data["seed"]) == 1  # seed index 1 of seeds [0, 1]
        assert [int(data[k]) for k in ("n_agents", "n_actions", "obs_dim", "hidden_dim")] == \
            [3, 8, 75, 16]
        assert [str(a) for a in data["agents"]] == ["ally_0", "ally_1", "ally_2"]
        assert all(data[k].dtype == np.float32 for k in numpy_policy.WEIGHTS)

    capfd.readouterr()
    again = tmp_path / "again.npz"
    assert main(["export", str(smax_run), str(again)]) == 0
    out = capfd.readouterr().out
    assert f"saved: {again}" in out and "again_policy.py" in out


def test_exported_policy_plays_meigms_greedy_episodes(exported, smax_run):
    """The copied module, given only the episode's obs and avail, picks every action
    meigm's compiled greedy roll-out picked, over whole recurrent episodes."""
    from meigm.experiments.evaluate import load_run
    from meigm.rollout import greedy_act, rollout

    run = load_run(smax_run)
    seed_index = 1
    params = jax.tree.map(lambda x: jnp.asarray(x[seed_index]), run.state.params)
    other = jax.tree.map(lambda x: x[0], run.state.params)["agent"]["params"]["fc1"]["kernel"]
    assert not np.array_equal(other, params["agent"]["params"]["fc1"]["kernel"])  # seeds differ

    n_envs = 3
    episodes, stats = jax.jit(
        lambda p, k: rollout(run.env, run.learner.agent.apply, p["agent"], greedy_act, p,
                             run.learner.hidden_dim, k, n_envs)
    )(params, jax.random.PRNGKey(7))
    episodes, lengths = jax.device_get((episodes, stats.lengths))
    assert lengths.min() > 1, lengths  # several steps: the hidden state and last action matter

    module = _import_path(exported.with_name("team_policy.py"))
    policy = module.Policy.load(exported)
    np.testing.assert_array_equal(  # the file holds seed index 1's weights exactly
        policy.weights["fc1.kernel"], np.asarray(params["agent"]["params"]["fc1"]["kernel"]))
    for e in range(n_envs):
        policy.reset()
        for t in range(int(lengths[e])):
            assert episodes.mask[e, t]
            actions = policy.act(episodes.obs[e, t], episodes.avail[e, t])
            np.testing.assert_array_equal(actions, episodes.actions[e, t], err_msg=f"env {e} step {t}")
            assert episodes.avail[e, t][np.arange(3), actions].all()
        assert not episodes.mask[e, int(lengths[e]):].any()


_AGENT = RNNAgent(n_actions=4, hidden_dim=8)
_N, _OBS, _BATCH = 3, 5, 2
_TEMPLATE = jax.eval_shape(_AGENT.init, jax.random.PRNGKey(0), jnp.zeros((_BATCH, _N, 8)),
                           jnp.zeros((_BATCH, _N, _OBS + _N + 4)))
_APPLY = jax.jit(_AGENT.apply)


def _numpy_weights(params) -> dict[str, np.ndarray]:
    p = params["params"]
    flat = {f"{layer}.{kind}": np.asarray(p[layer][kind])
            for layer in ("fc1", "gru_in", "fc2") for kind in ("kernel", "bias")}
    return {**flat, "gru_hidden.kernel": np.asarray(p["gru_hidden"]["kernel"]),
            "gru_hn_bias": np.asarray(p["gru_hn_bias"])}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.3, 1.0, 3.0]))
def test_numpy_network_equals_rnn_agent(seed: int, scale: float) -> None:
    """Random weights, hidden states, observations and last actions: same inputs, same
    new hidden state and Q-values as ``RNNAgent.apply`` up to float32 rounding."""
    rng = np.random.default_rng(seed)
    params = random_params(_TEMPLATE, seed, scale)
    hidden = rng.normal(size=(_BATCH, _N, 8)).astype(np.float32)
    obs = (rng.normal(size=(_BATCH, _N, _OBS)) * scale).astype(np.float32)
    last = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(_BATCH, _N))]
    last[0, 0] = 0.0  # the first step: no last action

    inputs = numpy_policy.agent_inputs(obs, last)
    np.testing.assert_array_equal(inputs, np.asarray(agent_inputs(jnp.asarray(obs), jnp.asarray(last))))
    h_np, q_np = numpy_policy.rnn_step(_numpy_weights(params), hidden, inputs)
    h_jax, q_jax = _APPLY(params, hidden, inputs)
    assert h_np.dtype == q_np.dtype == np.float32
    np.testing.assert_allclose(h_np, h_jax, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q_np, q_jax, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(q_jax).max())))


def test_masked_argmax_matches_meigm_including_ties_and_empty_rows() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(-2, 3, size=(200, 6)).astype(np.float32)  # many exact ties
    values[:20] = -3e10  # below the mask value: unavailable actions can win, as in meigm
    avail = rng.random((200, 6)) < 0.5
    avail[5] = False  # nothing available
    ours = numpy_policy.masked_argmax(values, avail)
    theirs = ops.masked_argmax(jnp.asarray(values), jnp.asarray(avail))
    np.testing.assert_array_equal(ours, np.asarray(theirs))
    np.testing.assert_array_equal(numpy_policy.masked_argmax(values, None), values.argmax(-1))


def test_reference_implementation_imports_only_numpy_and_stdlib() -> None:
    source = (ROOT / "meigm" / "numpy_policy.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            imported.add(node.module.split(".")[0])
    extra = {m for m in imported if m != "numpy" and m not in sys.stdlib_module_names}
    assert not extra, extra
    assert "meigm" not in imported and "jax" not in imported


def test_exported_policy_runs_where_meigm_and_jax_cannot_be_imported(exported) -> None:
    script = (
        "import sys, importlib.util\n"
        "for m in ('meigm', 'jax', 'flax', 'safetensors'): sys.modules[m] = None\n"
        f"sys.path.insert(0, {str(exported.parent)!r})\n"
        "from team_policy import Policy\n"
        "import numpy as np\n"
        f"p = Policy.load({str(exported)!r}); p.reset()\n"
        "for _ in range(3): a = p.act(np.zeros((p.n_agents, p.obs_dim)), None)\n"
        "print(a.shape, a.dtype, p.hidden.shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=exported.parent, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(3,) int64 (3, 16)"


def test_act_checks_shapes_and_keeps_memory(exported) -> None:
    policy = numpy_policy.Policy.load(exported)
    with pytest.raises(ValueError, match=r"obs must have shape \[n_agents, obs_dim\] = \[3, 75\]"):
        policy.act(np.zeros((3, 74)))
    with pytest.raises(ValueError, match="avail must have shape"):
        policy.act(np.zeros((3, 75)), np.ones((3, 7), bool))
    obs = np.random.default_rng(1).normal(size=(3, 75)).astype(np.float32)
    first = policy.act(obs)
    assert policy.hidden.any() and (policy.last_action == first).all()
    policy.reset()
    assert not policy.hidden.any() and (policy.last_action == -1).all() and policy.last_q is None
    np.testing.assert_array_equal(policy.act(obs), first)  # reset really starts over


# ----------------------------------------------------------------------- errors
def test_export_user_errors_are_one_line(smax_run, tmp_path, capfd):
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.yaml").write_bytes((smax_run / "config.yaml").read_bytes())
    out = str(tmp_path / "t.npz")
    cases = [
        ([str(tmp_path / "nope"), out], "run directory not found"),
        ([str(tmp_path), out], "is not a run directory (no config.yaml)"),
        ([str(no_ckpt), out], "no checkpoint in"),
        ([str(smax_run), out, "--seed-index", "2"], "seed index must be in [0, 1]"),
        ([str(smax_run), out, "--seed-index", "-1"], "seed index must be in [0, 1]"),
        ([str(smax_run), str(tmp_path / "missing" / "t.npz")], "does not exist"),
        ([str(smax_run), str(tmp_path / "t.txt")], "output must be a .npz file"),
        ([str(smax_run), out, "--checkpoint", "nope.safetensors"], "checkpoint not found"),
        ([str(smax_run), str(tmp_path / "no_ckpt" / "config.yaml" / "t.npz")],
         "no_ckpt/config.yaml is a file, not a directory"),
    ]
    for argv, expected in cases:
        capfd.readouterr()
        assert main(["export", *argv]) == 2, argv
        line = error_line(capfd)
        assert line.startswith("meigm export: error:") and expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_ckpt"]  # nothing written

    with pytest.raises(MeigmError, match=r"\[0, 1\]"):
        export_run(smax_run, out, seed_index=5)

    # an existing output is not overwritten without --force
    assert main(["export", str(smax_run), out]) == 0
    written = {p: p.read_bytes() for p in tmp_path.glob("t*")}
    (tmp_path / "t.npz").write_bytes(b"mine")
    capfd.readouterr()
    assert main(["export", str(smax_run), out]) == 2
    line = error_line(capfd)
    assert "t.npz and " in line and "t_policy.py already exist; pass --force to overwrite" in line
    assert (tmp_path / "t.npz").read_bytes() == b"mine"
    assert main(["export", str(smax_run), out, "--force"]) == 0
    assert {p: p.read_bytes() for p in tmp_path.glob("t*")} == written


def test_export_of_a_corrupt_checkpoint_is_refused(smax_run, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    run = tmp_path / "copy"
    shutil.copytree(smax_run, run)
    final = run / "checkpoints" / "final.safetensors"
    with safe_open(str(final), framework="numpy") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["params/agent/params/fc2/bias"] = tensors["params/agent/params/fc2/bias"] + 1.0
    save_file(tensors, str(final), metadata=meta)  # the old checksums: a bit-flipped file
    with pytest.raises(MeigmError, match="is corrupt: tensor 'params/agent/params/fc2/bias'"):
        export_run(run, tmp_path / "t.npz")
    final.write_bytes(final.read_bytes()[:1000])
    with pytest.raises(MeigmError, match="cannot read checkpoint"):
        export_run(run, tmp_path / "t.npz")
    assert not (tmp_path / "t.npz").exists() and not (tmp_path / "t_policy.py").exists()


def test_load_refuses_truncated_foreign_and_missing_files(exported, tmp_path):
    good = exported.read_bytes()
    bad = tmp_path / "bad.npz"
    for corrupt in (good[: len(good) // 2], good[:100], b"not a zip at all" * 4):
        bad.write_bytes(corrupt)
        with pytest.raises(numpy_policy.PolicyFileError, match="cannot read policy file"):
            numpy_policy.Policy.load(bad)
    assert issubclass(numpy_policy.PolicyFileError, ValueError)

    with np.load(exported, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(bad, **{**arrays, "format": np.asarray("meigm-numpy-policy/99")})
    with pytest.raises(numpy_policy.PolicyFileError, match=r"format 'meigm-numpy-policy/99'"):
        numpy_policy.Policy.load(bad)
    np.savez(bad, **{**arrays, "fc2.kernel": arrays["fc2.kernel"][:, :5]})
    with pytest.raises(numpy_policy.PolicyFileError, match=r"'fc2.kernel' has shape \[16, 5\]"):
        numpy_policy.Policy.load(bad)
    np.savez(bad, **{k: v for k, v in arrays.items() if k != "gru_hn_bias"})
    with pytest.raises(numpy_policy.PolicyFileError, match="lacks entries"):
        numpy_policy.Policy.load(bad)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(numpy_policy.PolicyFileError, match=r"not an \.npz archive"):
        numpy_policy.Policy.load(tmp_path / "plain.npy")
    with pytest.raises(FileNotFoundError):
        numpy_policy.Policy.load(tmp_path / "absent.npz")
