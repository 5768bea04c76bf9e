"""End-to-end behaviour of the compiled training program.

Guards what the rest of the library builds on: vmapped seeds are independent (own
initialisation and key stream) yet reproducible, a vmapped seed trains like the same
seed alone, every ME-IGM variant with an OPT has zero misalignment between its local
policies and the learned ``Q_tot`` (the paper's central claim, checked by enumerating
joint actions), and small learning problems are actually solved.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import TINY

from meigm import config
from meigm.envs import make_env
from meigm.experiments.diagnostics import first_step_view, is_misaligned, joint_actions
from meigm.experiments.logging import without_clock
from meigm.experiments.run import train_run
from meigm.learners import make_learner
from meigm.program import init_seeds, make_program, seed_keys

SHORT = [*TINY, "t_max=400", "test_interval=200"]


def _cfg(alg: str, env: str = "matrix:table1", seeds: int = 2, extra: tuple[str, ...] = ()):
    return config.build(None, [*SHORT, *extra], alg=alg, env=env, seeds=seeds)


@pytest.fixture(scope="module")
def me_qmix_runs():
    """The same 2-seed config twice, and seed 1 alone."""
    a = train_run(_cfg("me_qmix"), progress=False)
    b = train_run(_cfg("me_qmix"), progress=False)
    alone = train_run(_cfg("me_qmix", seeds=1, extra=("seed=1",)), progress=False)
    return a, b, alone


def test_joint_actions_enumerates_row_major():
    j = np.asarray(joint_actions(2, 3))
    assert j.shape == (9, 2)
    assert j[:4].tolist() == [[0, 0], [0, 1], [0, 2], [1, 0]]
    assert len({tuple(r) for r in j}) == 9


def test_seeds_have_own_initialisation_and_key_stream():
    cfg = _cfg("me_qmix").resolve(20_000)
    trainer = make_program(cfg).trainer
    state = init_seeds(trainer.init, seed_keys(cfg))
    kernel = np.asarray(state.learner.params["agent"]["params"]["fc1"]["kernel"])  # [seeds, ...]
    assert not np.allclose(kernel[0], kernel[1])
    keys = np.asarray(state.key)
    assert not np.array_equal(keys[0], keys[1])


def test_same_seed_reproduces_and_seeds_differ(me_qmix_runs):
    a, b, _ = me_qmix_runs
    # bit-for-bit on CPU, the wall clock aside
    assert [without_clock(r) for r in a["history"]] == [without_clock(r) for r in b["history"]]
    by_seed = {s: [r for r in a["history"] if r["seed"] == s] for s in (0, 1)}
    losses = [[r["train/loss_q"] for r in by_seed[s]] for s in (0, 1)]
    assert losses[0] != losses[1]


def test_vmapped_seed_trains_like_the_seed_alone(me_qmix_runs):
    a, _, alone = me_qmix_runs
    in_group = [r for r in a["history"] if r["seed"] == 1]
    solo = alone["history"]
    assert len(in_group) == len(solo)
    for x, y in zip(in_group, solo, strict=True):
        assert x["t_env"] == y["t_env"]
        np.testing.assert_allclose(x["train/loss_q"], y["train/loss_q"], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(x["train/alpha"], y["train/alpha"], rtol=1e-4)


def test_run_reports_the_table1_view(me_qmix_runs):
    view = me_qmix_runs[0]["first_step"]
    assert view["optimum"] == [0, 0]
    assert len(view["per_seed"]) == 2
    for entry in view["per_seed"]:
        assert np.asarray(entry["q_tot"]).shape == (3, 3)
        np.testing.assert_allclose(np.sum(entry["policy"], axis=-1), 1.0, atol=1e-3)
        assert entry["greedy_is_optimal"] == (entry["greedy"] == [0, 0])


# ---------------------------------------------------------------- misalignment
OPT_VARIANTS = {"me_qmix": (), "me_qmix-opt1": ("opt_layers=1",), "me_vdn": (), "me_qplex": ()}


def _views(variant: str, env: str, seeds: int, params=None):
    alg = variant.split("-")[0]
    cfg = _cfg(alg, env=env, seeds=seeds, extra=OPT_VARIANTS.get(variant, ())).resolve(20_000)
    e = make_env(cfg.env, cfg.env_args)
    learner = make_learner(cfg, e.spec)
    if params is None:
        params = _init_params(learner, seed_keys(cfg))
    return jax.device_get(
        jax.jit(jax.vmap(lambda p: first_step_view(learner, e, p, jax.random.PRNGKey(0))))(params)
    )


def _init_params(learner, keys):
    """Each seed's initial parameters, as a run initialises them (seed by seed, no batched
    QR), from one compiled single-seed init called per key: many seeds cost one compile,
    where init_seeds unrolls a copy per seed into its program."""
    init = jax.jit(lambda k: learner.init(k).params)
    return jax.tree.map(lambda *xs: np.stack(xs), *[init(k) for k in keys])


def _misaligned(views) -> np.ndarray:
    return is_misaligned(views["igm_gap"], views["q_tot"])


def _assert_aligned(views, what) -> None:
    assert not _misaligned(views).any(), (what, views["igm_gap"])
    # Execution (argmax Q_i) and the policies' mode reach the same local values.
    q_local = np.asarray(views["q_local"])
    q_mode = np.take_along_axis(q_local, np.asarray(views["policy_mode"])[..., None], -1)[..., 0]
    np.testing.assert_allclose(q_mode, q_local.max(-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", list(OPT_VARIANTS))
@pytest.mark.parametrize("env", ["matrix:table1", "matrix:climbing", "matrix:penalty"])
def test_me_igm_has_zero_misalignment_at_initialisation(variant, env):
    """argmax of the joint local-policy probability == argmax of enumerated Q_tot,
    for 32 random initialisations."""
    _assert_aligned(_views(variant, env, 32), (variant, env))


@pytest.mark.parametrize("variant", list(OPT_VARIANTS))
def test_me_igm_has_zero_misalignment_after_training(variant, me_qmix_runs):
    if variant == "me_qmix":
        results = me_qmix_runs[0]
    else:
        alg = variant.split("-")[0]
        results = train_run(_cfg(alg, extra=OPT_VARIANTS[variant]), progress=False)
    views = _views(variant, "matrix:table1", 2, params=results["final_params"])
    _assert_aligned(views, variant)
    assert results["first_step"]["misaligned_seeds"] == 0


def test_me_igm_logs_an_igm_gap_of_exactly_zero(me_qmix_runs):
    """Figure 2's metric, logged at every evaluation point: the OPT keeps the policies'
    argmaxes equal to the ``Q_i``' argmaxes, so the gap is exactly 0, not just small."""
    gaps = [rec["train/igm_gap"] for rec in me_qmix_runs[0]["history"]]
    assert gaps and all(g == 0.0 for g in gaps)


