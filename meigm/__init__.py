"""meigm: maximum-entropy cooperative MARL with Individual-Global-Max credit assignment.

The Python API (see the README)::

    import meigm
    results = meigm.train({"alg": "me_qmix", "env": "matrix:table1", "seeds": 3}, "runs/t1")
    meigm.evaluate("runs/t1")

Also here: :class:`Config` and :mod:`config` (``config.build`` for presets and
``key=value`` overrides), the scenario registry (:func:`make_env`, :func:`registered`),
the learner classes and :func:`make_learner`, :func:`make_program` (config ->
environment, learner and compiled trainer) and the errors. Names are imported on first
use, so ``import meigm`` (and the command line) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "train": "meigm.api",
    "evaluate": "meigm.api",
    "Config": "meigm.config",
    "make_env": "meigm.envs",
    "registered": "meigm.envs",
    "Env": "meigm.envs",
    "EnvSpec": "meigm.envs",
    "Learner": "meigm.learners",
    "MEIGM": "meigm.learners",
    "ValueDecomposition": "meigm.learners",
    "FOP": "meigm.learners",
    "MAPPO": "meigm.learners",
    "IPPO": "meigm.learners",
    "HASAC": "meigm.learners",
    "make_learner": "meigm.learners",
    "ALGORITHMS": "meigm.learners",
    "Program": "meigm.program",
    "make_program": "meigm.program",
    "MeigmError": "meigm.errors",
    "ConfigError": "meigm.errors",
}

__all__ = ["__version__", "config", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "config":
        return importlib.import_module("meigm.config")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'meigm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
