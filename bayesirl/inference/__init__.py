"""Inference layer: ``infer()`` and what it runs on.

- :mod:`~bayesirl.inference.facade`: ``infer()`` (validate, build the target, dispatch);
- :mod:`~bayesirl.inference.target`: the :class:`~bayesirl.inference.target.InferenceTarget`
  protocol, the capabilities a target may declare, and the reward-space target;
- :mod:`~bayesirl.inference.value_space`: tabular rewards sampled through their values;
- :mod:`~bayesirl.inference.refraction`: NUTS across the jumps of a piecewise potential;
- :mod:`~bayesirl.inference.mcmc` (NUTS/HMC chains), :mod:`~bayesirl.inference.svi`,
  :mod:`~bayesirl.inference.map` (MAP, standard errors, Laplace);
- :mod:`~bayesirl.inference.executors`: where chains run (processes, any Executor, Ctrl-C);
- :mod:`~bayesirl.inference.pyro_nuts`: the only module touching Pyro's private internals.
"""

from bayesirl.inference.facade import METHODS, infer

__all__ = ["METHODS", "infer"]
