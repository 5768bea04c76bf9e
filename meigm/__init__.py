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
import importlib.metadata
import os
from typing import Any

__version__ = "0.1.0"

#: Appended to ``XLA_FLAGS`` by :func:`cpu_flags` on import.
YNN_REDUCE_OFF = "--xla_cpu_experimental_ynn_fusion_type=-reduce"


def cpu_flags(environ: dict[str, str] | os._Environ = os.environ, jaxlib: str | None = None) -> None:
    """Keep XLA:CPU from handing multiply-reduce fusions to YNNPACK (jaxlib >= 0.10).

    Why: in jaxlib 0.10 such a fusion (the gradient of any broadcast multiply, e.g. the
    two-layer OPT's weights) runs 40-100x slower when an operand has a dimension of size 1,
    which every single-seed program has (the seed ``vmap``): the OPT's backward took 0.44 s
    of a 0.75 s update in ME-QMIX's training loop on Overcooked, and ME-QMIX trained 1.6x
    faster with YNNPACK's reductions off (benchmarks/notes/cpu_ynnpack.md, "A CPU trap: YNNPACK's
    reductions"). XLA's own reduce emitter has no such cliff. A user's own setting of
    the flag is left alone; an older jaxlib, which does not know the flag (and would abort
    on it), gets nothing. XLA reads its flags when JAX starts its first backend, so this
    runs on ``import meigm``, before anything is computed."""
    if "xla_cpu_experimental_ynn_fusion_type" in environ.get("XLA_FLAGS", ""):
        return
    if jaxlib is None:
        try:
            jaxlib = importlib.metadata.version("jaxlib")
        except importlib.metadata.PackageNotFoundError:
            return
    try:
        major_minor = tuple(int(part) for part in jaxlib.split(".")[:2])
    except ValueError:
        return
    if major_minor >= (0, 10):
        environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {YNN_REDUCE_OFF}".strip()


cpu_flags()

#: ``MEIGM_COMPILATION_CACHE``: a directory for compiled programs, or ``off``.
CACHE_ENV = "MEIGM_COMPILATION_CACHE"


def compilation_cache(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Keep compiled programs on disk, so a run compiled once is not compiled again.

    Why: a SMAX race's training program takes 30-90 s to compile on a CPU, and a resume, a
    rerun, a sweep's next seed or ``meigm eval`` compiles the very same program again. JAX's
    persistent compilation cache keys each executable by its program, flags, devices and
    jax version, so a hit is the executable the miss would have built: the numbers do
    not change. The directory is ``$MEIGM_COMPILATION_CACHE`` (``off`` turns the cache
    off), else ``$XDG_CACHE_HOME/meigm/jax`` (``~/.cache/meigm/jax``); one shared by every
    process on the machine, sweep workers included. A user's own
    ``JAX_COMPILATION_CACHE_DIR`` is left alone. JAX reads the variable when it is first
    imported; if it already was, its config is set instead. Returns the directory in use,
    or None."""
    setting = environ.get(CACHE_ENV, "").strip()
    if setting.lower() in ("off", "0", "false", "none"):
        return None
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return environ["JAX_COMPILATION_CACHE_DIR"]
    home = environ.get("XDG_CACHE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".cache")
    path = os.path.abspath(os.path.expanduser(setting or os.path.join(home, "meigm", "jax")))
    environ["JAX_COMPILATION_CACHE_DIR"] = path
    import sys

    if "jax" in sys.modules and environ is os.environ:
        sys.modules["jax"].config.update("jax_compilation_cache_dir", path)
    return path


compilation_cache()

#: public name -> the module that defines it
_EXPORTS = {
    "train": "meigm.api",
    "train_grid": "meigm.api",
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
    "SoftQMIX": "meigm.learners",
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
