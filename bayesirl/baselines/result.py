"""The result type shared by every point-estimate IRL baseline."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

__all__ = ["IRLResult"]


class IRLResult(NamedTuple):
    """A point estimate of the reward and how the algorithm got there.

    Attributes:
        reward: ``(S, A)`` the learned reward (a state reward is broadcast over actions).
        theta: ``(d,)`` weights of the linear reward ``reward = phi . theta`` (bayesirl's sign
            convention: reward weights), or None for nonlinear rewards.
        history: per-iteration diagnostics, each a list of floats, e.g. ``"loss"``,
            ``"grad_norm"``, ``"feature_distance"`` (``|mu_E - mu|_2``) or ``"distance"``.
        info: algorithm-specific extras (e.g. the mixture of policies of the projection method,
            the working set of a max-margin program, ``"converged"``); read-only empty default.
    """

    reward: torch.Tensor
    theta: torch.Tensor | None
    history: dict[str, list[float]]
    info: Mapping[str, Any] = types.MappingProxyType({})
