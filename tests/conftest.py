"""Test harness: float64, validation on, a clean Pyro param store, warnings as errors.

The warnings-as-errors setting and the ``slow`` marker live in pyproject.toml. Float64 is the
default from this module's import on, not only inside each test: fixtures of a wider scope
(module, session) are set up before a test's own harness, and would otherwise build their
objects in whatever dtype the test before them left (torch's float32 in a fresh worker)."""

import os
import signal

# one BLAS thread per pytest worker (set before NumPy loads OpenBLAS): pytest -n 2 on two cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402
import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# A test run started in the background of a non-interactive shell (`make test-slow &` in a
# script) begins with SIGINT ignored, and an ignored signal stays ignored across exec: the
# scripts the Ctrl-C tests start would never see their Ctrl-C, as a user's terminal or Jupyter
# kernel always does. Take SIGINT back as Python's default here, so they inherit that.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

matplotlib.use("Agg")
os.environ.setdefault("BAYESIRL_FAST", "1")
# pytest -n 2 runs two workers on CI's two cores: one intra-op thread each avoids OpenMP
# oversubscription, which makes small sparse kernels orders of magnitude slower
torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)


def _sigint_state():
    """This thread's SIGINT handler and whether its signal mask blocks SIGINT: what the
    processes a test starts inherit (a blocked or ignored SIGINT survives exec), so a test
    that left either changed would leave the Ctrl-C tests after it in the same worker waiting
    for a signal that never arrives."""
    blocked = (signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
               if hasattr(signal, "pthread_sigmask") else None)
    return signal.getsignal(signal.SIGINT), blocked


@pytest.fixture(autouse=True)
def _harness():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.enable_validation(True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    sigint = _sigint_state()
    yield
    torch.set_default_dtype(old)
    assert _sigint_state() == sigint, (
        f"the test changed SIGINT's handler and mask-blocked state from {sigint} to "
        f"{_sigint_state()}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one intra-op thread for a module of tiny MDPs, where OpenMP threads only add
    synchronisation (and stall on busy hosts); the setting is restored after the module, even
    where a test in it changed the thread count. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def chain_problem():
    """``(mdp, demos, model)``: bayesirl.testing's tiny chain MDP, 10 demonstrations of its
    soft-optimal expert (seed 0) and a linear reward on its features; the inference tests'
    smallest real problem (float64, as the harness sets it)."""
    from bayesirl import LinearReward  # imported here: the harness sets the environment first
    from bayesirl.testing import simulate_demos, tiny_chain_mdp

    mdp = tiny_chain_mdp()
    return mdp, simulate_demos(mdp, mdp.reward, 10, seed=0), LinearReward(mdp.features)
