"""Input checks of the tabular core: the one rule for probability rows
(``_validation.check_distribution_rows``), seeds, and ``TabularMDP.to`` / ``replace``."""

import math

import numpy as np
import pytest
import torch

import bayesirl as birl
from bayesirl._validation import (
    GENERATOR_SEED_MAX,
    SEED_MAX,
    ArgumentTypeError,
    check_distribution_rows,
    check_seed,
)


# ---------------------------------------------------------------------------- probability rows
@pytest.mark.parametrize("p, match", [
    ([[0.5, 0.5], [0.2, 0.9]], r"p\[1\] sums to 1.1, expected 1"),
    ([[0.5, 0.5], [1.5, -0.5]], r"p\[1, 1\] is -0.5, expected a probability >= 0"),
    ([[0.5, 0.5], [math.nan, 1.0]], r"p\[1, 0\] is nan, expected a finite number"),
    ([[0.5, 0.5], [math.inf, 0.0]], r"p\[1, 0\] is inf, expected a finite number"),
    ([0.25, 0.25], r"^p sums to 0.5, expected 1$"),   # one distribution: no index
])
def test_distribution_rows_name_the_first_bad_entry_or_row(p, match):
    with pytest.raises(ValueError, match=match):
        check_distribution_rows("p", torch.tensor(p, dtype=torch.float64))


def test_distribution_rows_tolerance_follows_the_dtype():
    """Sums within 1e-6 (float64) or 1e-4 (float32) of 1 pass: the rounding a sum of
    probabilities stored in that dtype may carry."""
    p = torch.tensor([[0.5, 0.5 + 5e-6]])
    check_distribution_rows("p", p.float())
    with pytest.raises(ValueError, match=r"p\[0\] sums to 1.00001, expected 1"):
        check_distribution_rows("p", p.double())
    with pytest.raises(ValueError, match="sums to"):
        check_distribution_rows("p", torch.tensor([[0.5, 0.5 + 5e-4]], dtype=torch.float32))


def test_distribution_rows_along_another_dim():
    p = torch.tensor([[0.2, 0.5], [0.8, 0.5]], dtype=torch.float64)   # columns sum to 1
    check_distribution_rows("p", p, dim=0)
    with pytest.raises(ValueError, match=r"p\[0\] sums to 0.7 over dim 0, expected 1"):
        check_distribution_rows("p", p.T.contiguous(), dim=0)


def test_mdp_messages_come_from_the_one_rule():
    """TabularMDP's transitions and initial distribution use the same rule (and words)."""
    P = torch.full((2, 1, 2), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match="initial sums to 2, expected 1"):
        birl.TabularMDP.from_dense(P, horizon=2, initial=torch.ones(2))
    P[1, 0] = torch.tensor([0.7, 0.7])
    with pytest.raises(ValueError, match=r"transitions\[1, 0\] sums to 1.4, expected 1"):
        birl.TabularMDP.from_dense(P, horizon=2)


# ---------------------------------------------------------------------------- seeds
def test_check_seed_bounds():
    assert SEED_MAX == 2 ** 32 - 1 and GENERATOR_SEED_MAX == 2 ** 64 - 1
    assert check_seed("seed", np.int64(7)) == 7
    assert check_seed("seed", torch.tensor(7)) == 7
    assert check_seed("seed", GENERATOR_SEED_MAX) == GENERATOR_SEED_MAX
    with pytest.raises(ValueError, match=r"seed is 4294967296, expected an integer "
                                         r"\[0, 4294967295\]"):
        check_seed("seed", SEED_MAX + 1, SEED_MAX)
    for bad in ("0", 1.0, True, None):
        with pytest.raises(ArgumentTypeError, match="seed must be an integer"):
            check_seed("seed", bad)


# ---------------------------------------------------------------------------- TabularMDP
@pytest.fixture(scope="module")
def grid():
    return birl.envs.gridworld(size=4, horizon=5)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, "float32"])
def test_to_needs_a_floating_dtype(grid, dtype):
    """to(dtype=torch.int64) truncated the probabilities to 0 and then said "transition_probs[0,
    0] sums to 0, expected 1"."""
    with pytest.raises(TypeError, match=rf"dtype must be a floating torch dtype .*, got {dtype!r}"):
        grid.to(dtype=dtype)
    assert grid.to(dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("device, error, match", [
    ("gpu", ValueError, r"device is 'gpu', expected a torch device or its name, such as 'cpu'"),
    (3.5, TypeError, r"device is 3.5, expected a torch device"),
])
def test_to_names_a_bad_device(grid, device, error, match):
    """A raw torch RuntimeError ("Expected one of cpu, cuda, ... device type") before."""
    with pytest.raises(error, match=match):
        grid.to(device=device)
    assert grid.to(device="cpu").device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_to_an_unavailable_device_names_it(grid):
    with pytest.raises(ValueError, match="device is 'cuda', which is not available"):
        grid.to(device="cuda")


def test_replace_features_drops_the_old_names(grid):
    """New features without new names failed ("feature_names has 4 names, expected 6"), and
    features=None failed ("feature_names given without features")."""
    S = grid.n_states
    assert grid.feature_names is not None
    six = grid.replace(features=torch.randn(S, 6))
    assert six.n_features == 6 and six.feature_names is None
    assert grid.replace(features=None).features is None
    named = grid.replace(features=torch.randn(S, 2), feature_names=["a", "b"])
    assert named.feature_names == ("a", "b")
    assert grid.replace(horizon=3).feature_names == grid.feature_names   # untouched otherwise
    with pytest.raises(ValueError, match="feature_names has 4 names, expected 6"):
        grid.replace(features=torch.randn(S, 6), feature_names=grid.feature_names)
