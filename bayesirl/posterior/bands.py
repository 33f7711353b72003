"""The equal-tailed credible interval of posterior draws: the one home of its quantile pair.

Every credible band in the package (a posterior's ``credible_interval``, a continuous reward
band, a counterfactual's band, the reward plots' error bars and width maps) is this interval,
so they agree on the level's meaning, on interpolation and on what a bad level is.
"""

from __future__ import annotations

import torch

from bayesirl._validation import check_int, check_probability

__all__ = ["equal_tailed_interval"]

# torch.quantile refuses an input of more than 2**24 elements; columns are taken in blocks of
# at most half that
_QUANTILE_BLOCK = 2 ** 23


def equal_tailed_interval(draws: torch.Tensor, prob: float = 0.9,
                          dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)``: the ``(1 - prob) / 2`` and ``(1 + prob) / 2`` quantiles of
    ``draws`` over dimension ``dim`` (the draws).

    Args:
        draws: a floating tensor ``(..., D, ...)`` with its ``D >= 1`` draws along ``dim``.
        prob: the interval's probability, a number in the open interval (0, 1).
        dim: the dimension of the draws (negative counts from the end).

    Returns:
        ``lower`` and ``upper``, each of ``draws``' shape without ``dim``, in its dtype and on
        its device. Quantiles interpolate linearly between order statistics (the default of
        ``torch.quantile`` and ``numpy.quantile``), so ``lower <= median <= upper``
        elementwise, and the interval widens as ``prob`` grows; it brackets the median, not
        necessarily the mean.

    Raises:
        ValueError: ``prob`` is not a finite number in (0, 1) (bools included), ``dim`` is
            out of range, or there is no draw along ``dim``.
        TypeError: ``draws`` is not a floating-point tensor.
    """
    prob = check_probability("prob", prob, open_low=True, open_high=True)
    if not isinstance(draws, torch.Tensor) or not draws.dtype.is_floating_point:
        what = (f"a tensor of dtype {draws.dtype}" if isinstance(draws, torch.Tensor)
                else type(draws).__name__)
        raise TypeError(f"draws must be a floating tensor, got {what}")
    if draws.dim() == 0:
        raise ValueError("draws must have at least one dimension (the draws), got a scalar")
    dim = check_int("dim", dim, low=-draws.dim(), high=draws.dim() - 1)
    if draws.shape[dim] < 1:
        raise ValueError(f"draws must have at least one draw along dim {dim}, got shape "
                         f"{tuple(draws.shape)}")
    q = torch.tensor([(1 - prob) / 2, (1 + prob) / 2], dtype=draws.dtype, device=draws.device)
    x = draws.movedim(dim, 0)
    rest = x.shape[1:]
    flat = x.reshape(x.shape[0], -1)  # (D, entries)
    if flat.shape[1] == 0:
        empty = flat.new_empty(rest)
        return empty, empty.clone()
    step = max(1, _QUANTILE_BLOCK // flat.shape[0])
    lower, upper = torch.cat([torch.quantile(flat[:, i:i + step], q, dim=0)
                              for i in range(0, flat.shape[1], step)], -1)
    return lower.reshape(rest), upper.reshape(rest)
