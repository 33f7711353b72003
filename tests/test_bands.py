"""equal_tailed_interval, the one home of the equal-tailed credible interval: its shapes,
its values against torch.quantile, the dimension of the draws, and the levels it refuses."""

import math
import re

import numpy as np
import pytest
import torch

import bayesirl.posterior.bands as bands
from bayesirl.posterior.bands import equal_tailed_interval


def _draws(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("shape, dim, out", [
    ((50,), 0, ()),
    ((50, 3), 0, (3,)),
    ((50, 3, 2), 0, (3, 2)),
    ((4, 50, 3), 1, (4, 3)),
    ((4, 3, 50), -1, (4, 3)),
])
def test_the_interval_drops_the_dimension_of_the_draws(shape, dim, out):
    lo, hi = equal_tailed_interval(_draws(*shape), 0.9, dim=dim)
    assert lo.shape == hi.shape == out


@pytest.mark.parametrize("prob", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("dim", [0, 1, 2, -2])
def test_the_interval_is_torch_quantile_at_the_two_tails(prob, dim):
    draws = _draws(7, 40, 5)
    lo, hi = equal_tailed_interval(draws, prob, dim=dim)
    ref_lo, ref_hi = torch.quantile(draws, torch.tensor([(1 - prob) / 2, (1 + prob) / 2],
                                                        dtype=draws.dtype), dim=dim)
    assert torch.equal(lo, ref_lo) and torch.equal(hi, ref_hi)


def test_the_interval_matches_numpys_default_quantile_and_brackets_the_median():
    draws = _draws(200, 6)
    lo, hi = equal_tailed_interval(draws, 0.8)
    ref = np.quantile(draws.numpy(), [0.1, 0.9], axis=0)
    np.testing.assert_allclose(lo.numpy(), ref[0], rtol=1e-12)
    np.testing.assert_allclose(hi.numpy(), ref[1], rtol=1e-12)
    median = draws.median(0).values
    assert (lo <= median).all() and (median <= hi).all()
    lo50, hi50 = equal_tailed_interval(draws, 0.5)
    assert (lo <= lo50).all() and (hi50 <= hi).all()  # wider as prob grows


def test_the_interval_keeps_the_dtype_and_device_of_the_draws():
    draws = _draws(30, 4, dtype=torch.float32)
    lo, hi = equal_tailed_interval(draws)
    assert lo.dtype == hi.dtype == torch.float32
    assert lo.device == hi.device == draws.device
    ref = torch.quantile(draws, torch.tensor([0.05, 0.95], dtype=torch.float32), dim=0)
    assert torch.equal(lo, ref[0]) and torch.equal(hi, ref[1])


def test_one_draw_is_its_own_interval_and_no_entries_give_empty_bounds():
    draws = _draws(1, 3)
    lo, hi = equal_tailed_interval(draws, 0.9)
    assert torch.equal(lo, draws[0]) and torch.equal(hi, draws[0])
    lo, hi = equal_tailed_interval(torch.zeros(5, 0, 2), 0.9)
    assert lo.shape == hi.shape == (0, 2)


def test_columns_beyond_torch_quantiles_size_cap_are_taken_in_blocks(monkeypatch):
    draws = _draws(9, 4, 5)
    whole = equal_tailed_interval(draws, 0.9, dim=1)
    monkeypatch.setattr(bands, "_QUANTILE_BLOCK", 8)  # two columns of 4 draws per block
    blocked = equal_tailed_interval(draws, 0.9, dim=1)
    assert torch.equal(whole[0], blocked[0]) and torch.equal(whole[1], blocked[1])


@pytest.mark.parametrize("prob", [0, 0.0, 1, 1.0, -0.1, 1.5, math.nan, math.inf, True, False,
                                  "0.9", None])
def test_a_level_outside_the_open_unit_interval_is_refused_by_value(prob):
    with pytest.raises(ValueError, match=rf"prob is {re.escape(repr(prob))}, expected a "
                                         r"number in \(0, 1\)"):
        equal_tailed_interval(_draws(10, 2), prob)


def test_numpy_levels_are_numbers():
    lo, hi = equal_tailed_interval(_draws(10, 2), np.float64(0.9))
    ref = equal_tailed_interval(_draws(10, 2), 0.9)
    assert torch.equal(lo, ref[0]) and torch.equal(hi, ref[1])


def test_draws_that_are_not_a_floating_tensor_or_have_no_draw_are_refused():
    with pytest.raises(TypeError, match="draws must be a floating tensor, got ndarray"):
        equal_tailed_interval(np.zeros((3, 2)))
    with pytest.raises(TypeError, match="got a tensor of dtype torch.int64"):
        equal_tailed_interval(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one draw along dim 0"):
        equal_tailed_interval(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="at least one dimension"):
        equal_tailed_interval(torch.tensor(1.0))
    with pytest.raises(ValueError, match="dim is 2, expected an integer"):
        equal_tailed_interval(torch.zeros(3, 2), dim=2)
