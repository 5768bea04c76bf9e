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


class _TiedLearner:
    """A stand-in ME-IGM learner on a 2-agent, 3-action game whose agent network outputs
    fixed Q-values and whose OPT logits tie agent 0's two best actions in float32, as the
    default two-layer OPT does at Q ≈ -100 (issue 16)."""

    hidden_dim = 4
    mixer = VDN
    Q = np.array([[-100.0, -99.998, -101.0], [1.0, 0.0, 0.0]], np.float32)
    F = np.array([[-33.79131, -33.79131, -40.0], [1.0, 0.0, 0.0]], np.float32)

    class agent:  # stands in for a flax module
        @staticmethod
        def apply(params, hidden, inputs):
            return hidden, jnp.asarray(_TiedLearner.Q)

    def policy_scores(self, params, q, state):
        return jnp.asarray(self.F)

    def policy_log_probs(self, params, q, state, avail):
        from meigm import ops

        return ops.masked_log_softmax(self.policy_scores(params, q, state) / 0.01, avail)


def test_the_table1_view_reads_the_policy_mode_through_float32_ties():
    """The view's policy mode is agent 0's better-Q action (1), not the first tied index,
    and the view's IGM gap is exactly 0."""
    import jax

    from meigm.envs import make_env
    from meigm.experiments.diagnostics import first_step_view

    view = first_step_view(_TiedLearner(), make_env("matrix:table1"), {"agent": None, "mixer": {}},
                           jax.random.PRNGKey(0))
    assert np.asarray(view["greedy"]).tolist() == [1, 0]
    assert np.asarray(view["policy_mode"]).tolist() == [1, 0]
    assert float(view["igm_gap"]) == 0.0
