"""meigm: maximum-entropy cooperative MARL with Individual-Global-Max credit assignment.

The public entry points are :func:`meigm.train.make_train` (the compiled training
program), :mod:`meigm.envs` (scenario registry), :mod:`meigm.learners` (ME-IGM and
its baselines) and the ``meigm`` command line (:mod:`meigm.experiments.cli`).
"""

import os as _os


def _single_threaded_eigen() -> None:
    """Turn off XLA:CPU's multi-threaded Eigen unless the user chose otherwise.

    With it on, vmapped training programs on the CPU occasionally hang for ever: every
    XLA worker parks on a futex and ``block_until_ready`` never returns (seen here with
    jaxlib 0.10.2 on a 2-core machine; the same wedge is reported upstream for vmap
    graphs, and this flag is the known workaround). Our matmuls are small, so the
    speed cost is small (benchmarks/README.md). It must be set before JAX starts its
    CPU backend; set ``MEIGM_KEEP_XLA_FLAGS=1`` to leave ``XLA_FLAGS`` untouched.
    """
    flags = _os.environ.get("XLA_FLAGS", "")
    if _os.environ.get("MEIGM_KEEP_XLA_FLAGS") or "xla_cpu_multi_thread_eigen" in flags:
        return
    _os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()


_single_threaded_eigen()

__version__ = "0.1.0"
