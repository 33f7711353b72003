"""Numerics of the Q-value posterior's whitening (bayesirl.model.q_value.covariance_tril)."""

import pytest
import torch


def test_covariance_tril_survives_a_hessian_over_twenty_decades():
    """The Laplace whitening of a Q-value posterior: data pin some directions hard (1e15) and
    leave others to the prior's floor; a Cholesky of the rounded covariance failed there."""
    from bayesirl.model.q_value import covariance_tril

    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    evals = torch.logspace(-5, 15, 40, dtype=torch.float64)
    H = (Q * evals) @ Q.T
    H = 0.5 * (H + H.T)  # symmetric as rounded, so that the test and the function see one H
    with pytest.raises(torch.linalg.LinAlgError):  # what the whitening did before
        cov = (Q * evals.clamp(min=1e-3).reciprocal()) @ Q.T
        torch.linalg.cholesky(0.5 * (cov + cov.T))
    L = covariance_tril(H, 1e-3)
    assert torch.equal(L, L.tril()) and bool((L.diagonal() > 0).all())
    # L L^T is the floored covariance root root^T, root = V Lambda_+^-1/2 from H's own
    # eigenvectors (those of H as rounded: its smallest eigenvalues carry ~1e15 eps of error)
    values, vectors = torch.linalg.eigh(H)
    root = vectors * values.clamp(min=1e-3).rsqrt()
    cov = root @ root.T
    assert float((L @ L.T - cov).abs().max()) <= 1e-12 * float(cov.abs().max())
