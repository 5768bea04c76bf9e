"""meigm: maximum-entropy cooperative MARL with Individual-Global-Max credit assignment.

The public entry points are :func:`meigm.train.make_train` (the compiled training
program), :mod:`meigm.envs` (scenario registry), :mod:`meigm.learners` (ME-IGM and
its baselines) and the ``meigm`` command line (:mod:`meigm.experiments.cli`).
"""

__version__ = "0.1.0"
