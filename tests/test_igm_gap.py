"""The IGM-gap diagnostic (Figure 2) on hand-computed examples."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from meigm.learners.common import igm_gap
from meigm.networks import make_mixer

VDN = make_mixer("vdn", 2, 8, 8, 1)


def _gap(q, scores, avail=None, mask=None):
    q = jnp.asarray(q, jnp.float32)[None]  # [B=1, T, N, A]
    scores = jnp.asarray(scores, jnp.float32)[None]
    avail = jnp.ones(q.shape, bool) if avail is None else jnp.asarray(avail)[None]
    t = q.shape[1]
    mask = jnp.ones((1, t)) if mask is None else jnp.asarray(mask, jnp.float32)[None]
    return float(igm_gap(VDN, {}, q, scores, avail, jnp.zeros((1, t, 3)), mask))


def test_gap_is_q_tot_of_greedy_minus_q_tot_of_policy_argmax():
    """VDN, two steps. Step 0: agent 0's policy prefers action 1 (Q 2 vs 5 -> loses 3);
    step 1: both agree with Q -> 0. Mean over the two steps: 1.5."""
    q = [[[5.0, 2.0], [1.0, 0.0]], [[0.0, 1.0], [3.0, 0.0]]]
    scores = [[[0.1, 0.9], [0.8, 0.2]], [[0.3, 0.7], [0.6, 0.4]]]
    np.testing.assert_allclose(_gap(q, scores), 1.5)


def test_aligned_policies_have_exactly_zero_gap_and_padding_is_ignored():
    q = [[[5.0, 2.0], [1.0, 0.0]], [[0.0, 1.0], [3.0, 0.0]]]
    assert _gap(q, q) == 0.0
    scores = [[[5.0, 2.0], [1.0, 0.0]], [[9.0, 0.0], [0.0, 9.0]]]  # disagree at step 1 only
    assert _gap(q, scores, mask=[1.0, 0.0]) == 0.0  # ... which is padding


def test_unavailable_actions_never_count_as_argmax():
    """Agent 0's policy scores its unavailable action 1 highest: ignored, so aligned."""
    q = [[[5.0, 9.0], [1.0, 0.0]]]
    scores = [[[5.0, 99.0], [1.0, 0.0]]]
    avail = [[[True, False], [True, True]]]
    assert _gap(q, scores, avail) == 0.0


def test_logits_tied_by_float32_at_large_q_are_no_misalignment():
    """Issue 16: the two-layer OPT at its default initialisation maps Q = [-100, -99.998]
    to two equal float32 logits. The policy is indifferent between them, so the team's
    greedy action (1) is a mode of its policy: the gap is 0, not the rounding-sized
    Q_tot difference a first-index argmax of the logits would report."""
    q = [[[-100.0, -99.998], [1.0, 0.0]]]
    scores = [[[-33.79131, -33.79131], [1.0, 0.0]]]
    assert _gap(q, scores) == 0.0
