"""Every private Pyro symbol that bayesirl.inference.pyro_nuts uses exists in the installed Pyro
with the form that module relies on; a Pyro release that moves one fails here by name, not by
sampling silently wrong. The list lives beside the code (pyro_nuts.PRIVATE_SYMBOLS), so a new use
cannot skip the check; only pyro_nuts may touch Pyro's privates (checked on the source)."""

import ast
import importlib
import inspect
import pathlib

import pyro
import pytest
import torch
from pyro.infer.mcmc import HMC, NUTS

from bayesirl.inference import pyro_nuts

OWNERS = {"NUTS": NUTS, "HMC": HMC}
INFERENCE = pathlib.Path(pyro_nuts.__file__).parent


def _where(name):
    return (f"Pyro {pyro.__version__}: the private symbol {name}, which "
            f"bayesirl.inference.pyro_nuts uses (tested with pyro-ppl {pyro_nuts.TESTED_PYRO})")


def _resolve(name):
    owner, _, attr = name.rpartition(".")
    if owner in OWNERS:
        return getattr(OWNERS[owner], attr)
    return getattr(importlib.import_module(owner), attr)


def _set_up_kernel(cls):
    kernel = cls(potential_fn=lambda u: 0.5 * (u["x"] ** 2).sum())
    kernel.initial_params = {"x": torch.zeros(2, dtype=torch.float64)}
    kernel.setup(warmup_steps=2)
    kernel.sample(kernel.initial_params)  # an iteration sets the per-iteration state
    return kernel


@pytest.mark.parametrize("name", sorted(pyro_nuts.PRIVATE_SYMBOLS))
def test_private_pyro_symbol_has_the_form_bayesirl_relies_on(name):
    kind, form = pyro_nuts.PRIVATE_SYMBOLS[name]
    if kind == "attribute":
        owner, _, attr = name.rpartition(".")
        for cls in {OWNERS[owner], NUTS}:
            kernel = _set_up_kernel(cls)
            assert hasattr(kernel, attr), f"{_where(name)} is missing on a set-up {cls.__name__}"
            value = getattr(kernel, attr)
            assert isinstance(value, form), (
                f"{_where(name)} is a {type(value).__name__}, expected {form}")
        return
    try:
        symbol = _resolve(name)
    except (AttributeError, ImportError) as e:
        pytest.fail(f"{_where(name)} is missing ({e})")
    if kind == "namedtuple":
        assert tuple(symbol._fields) == form, (
            f"{_where(name)} has fields {symbol._fields}, expected {form}")
    elif kind == "method":
        params = tuple(inspect.signature(symbol).parameters)
        assert params == form, f"{_where(name)} has parameters {params}, expected {form}"
    else:
        pytest.fail(f"unknown kind {kind!r} for {name}")


def test_private_methods_return_what_pyro_nuts_unpacks():
    """_sample_r returns (r, r_unscaled) dicts; _build_basetree a _TreeInfo; _kinetic_energy a
    0-d tensor."""
    from pyro.infer.mcmc.nuts import _TreeInfo

    kernel = _set_up_kernel(NUTS)
    r, r_unscaled = kernel._sample_r(name="r_test")
    assert set(r) == {"x"} and set(r_unscaled) == {("x",)}, _where("HMC._sample_r")
    z = {"x": torch.zeros(2, dtype=torch.float64)}
    grads = {"x": torch.zeros(2, dtype=torch.float64)}
    tree = kernel._build_basetree(z, r, grads, torch.tensor(0.0, dtype=torch.float64), 1,
                                  torch.tensor(0.0, dtype=torch.float64))
    assert isinstance(tree, _TreeInfo), _where("NUTS._build_basetree")
    assert kernel._kinetic_energy(r_unscaled).dim() == 0, _where("HMC._kinetic_energy")


def test_only_pyro_nuts_touches_private_pyro_names():
    """No other module of the package imports a private name from Pyro or reads one of the
    private kernel attributes that pyro_nuts lists."""
    attributes = {name.rpartition(".")[2] for name in pyro_nuts.PRIVATE_SYMBOLS}
    offenders = []
    for path in sorted(INFERENCE.parent.rglob("*.py")):
        if path == pathlib.Path(pyro_nuts.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyro"):
                offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr in attributes:
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert offenders == []
