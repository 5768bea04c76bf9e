"""Every SMAX race scenario builds and takes one update with every algorithm of the
paper's Table 2, at tiny sizes (issue 44). Slow (about 120 compilations): run it with
``pytest -m slow tests/test_race_smoke.py`` after touching a learner or the races."""

from __future__ import annotations

import numpy as np
import pytest

from meigm import config
from meigm.envs.smax import RACE_SCENARIOS
from meigm.experiments.run import train_run

#: The algorithms of the paper's Table 2.
TABLE2 = ("mappo", "ippo", "qmix", "qplex", "fop", "hasac", "me_qmix", "me_qplex")
TINY_ONE_UPDATE = [
    "hidden_dim=8", "mixing_embed=4", "hypernet_embed=8", "opt_hidden=4", "critic_hidden=8",
    "n_envs=2", "batch_size=2", "buffer_size=4", "length_buckets=1", "length_groups=1",
    "ppo_minibatches=1", "ppo_epochs=1",
    # one collection of two episodes, then one round of updates and one greedy episode
    "t_max=1", "test_interval=1", "test_episodes=1", "checkpoint_interval=0",
]


@pytest.mark.slow
@pytest.mark.parametrize("alg", TABLE2)
@pytest.mark.parametrize("scenario", sorted(RACE_SCENARIOS))
def test_every_race_takes_an_update_with_every_algorithm(scenario, alg):
    cfg = config.build(None, TINY_ONE_UPDATE, alg=alg, env=f"smax:{scenario}", seeds=1)
    results = train_run(cfg, progress=False, echo=lambda _: None)
    (row,) = results["history"]
    assert row["updates"] >= 1, row  # it learned, not only collected
    losses = {k: v for k, v in row.items() if k.startswith("train/loss")}
    assert losses and all(np.isfinite(v) for v in losses.values()), row
    assert 0.0 <= row["test/won"] <= 1.0
