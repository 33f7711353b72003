"""Inference layer: ``infer`` (NUTS/HMC, SVI, MAP) over a target's potential.

A target (``target.Target``, or ``value_space.ValueSpaceTarget``) says what is sampled; the
facade picks the target and the method.
"""

from bayesirl.inference.facade import infer

__all__ = ["infer"]
