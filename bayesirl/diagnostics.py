"""Public namespace ``bayesirl.diagnostics``: convergence checks and simulation-based calibration.

A facade only: the checks live in :mod:`bayesirl.posterior.diagnostics` (a leaf over ArviZ) and
calibration in :mod:`bayesirl.sbc` (which runs inference). Nothing inside the package imports
this module, so gathering both here makes no import cycle.
"""

from bayesirl.posterior.diagnostics import (
    BFMI_MIN,
    ESS_MIN,
    RHAT_MAX,
    ConvergenceError,
    InferenceWarning,
    check_convergence,
    convergence_problems,
)
from bayesirl.sbc import SBCResult, rank_uniformity, sbc

__all__ = [
    "BFMI_MIN",
    "ESS_MIN",
    "RHAT_MAX",
    "ConvergenceError",
    "InferenceWarning",
    "SBCResult",
    "check_convergence",
    "convergence_problems",
    "rank_uniformity",
    "sbc",
]
