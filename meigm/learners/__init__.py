"""Learners by algorithm name. ``ALGORITHMS`` maps each name to (learner class, mixer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meigm.learners.base import Learner
from meigm.learners.fop import FOP
from meigm.learners.hasac import HASAC
from meigm.learners.me_igm import MEIGM
from meigm.learners.ppo import IPPO, MAPPO, PPO
from meigm.learners.soft_qmix import SoftQMIX
from meigm.learners.value_decomposition import ValueDecomposition

if TYPE_CHECKING:
    from meigm.config import Config
    from meigm.envs import EnvSpec

#: algorithm name -> (learner class, default mixer; None for learners without one)
ALGORITHMS: dict[str, tuple[type, str | None]] = {
    "me_qmix": (MEIGM, "qmix"),
    "me_qplex": (MEIGM, "qplex"),
    "me_vdn": (MEIGM, "vdn"),
    # the authors' released code: Σ_i g_i(Q_i), its own mixer (meigm.learners.soft_qmix)
    "soft_qmix": (SoftQMIX, "sum_g"),
    "qmix": (ValueDecomposition, "qmix"),
    "qplex": (ValueDecomposition, "qplex"),
    "vdn": (ValueDecomposition, "vdn"),
    "fop": (FOP, "fop"),  # its own attention mixer (meigm.learners.fop.FOPMixer)
    "mappo": (MAPPO, None),
    "ippo": (IPPO, None),
    "hasac": (HASAC, None),  # a centralised joint-action critic, no mixer
}


def make_learner(cfg: Config, spec: EnvSpec) -> Learner:
    cls, _ = ALGORITHMS[cfg.alg]
    return cls(cfg, spec)


__all__ = ["ALGORITHMS", "FOP", "HASAC", "IPPO", "MAPPO", "MEIGM", "PPO", "Learner", "SoftQMIX",
           "ValueDecomposition", "make_learner"]
