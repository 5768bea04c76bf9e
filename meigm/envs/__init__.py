"""Scenarios behind one interface (:class:`Env`, :class:`TimeStep`) and a name registry."""

from meigm.envs.base import Env, EnvSpec, EnvState, JaxMARLEnv, TimeStep
from meigm.envs.matrix import PRESETS as MATRIX_PRESETS
from meigm.envs.matrix import MatrixGame
from meigm.envs.registry import make_env, registered

__all__ = [
    "MATRIX_PRESETS",
    "Env",
    "EnvSpec",
    "EnvState",
    "JaxMARLEnv",
    "MatrixGame",
    "TimeStep",
    "make_env",
    "registered",
]
