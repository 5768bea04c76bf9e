"""Per-example maths shared by every learner: masked policies and TD(λ) targets."""

from meigm.ops.policy import (
    entropy,
    epsilon_greedy,
    mask_logits,
    masked_argmax,
    masked_log_softmax,
    masked_mean,
    policy_mode,
    sample_masked,
    sample_masked_per_step,
)
from meigm.ops.targets import released_lambda_returns, soft_lambda_returns

__all__ = [
    "entropy",
    "epsilon_greedy",
    "mask_logits",
    "masked_argmax",
    "masked_log_softmax",
    "masked_mean",
    "policy_mode",
    "released_lambda_returns",
    "sample_masked",
    "sample_masked_per_step",
    "soft_lambda_returns",
]