def test_misalignment_check_catches_an_unconstrained_transform():
    """The Table 4 MLP in the OPT's place has no order guarantee: at random
    initialisation some seeds' policies disagree with Q_tot, so the check above can fail."""
    cfg = _cfg("me_qmix", seeds=32, extra=("transform=mlp",)).resolve(20_000)
    e = make_env(cfg.env)
    learner = make_learner(cfg, e.spec)
    params = _init_params(learner, seed_keys(cfg))
    views = jax.device_get(
        jax.jit(jax.vmap(lambda p: first_step_view(learner, e, p, jax.random.PRNGKey(0))))(params)
    )
    assert _misaligned(views).any()


# ---------------------------------------------------------------- learning
@pytest.mark.parametrize("alg", ["vdn", "qmix", "qplex", "me_vdn", "me_qmix", "me_qplex"])
def test_learns_a_monotonic_coordination_game(alg):
    """On a game every IGM mixer can represent, every algorithm finds the optimum."""
    cfg = config.build(
        None,
        [*TINY, "t_max=1600", "test_interval=800", "env_args.payoff=[[0,1,0],[1,4,1],[0,1,0]]"],
        alg=alg, env="matrix:custom", seeds=3,
    )
    view = train_run(cfg, progress=False)["first_step"]
    assert view["fraction_optimal"] == 1.0
    np.testing.assert_allclose(
        [np.asarray(e["q_tot"])[1, 1] for e in view["per_seed"]], 4.0, atol=0.5
    )


@pytest.mark.slow
@pytest.mark.parametrize("alg", ["me_qmix", "me_vdn"])
def test_table1_default_budget_has_zero_misalignment(alg):
    """The must-show run itself: 10 seeds, default budget and hyper-parameters."""
    cfg = config.build(None, [], alg=alg, env="matrix:table1", seeds=10)
    view = train_run(cfg, progress=False)["first_step"]
    assert view["misaligned_seeds"] == 0, [e["igm_gap"] for e in view["per_seed"]]


# ---------------------------------------------------------------- reward scale
def test_reward_scale_learns_the_scaled_game_and_reports_the_scenario_units():
    """``reward_scale=k`` on a game trains exactly like the same game with every payoff
    times k (same seed: same losses, targets and Q-values, bit for bit), while returns
    stay in the game's own units: the scale is a learning choice, never a metric change."""
    table1 = [[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]]
    tenfold = [[10 * x for x in row] for row in table1]

    def run(payoff, scale):
        cfg = config.build(None, [*SHORT, f"env_args.payoff={payoff}", f"reward_scale={scale}"],
                           alg="qmix", env="matrix:custom", seeds=2)
        return train_run(cfg, progress=False)["history"]

    scaled, big = run(table1, 10), run(tenfold, 1)
    assert len(scaled) == len(big) > 0
    for a, b in zip(scaled, big, strict=True):
        for key in ("train/loss_q", "train/q_tot", "train/target", "t_env"):
            assert a[key] == b[key], key
        # the scaled run reports the game's returns: the big game's, divided by 10
        np.testing.assert_allclose(a["train/return"], b["train/return"] / 10, rtol=1e-6)
        np.testing.assert_allclose(a["test/return"], b["test/return"] / 10, rtol=1e-6)
    assert any(r["train/loss_q"] > 0 for r in scaled)


def test_reward_scale_must_be_positive():
    with pytest.raises(config.ConfigError, match="reward_scale"):
        config.build(None, ["reward_scale=0"])
