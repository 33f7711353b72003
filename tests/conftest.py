"""Test harness: float64, validation on, a clean Pyro param store, warnings as errors.

The warnings-as-errors setting and the ``slow`` marker live in pyproject.toml."""

import os

# one BLAS thread per pytest worker (set before NumPy loads OpenBLAS): pytest -n 2 on two cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402
import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")
os.environ.setdefault("BAYESIRL_FAST", "1")
# pytest -n 2 runs two workers on CI's two cores: one intra-op thread each avoids OpenMP
# oversubscription, which makes small sparse kernels orders of magnitude slower
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _harness():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.enable_validation(True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    torch.set_default_dtype(old)
