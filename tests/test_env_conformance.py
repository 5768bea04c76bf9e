"""Every registered scenario honours the environment contract the learners rely on.

Shapes match the spec, every agent always has an available action, random roll-outs
with available actions give padded episodes whose mask is a prefix, terminal flags
only on the last real step, episodes never exceed the limit, and a fixed key gives
the same episode twice. Parametrised over the registry so new scenarios are covered.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meigm.envs import make_env, registered
from meigm.rollout import random_act, rollout

SCENARIOS = [n for n in registered() if not n.endswith(":custom")]
#: Bigger SMAX maps cost compile time but exercise nothing the small ones don't.
SLOW = {"smax:8m", "smax:3s5z", "smax:5m_vs_6m"}
#: The 10- and 20-unit races: one of each size stays in the default run (compile time;
#: every race also builds and trains in the slow tests/test_race_smoke.py).
SLOW |= {f"smax:{race}_{size}" for race in ("protoss", "terran", "zerg")
         for size in ("10_vs_10", "10_vs_11", "20_vs_20", "20_vs_23")} - {
    "smax:terran_10_vs_11", "smax:zerg_20_vs_23"}


def _dummy_agent(n_actions: int):
    """Stands in for the agent network: zero Q-values, unchanged hidden state."""
    def apply(params, hidden, inputs):
        del params
        return hidden, jnp.zeros((*inputs.shape[:-1], n_actions))

    return apply


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SCENARIOS]
)
def test_scenario_conformance(name):
    env = make_env(name)
    spec = env.spec
    _, ts = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert ts.obs.shape == (spec.n_agents, spec.obs_dim)
    assert ts.state.shape == (spec.state_dim,)
    assert ts.avail.shape == (spec.n_agents, spec.n_actions) and ts.avail.dtype == bool
    assert set(ts.info) == set(spec.info_keys)

    run = jax.jit(lambda k: rollout(env, _dummy_agent(spec.n_actions), None, random_act, None, 4, k, 8))
    ep, stats = run(jax.random.PRNGKey(1))
    ep2, _ = run(jax.random.PRNGKey(1))
    for a, b in zip(jax.tree.leaves(ep), jax.tree.leaves(ep2), strict=True):
        np.testing.assert_array_equal(a, b)  # determinism under a fixed key

    t = spec.episode_limit
    mask = np.asarray(ep.mask)
    assert ep.obs.shape == (8, t + 1, spec.n_agents, spec.obs_dim)
    assert ep.actions.shape == (8, t, spec.n_agents)
    lengths = mask.sum(1)
    assert np.all(lengths >= 1) and np.all(lengths <= t)
    assert np.array_equal(mask, np.arange(t)[None] < lengths[:, None])  # mask is a prefix
    term = np.asarray(ep.terminated)
    assert not np.any(term & ~mask)
    assert np.all(term.sum(1) <= 1)
    last = lengths - 1
    # an episode shorter than the limit ended in a terminal state, on its last real step
    assert np.all(term[np.arange(8), last] | (lengths == t))
    assert np.all(~term.any(1) | term[np.arange(8), last])
    # actions were available when taken, and every agent always had one
    avail = np.asarray(ep.avail)[:, :-1]
    taken = np.take_along_axis(avail, np.asarray(ep.actions)[..., None], -1)[..., 0]
    assert np.all(taken[mask])
    assert np.all(avail.any(-1)[mask])
    np.testing.assert_allclose(np.asarray(stats.returns), np.asarray(ep.reward).sum(1), rtol=1e-5)
