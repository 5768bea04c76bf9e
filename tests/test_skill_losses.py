"""benchmarks/skill_losses.py: replays of one start and where a policy's losses come from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meigm.experiments.evaluate import load_run

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "skill_losses.py"
_spec = importlib.util.spec_from_file_location("skill_losses", _PATH)
skill_losses = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(skill_losses)

def test_action_summary_by_hand():
    # 2 episodes (won, lost) x 2 steps x 3 allies, 2 enemies; SMAX's 5 movement slots
    # (4 moves, then stop), attacks on enemy j are 5 + j.
    act = np.array([[[5, 5, 0], [6, 5, 0]],
                    [[4, 1, 2], [0, 0, 0]]])
    acting = np.array([[[1, 1, 1], [1, 1, 0]],
                       [[1, 1, 1], [0, 0, 0]]], bool)
    in_range = np.zeros((2, 2, 3, 2), bool)
    in_range[0] = True  # episode 0: every ally has both enemies in range
    in_range[1, 0, 0] = True  # episode 1: only ally 0, at its first step
    health = np.array([[[10.0, 20.0], [10.0, 5.0]], [[30.0, 30.0], [30.0, 30.0]]])
    r = skill_losses.action_summary({"act": act, "acting": acting, "in_range": in_range,
                                     "enemy_health": health}, np.array([1.0, 0.0]), n_moves=5)
    # Six ally-steps with an enemy in range: four shots, one move (act 0), one stop (act 4);
    # the move with no enemy in range (episode 1, ally 1) does not count.
    assert r["shoot_in_range"] == pytest.approx(4 / 6)
    assert r["move_in_range"] == pytest.approx(1 / 6)
    assert r["stop_in_range"] == pytest.approx(1 / 6)
    assert r["move_in_range_won"] == pytest.approx(1 / 5) and r["move_in_range_lost"] == 0.0
    # Two steps with two shooters: one on a single target, one split.
    assert r["focus"] == pytest.approx(0.5)
    # Shots at the weakest enemy in range: both at step 0 (10 < 20), one of two at step 1.
    assert r["weakest"] == pytest.approx(3 / 4)


def test_replay_summary_by_hand():
    # 4 starts x 4 replays: always won, always lost, won 3 of 4, won 1 of 4.
    won = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1], [0, 1, 0, 0]])
    r = skill_losses.replay_summary(won)
    assert r["win_rate"] == pytest.approx(8 / 16)
    assert r["always_won"] == r["always_lost"] == pytest.approx(0.25)
    assert r["mixed"] == pytest.approx(0.5)
    # 8 lost episodes, 4 of them on the always-lost start.
    assert r["loss_from_always_lost"] == pytest.approx(0.5)
    # Each start its likelier way: starts 0 and 2 won, 1 and 3 lost.
    assert r["majority"] == pytest.approx(0.5)


def test_replay_summary_ties_count_half():
    r = skill_losses.replay_summary(np.array([[1, 0], [1, 1]]))
    assert r["majority"] == pytest.approx(0.75)
    assert r["loss_from_always_lost"] == 0.0


@given(arrays(np.int8, st.tuples(st.integers(1, 12), st.integers(1, 9)), elements=st.integers(0, 1)))
def test_replay_summary_shares(won):
    r = skill_losses.replay_summary(won)
    assert r["always_won"] + r["always_lost"] + r["mixed"] == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for v in r.values())
    # Every start won on every replay is counted in the likelier-way score, and no
    # start lost on every replay is.
    assert r["always_won"] <= r["majority"] <= 1.0 - r["always_lost"] + 1e-12
    if won.shape[1] == 1:  # one play per start: no chance to separate from the start
        assert r["mixed"] == 0.0 and r["majority"] == pytest.approx(r["win_rate"])


def test_replays_share_the_start_and_redraw_the_battle(smax_run):
    run = load_run(smax_run)
    key = jax.random.PRNGKey(3)
    start, alive, length, won = skill_losses.play(run, 3, key, replays=4)
    assert start.shape[:3] == (2, 3, 4) and won.shape == (2, 3, 4)
    # Every replay of a start begins from the same positions, and the starts differ.
    np.testing.assert_array_equal(start, np.broadcast_to(start[:, :, :1], start.shape))
    assert not np.allclose(start[0, 0, 0], start[0, 1, 0])
    # The battle's chance is drawn afresh: some replay of some start ends differently.
    assert any(not np.array_equal(length[s, e, 0], length[s, e, r]) or
               not np.array_equal(alive[s, e, 0], alive[s, e, r])
               for s in range(2) for e in range(3) for r in range(1, 4))
    # A single play keeps its own keys (the figures in benchmarks/notes/skill_smax.md); its trace
    # covers the whole episode limit, and no ally acts after its episode's end.
    single = skill_losses.play(run, 3, key)
    assert single[3].shape == (2, 3)
    np.testing.assert_array_equal(single[0], start[:, :, 0])
    *same, steps = skill_losses.play(run, 3, key, trace=True)
    for x, y in zip(same, single, strict=True):
        np.testing.assert_array_equal(x, y)
    assert steps["act"].shape == (2, 3, run.env.spec.episode_limit, 3)
    after_end = np.arange(run.env.spec.episode_limit) >= np.asarray(single[2])[..., None]
    assert not steps["acting"][after_end].any()
    assert steps["acting"][:, :, 0].any()
