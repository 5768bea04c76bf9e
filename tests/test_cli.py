"""The ``meigm`` command line: run directories and user errors.

User errors must give one line naming the problem (and the allowed values), a
non-zero exit and no traceback, and must never touch what an earlier run wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import TINY, error_line
from safetensors.numpy import load_file

from meigm.experiments.cli import main

RUN = [*TINY, "t_max=200", "test_interval=100"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--alg", "qmx"],
         "unknown algorithm 'qmx'; allowed: me_qmix, me_qplex, me_vdn, soft_qmix, qmix, qplex, vdn, fop"),
        (["train", "--env", "matrix:tabel1"],
         "unknown environment 'matrix:tabel1'. Did you mean: matrix:table1"),
        (["train", "lr_rat=0.1"], "unknown config key 'lr_rat'"),
        (["train", "batch_size=abc"], "config key 'batch_size' must be int, got 'abc'"),
        (["train", "--seeds", "0"], "config key 'seeds' must be positive, got 0"),
        (["train", "buffer_size=-5"], "config key 'buffer_size' must be positive"),
        (["train", "gamma=1.5"], "config key 'gamma' must be in [0, 1]"),
        (["train", "--preset", "/nonexistent/p.yaml"], "preset file not found: /nonexistent/p.yaml"),
        (["train", "notakeyvalue"], "is not of the form key=value"),
        (["train", "--env", "matrix:custom"], "matrix:custom needs env_args.payoff"),
        (["train", "--env", "matrix:custom", "env_args.payoff=[1, 2]"], "one axis per agent"),
        (["train", "--env", "matrix:table1", "env_args.colour=3"], "not understood by matrix:table1"),
        (["compare", "--algs", "me_qmix,foo"], "unknown variant(s) ['foo']; allowed: me_qmix"),
        # issue 16: non-finite and degenerate inputs name the key, before training starts
        (["train", "lr=nan"], "config key 'lr' must be a finite number, got 'nan'"),
        (["train", "lr=.inf"], "config key 'lr' must be a finite number, got inf"),
        (["train", "grad_clip=.inf"], "config key 'grad_clip' must be a finite number"),
        (["train", "alpha_lr=-.inf"], "config key 'alpha_lr' must be a finite number"),
        (["train", "--seed", "-1"], "config key 'seed' must be >= 0"),
        (["train", "--env", "matrix:custom", "env_args.payoff=[[1, .nan], [0, 1]]"],
         "env_args.payoff entries must be finite float32 numbers"),
        (["train", "--env", "matrix:custom", "env_args.payoff=[[1, .inf], [0, 1]]"],
         "env_args.payoff entries must be finite float32 numbers"),
        (["train", "--env", "matrix:custom", "env_args.payoff=[[1, 1e39], [0, 1]]"],
         "env_args.payoff entries must be finite float32 numbers (|x| <= 3.4e38), got 1e+39"),
        (["train", "--env", "matrix:custom", "env_args.payoff=[[3]]"],
         "env_args.payoff needs >= 2 actions per agent (axis length), got shape (1, 1)"),
        (["train", "--env", "matrix:custom", "env_args.payoff=[[]]"],
         "env_args.payoff needs >= 2 actions per agent (axis length), got shape (1, 0)"),
        # issue 41: counters are int32 and seeds 32-bit PRNG seeds; refused before compiling
        (["train", "t_max=1000000000000000000"],
         "config key 't_max' must be at most 2147483647 (the program counts in int32)"),
        (["train", "t_max=3000000000"], "config key 't_max' must be at most 2147483647"),
        (["train", "t_max=2147483647"],
         "config key 't_max' must be at most 2147483644 on this scenario with n_envs=4"),
        (["train", "test_interval=2147483648"], "config key 'test_interval' must be at most"),
        (["train", "--seed", "99999999999999999999"],
         "config key 'seed' must be at most 4294967295 with seeds=1"),
        (["train", "--seed", "4294967295", "--seeds", "2"],
         "config key 'seed' must be at most 4294967294 with seeds=2"),
    ],
)
def test_user_errors_are_one_line(argv, expected, capfd, tmp_path):
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)] if argv[0] == "train" else argv) == 2
    line = error_line(capfd)
    assert expected in line
    assert line.startswith(f"meigm {argv[0]}: error:")
    assert not out.exists()  # refused before anything is written


def test_argparse_errors_are_one_line(capfd):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--seeds", "many"])
    assert exc.value.code == 2
    assert "invalid int value: 'many'" in error_line(capfd)
    with pytest.raises(SystemExit):
        main(["frobnicate"])
    assert "invalid choice: 'frobnicate'" in error_line(capfd)


def test_corrupt_preset_is_one_line(tmp_path, capfd):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    assert main(["train", "--preset", str(bad)]) == 2
    assert "is not valid YAML" in error_line(capfd)
    listing = tmp_path / "list.yaml"
    listing.write_text("- lr\n- 0.1\n")
    assert main(["train", "--preset", str(listing)]) == 2
    assert "must be a mapping" in error_line(capfd)


def test_help_and_subprocess_exit_status():
    out = subprocess.run([sys.executable, "-m", "meigm.experiments.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for word in ("train", "compare", "envs", "key=value"):
        assert word in out
    bad = subprocess.run([sys.executable, "-m", "meigm.experiments.cli", "train", "--alg", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "meigm train: error: unknown algorithm 'nope'; "
        "allowed: me_qmix, me_qplex, me_vdn, soft_qmix, qmix, qplex, vdn, fop, mappo, ippo, hasac"
    ]


def test_envs_lists_the_matrix_games(capfd):
    assert main(["envs"]) == 0
    out = capfd.readouterr().out
    for name in ("matrix:table1", "matrix:climbing", "matrix:penalty", "matrix:custom"):
        assert name in out


def test_train_writes_a_complete_run_directory_and_never_overwrites(tmp_path, capfd):
    preset = tmp_path / "p.yaml"
    preset.write_text("alg: me_vdn\nlr: 5e-4\n")
    out = tmp_path / "run"
    argv = ["train", "--env", "matrix:table1", "--seeds", "2", "--preset", str(preset),
            "--out", str(out), "--no-progress", *RUN]
    assert main(argv) == 0
    printed = capfd.readouterr().out
    assert "learned Q_tot" in printed and "π_1" in printed and "greedy (" in printed

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["alg"] == "me_vdn" and cfg["lr"] == 5e-4 and cfg["seeds"] == 2
    assert cfg["t_max"] == 200 and cfg["mixer"] == "vdn"  # resolved
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["seed"] for r in lines} == {0, 1}
    assert max(r["t_env"] for r in lines) == 200
    assert all("test/return" in r and "train/alpha" in r for r in lines)
    results = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in results["final"]] == [0, 1]
    assert len(results["first_step"]["per_seed"]) == 2
    assert 0.0 <= results["first_step"]["fraction_optimal"] <= 1.0
    tensors = load_file(str(out / "checkpoints" / "final.safetensors"))
    kernel = tensors["params/agent/params/fc1/kernel"]
    assert kernel.shape[0] == 2  # leading seed axis
    assert "target_params/mixer/params" not in tensors  # VDN has no mixer parameters

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(argv) == 2
    assert "already holds a run" in error_line(capfd)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_compare_writes_a_summary(tmp_path, capfd):
    out = tmp_path / "cmp"
    assert main(["compare", "--algs", "vdn,+entropy", "--seeds", "2", "--out", str(out),
                 "--no-progress", *RUN]) == 0
    printed = capfd.readouterr().out
    assert "optimal joint action in" in printed
    summary = json.loads((out / "comparison.json").read_text())
    assert set(summary["variants"]) == {"vdn", "+entropy"}
    assert summary["variants"]["+entropy"]["alg"] == "me_qmix"
    assert summary["variants"]["+entropy"]["overrides"] == ["transform=none"]
    assert len(summary["variants"]["vdn"]["greedy_joint_actions"]) == 2
    cfg = yaml.safe_load((out / "plus_entropy" / "config.yaml").read_text())
    assert cfg["transform"] == "none"


def test_the_table1_view_of_a_non_square_game_shows_only_real_actions(tmp_path, capfd):
    """Issue 16: agent 1 has 2 actions, agent 2 has 3; the padded third action of agent 1
    must appear neither in the learned Q_tot (2 x 3) nor in π_1."""
    out = tmp_path / "run"
    assert main(["train", "--env", "matrix:custom", "--alg", "me_qmix", "--seeds", "2",
                 "--out", str(out), "--no-progress", *RUN,
                 "env_args.payoff=[[5,0,-1],[0,1,9]]"]) == 0
    printed = capfd.readouterr().out
    pi_1 = [line for line in printed.splitlines() if "π_1:" in line]
    assert pi_1 and all("C:" not in line and "B:" in line for line in pi_1)
    assert all("C:" in line for line in printed.splitlines() if "π_2:" in line)
    view = json.loads((out / "results.json").read_text())["first_step"]
    for seed in view["per_seed"]:
        assert seed["actions"] == [["A", "B"], ["A", "B", "C"]]
        assert len(seed["q_tot"]) == 2 and all(len(row) == 3 for row in seed["q_tot"])
        assert [len(p) for p in seed["policy"]] == [2, 3]
        assert [len(q) for q in seed["q_local"]] == [2, 3]
        assert seed["greedy"][0] in (0, 1)


def test_a_failed_start_does_not_block_the_corrected_command(tmp_path, capfd):
    """Issue 16: a run that diverges before its first evaluation leaves only its config;
    the corrected command takes the directory over. A run that has evaluated is never
    taken over, and the refusal says how to continue it."""
    out = tmp_path / "run"
    base = ["train", "--env", "matrix:table1", "--seeds", "2", "--out", str(out), "--no-progress",
            *RUN]
    assert main([*base, "lr=1e30"]) == 2
    assert "training diverged" in error_line(capfd)
    assert (out / "config.yaml").is_file() and not (out / "results.json").exists()
    assert main(base) == 0
    assert f"reusing {out}" in capfd.readouterr().out
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] != 1e30
    assert (out / "results.json").is_file()

    (out / "results.json").unlink()  # now: an unfinished run with evaluations
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(base) == 2
    assert f"or continue it with `meigm train --resume {out}`" in error_line(capfd)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_overrides_after_flags_and_no_update_metrics_before_learning(tmp_path):
    """Issue 16: key=value may follow a flag; and a row logged before learning started
    (8 episodes in the buffer, batch_size 16) has no α or loss rather than zeros."""
    out = tmp_path / "run"
    argv = ["train", "--env", "matrix:table1", "--seeds", "2", "--no-progress", *TINY,
            "--out", str(out), "t_max=48", "test_interval=8"]
    assert main(argv) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["test_interval"] == 8
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    assert first["t_env"] == 8 and first["updates"] == 0
    assert "train/return" in first and "train/alpha" not in first and "train/loss_q" not in first
    assert last["updates"] > 0 and last["train/alpha"] > 0 and "train/loss_q" in last
    with pytest.raises(SystemExit) as exc:  # an unknown flag is still a one-line error
        main(["train", "--bogus", "lr=1e-3"])
    assert exc.value.code == 2


def test_a_closed_pipe_ends_quietly():
    """Issue 16: `meigm envs | head -1` ended in a BrokenPipeError traceback."""
    proc = subprocess.run(f"{sys.executable} -m meigm.experiments.cli envs | head -1", shell=True,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.startswith("scenario")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_help_states_defaults_and_tells_seeds_from_seed(capsys):
    """Issue 16.7: train --help shows its defaults; --seeds is a count, --seed the first
    seed; plot's bootstrap seed has its own name; compare states its default set."""
    for argv in (["train", "--help"], ["compare", "--help"], ["plot", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    text = " ".join(capsys.readouterr().out.split())
    assert "(default me_qmix)" in text and "(default matrix:table1;" in text
    assert "how many independent seeds" in text and "the seeds are S, S+1, ..., S+N-1" in text
    assert "(default 10)" in text  # compare's seed count
    assert "me_qplex" in text and "(default me_qmix,qmix,vdn,me_vdn,+entropy,soft_qmix)" in text
    assert "--bootstrap-seed" in text and "seed of the bootstrap resampling" in text


def test_config_prints_every_key_with_its_source_and_doc(tmp_path, capfd):
    from meigm.config import FIELDS, build

    preset = tmp_path / "p.yaml"
    preset.write_text("batch_size: 64\nlr: 1e-2\n")
    assert main(["config", "--env", "smax:3m", "--preset", str(preset), "--seeds", "3",
                 "lr=5e-4"]) == 0
    out = capfd.readouterr().out
    keys = [line.split(" = ")[0] for line in out.splitlines() if " = " in line
            and not line.startswith(" ")]
    assert keys == list(FIELDS)
    for expected in ("lr = 0.0005    [override]", f"batch_size = 64    [preset {preset}]",
                     "seeds = 3    [--seeds]", "alpha_init = 0.01    [scenario smax:3m]",
                     "length_buckets = 8    [scenario smax:3m]", "gamma = 0.99    [default]",
                     "n_envs = 4    [derived (see the doc)]"):
        assert expected in out, expected
    assert "    Adam learning rate of the agent network and mixer (FOP's and HASAC's critics)." in out
    assert "reward_scale = 10.0    [scenario smax:3m]" in out

    assert main(["config", "--env", "smax:3m", "--yaml", "lr=5e-4"]) == 0
    saved = tmp_path / "resolved.yaml"
    saved.write_text(capfd.readouterr().out)
    again = build(str(saved))
    assert again.lr == 5e-4 and again.alpha_init == 0.01 and again.length_buckets == 8
    assert main(["config", "lr=oops"]) == 2
    assert "config key 'lr' must be float" in error_line(capfd)


@pytest.mark.slow  # CI time: qplex and me_qplex also train in tests/test_training.py
def test_compare_takes_the_qplex_family(tmp_path, capfd):
    out = tmp_path / "cmp"
    assert main(["compare", "--algs", "qplex,me_qplex", "--seeds", "1", "--out", str(out),
                 "--no-progress", *RUN]) == 0
    summary = json.loads((out / "comparison.json").read_text())
    assert {k: v["alg"] for k, v in summary["variants"].items()} == \
        {"qplex": "qplex", "me_qplex": "me_qplex"}


def test_importing_the_environments_keeps_the_callers_stdout_and_prints_nothing():
    """JaxMARL's import chain rebinds ``sys.stdout`` and prints a banner: a capture set up
    before ``import meigm.envs`` (pytest's capsys when a test is the first to import it)
    used to lose everything printed after."""
    code = ("import io, sys; f = io.StringIO(); sys.stdout = f; import meigm.envs; "
            "kept = sys.stdout is f; sys.stdout = sys.__stdout__; print(kept, repr(f.getvalue()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True ''"
