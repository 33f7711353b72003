"""The one home of argument checks (bayesirl._validation) and the rules it makes uniform."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl._validation import (
    ArgumentTypeError,
    as_tensor,
    check_bool,
    check_finite,
    check_int,
    check_number,
    check_probability,
    float_dtype,
    has_positive_support,
    integer_scalar,
    is_posterior,
    to_numpy,
)


def test_numpy_scalars_are_numbers_so_a_float32_discount_is_accepted():
    mdp = birl.envs.gridworld(size=4, discount=0.9)
    again = mdp.replace(discount=np.float32(0.9))
    assert again.discount == pytest.approx(0.9, abs=1e-7)
    assert birl.envs.gridworld(size=4, discount=np.float32(0.9)).discount == pytest.approx(0.9)
    with pytest.raises(ValueError, match=r"discount is 1.0, expected a number in \[0, 1\)"):
        mdp.replace(discount=1.0)


@pytest.mark.parametrize("value", [2.5, 3.0, "3", True, None, [3]])
def test_check_int_refuses_non_integers_as_both_type_and_value_errors(value):
    with pytest.raises(ArgumentTypeError, match="n must be an integer, got"):
        check_int("n", value)
    with pytest.raises(TypeError):
        check_int("n", value)
    with pytest.raises(ValueError):
        check_int("n", value)


@pytest.mark.parametrize("value", [0, 1, "False", None, np.bool_(True)])
def test_check_bool_refuses_anything_but_a_bool_by_name(value):
    with pytest.raises(ArgumentTypeError, match=r"flag must be True or False, got "):
        check_bool("flag", value)


def test_check_bool_returns_the_bool():
    assert check_bool("flag", True) is True and check_bool("flag", False) is False


def test_check_int_bounds_and_numpy_integers():
    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_int("k", 0, low=0) == 0
    with pytest.raises(ValueError, match=r"k is 4, expected an integer \[1, 3\]"):
        check_int("k", 4, 1, 3)
    with pytest.raises(ValueError, match="n is 0, expected an integer >= 1"):
        check_int("n", 0)


def test_integer_scalar_is_one_integer_of_any_kind():
    for value in (3, np.int64(3), np.uint8(3), torch.tensor(3), torch.tensor(3, dtype=torch.int8)):
        assert integer_scalar(value) == 3 and type(integer_scalar(value)) is int
    for value in (True, np.bool_(True), torch.tensor(True), 3.0, np.float32(3), torch.tensor(3.0),
                  torch.tensor([3]), np.array([3]), [3], "3", None):
        assert integer_scalar(value) is None, value


@pytest.mark.parametrize("kwargs, value, message", [
    ({"low": 0.0, "low_open": True}, 0.0, r"lr is 0.0, expected a number > 0"),
    ({"low": 0.0, "high": 1.0, "high_open": True}, 1.0, r"expected a number in \[0, 1\)"),
    ({}, math.nan, "expected a finite number"),
    ({}, True, "expected a finite number"),
    ({}, "1", "expected a finite number"),
])
def test_check_number_names_the_argument_and_the_range(kwargs, value, message):
    name = "lr" if kwargs.get("low_open") else "x"
    with pytest.raises(ValueError, match=message):
        check_number(name, value, **kwargs)


def test_check_probability_open_and_closed_ends():
    assert check_probability("p", 0.0) == 0.0 and check_probability("p", 1) == 1.0
    with pytest.raises(ValueError, match=r"alpha is 1.0, expected a number in \(0, 1\)"):
        check_probability("alpha", 1.0, open_low=True, open_high=True)


def test_as_tensor_and_check_finite_name_the_first_bad_entry():
    assert as_tensor("s", [1.0, 2.0], integer=True).dtype == torch.long
    with pytest.raises(TypeError, match="s must hold integer indices"):
        as_tensor("s", [1.5], integer=True)
    with pytest.raises(TypeError, match="x must be an array of numbers, got object"):
        as_tensor("x", object())
    with pytest.raises(ValueError, match=r"r\[1, 0\] is nan, expected a finite number"):
        check_finite("r", torch.tensor([[0.0, 1.0], [math.nan, 2.0]]))


def test_one_rule_for_a_posterior():
    class WithReward:
        def reward(self):
            return torch.zeros(2, 3)

    assert is_posterior(WithReward())
    assert not is_posterior(torch.zeros(2, 3)) and not is_posterior(np.zeros((2, 3)))
    mdp = birl.envs.gridworld(size=4)
    assert not is_posterior(mdp)  # an MDP's reward is a tensor, not a method


def test_to_numpy_keeps_or_sets_the_dtype():
    t = torch.ones(2, dtype=torch.float32, requires_grad=True)
    assert to_numpy(t).dtype == np.float32 and to_numpy(t, np.float64).dtype == np.float64
    assert to_numpy(None) is None


@pytest.mark.parametrize("prior, positive", [
    (dist.HalfNormal(1.0), True), (dist.LogNormal(0.0, 1.0), True), (dist.Gamma(2.0, 1.0), True),
    (dist.Uniform(2.0, 5.0), True), (dist.Uniform(0.1, 0.9), True),
    (dist.LogNormal(torch.zeros(3), 1.0).to_event(1), True),
    (dist.Uniform(-0.5, 2.0), False), (dist.Normal(0.0, 1.0), False),
    (dist.Delta(torch.tensor(2.0)), False)])
def test_a_positive_prior_is_one_whose_support_starts_at_or_above_zero(prior, positive):
    """Uniform(-0.5, 2) passed the old check (support has 1, not -1): a draw of -0.4 reversed
    every preference; Uniform(2, 5) failed it (no -1, no 1) though every draw is positive."""
    assert has_positive_support(prior) is positive


def test_one_floating_dtype_rule_for_every_dtype_argument():
    """The MDP's and the trajectories' ``to``, the environments and Rust's data set each had
    their own check and message (one a ValueError); now one rule, an ArgumentTypeError (both a
    TypeError and a ValueError) with one message."""
    assert float_dtype(None) == torch.get_default_dtype()
    assert float_dtype(torch.float32) == torch.float32
    mdp = birl.envs.gridworld(size=2)
    traj = birl.Trajectories.from_arrays(np.zeros((1, 2, 1)), np.zeros((1, 2), dtype=int),
                                         next_obs=np.zeros((1, 2, 1)))
    calls = [float_dtype, lambda d: mdp.to(dtype=d), lambda d: traj.to(dtype=d),
             lambda d: birl.envs.gridworld(size=2, dtype=d),
             lambda d: birl.datasets.rust_bus(dtype=d)]
    for call in calls:
        for bad in (torch.int64, torch.complex64, "float32"):
            with pytest.raises(ArgumentTypeError, match=r"^dtype must be a floating torch dtype "
                               rf"\(torch.float32 or torch.float64\), got {bad!r}$"):
                call(bad)
