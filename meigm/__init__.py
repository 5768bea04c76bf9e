"""meigm: maximum-entropy cooperative MARL with Individual-Global-Max credit assignment.

The public entry points are :func:`meigm.train.make_train` (the compiled training
program), :mod:`meigm.envs` (scenario registry), :mod:`meigm.learners` (ME-IGM and
its baselines) and the ``meigm`` command line (:mod:`meigm.experiments.cli`).
"""

import os as _os

import jax as _jax


def _synchronous_cpu_dispatch() -> None:
    """Run XLA:CPU computations synchronously.

    With JAX's default asynchronous CPU dispatch, two of our programs in flight at once
    (``init`` then the first training chunk, or a chunk then an evaluation) could
    deadlock: every XLA worker parked on a futex and ``block_until_ready`` never
    returned. On this 2-core machine (jaxlib 0.10.2) 3 of 6 fresh 10-seed runs hung in
    their first chunk; with synchronous dispatch 0 of 8 did (benchmarks/README.md).
    Our programs are long scans, so dispatching synchronously costs nothing measurable.
    ``MEIGM_KEEP_JAX_DEFAULTS=1`` leaves JAX's setting alone.
    """
    if not _os.environ.get("MEIGM_KEEP_JAX_DEFAULTS"):
        _jax.config.update("jax_cpu_enable_async_dispatch", False)


_synchronous_cpu_dispatch()

__version__ = "0.1.0"
