"""meigm: maximum-entropy cooperative MARL with Individual-Global-Max credit assignment.

The public entry points are :func:`meigm.train.make_train` (the compiled training
program), :mod:`meigm.envs` (scenario registry), :mod:`meigm.learners` (ME-IGM and
its baselines) and the ``meigm`` command line (:mod:`meigm.experiments.cli`).
"""

import os as _os

#: XLA:CPU options meigm sets unless the user already chose them (see below).
SAFE_XLA_CPU_FLAGS = {"xla_cpu_use_xnnpack": "false", "xla_cpu_multi_thread_eigen": "false"}


def _safe_xla_cpu_flags() -> None:
    """Keep XLA:CPU away from the thread pools that can wedge our training programs.

    With jaxlib 0.10.2 on a 2-core machine, the vmapped training program hung for ever
    in about one run in ten: every XLA worker parked on a futex and ``block_until_ready``
    never returned. Runs with XNNPACK disabled never hung in our stress runs, while
    runs with it enabled hung with either Eigen setting (benchmarks/README.md has the
    record); single-threaded Eigen is upstream's workaround for a similar wedge on vmap
    graphs. Neither costs measurable speed on our small matmuls. Flags must be set
    before JAX starts its CPU backend; ``MEIGM_KEEP_XLA_FLAGS=1`` leaves ``XLA_FLAGS``
    untouched, and a flag already present in ``XLA_FLAGS`` is never overridden.
    """
    if _os.environ.get("MEIGM_KEEP_XLA_FLAGS"):
        return
    flags = _os.environ.get("XLA_FLAGS", "")
    extra = [f"--{k}={v}" for k, v in SAFE_XLA_CPU_FLAGS.items() if k not in flags]
    if extra:
        _os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


_safe_xla_cpu_flags()

__version__ = "0.1.0"
