"""Stochastic variational inference on a target's Pyro model, with exact resumption.

SVI fits an autoguide (or the target's own guide) to the target's Pyro model
(:class:`~bayesirl.inference.target.HasPyroModel`), so minibatches over observation units work.
Adam's step decays geometrically from ``lr`` to ``lr * lr_decay``. A checkpoint holds everything
a resumed run needs to end exactly where an uninterrupted one would: the guide's parameters,
Adam's moments, the step, the ELBO trace and the random number generators' states.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer import autoguide as ag
from tqdm.auto import tqdm

from bayesirl.inference.target import HasGuide

__all__ = ["GUIDES", "SviOptions", "SviResult", "run_svi"]

GUIDES = {"normal": ag.AutoNormal, "mvn": ag.AutoMultivariateNormal,
          "lowrank": ag.AutoLowRankMultivariateNormal}

_FORMAT = "bayesirl.svi-checkpoint/1"


@dataclass(frozen=True)
class SviOptions:
    """SVI's settings (validated by ``infer()``): the guide's name, Adam's ``steps``, ``lr``
    and ``lr_decay``, minibatches of ``subsample_size`` units (None: all), ``num_samples``
    draws from the fitted guide, the seed, progress bars, and the checkpoint file (None: none)
    written every ``checkpoint_every`` steps."""

    guide: str
    steps: int
    lr: float
    lr_decay: float
    subsample_size: int | None
    num_samples: int
    seed: int
    progress: bool
    checkpoint: str | None
    checkpoint_every: int


@dataclass
class SviResult:
    """``params``: ``{site: (num_samples, ...)}`` constrained draws from the guide; ``losses``:
    the ELBO's negative at every step run (resumed steps included); ``incomplete``: the run was
    interrupted."""

    params: dict[str, torch.Tensor]
    losses: list[float]
    incomplete: bool


def _save_checkpoint(path, step, losses, guide, optim):
    """Atomically write everything SVI needs to resume exactly: parameters, optimiser moments,
    the step, the ELBO trace and the RNG states."""
    state = {"format": _FORMAT, "step": step, "losses": list(losses),
             "guide": guide.state_dict(), "optim": optim.get_state(),
             "rng": pyro.util.get_rng_state()}
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path):
    try:  # our own file: it holds Pyro constraint objects, which weights_only refuses
        state = torch.load(path, weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is not readable ({e})") from e
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"checkpoint {path} is not a bayesirl SVI checkpoint")
    return state


def _guide(target, model, name, init_values):
    if isinstance(target, HasGuide):
        return target.guide(name)
    return GUIDES[name](model, init_loc_fn=pyro.infer.autoguide.init_to_value(
        values=init_values))


def run_svi(target, init: dict[str, torch.Tensor], options: SviOptions) -> SviResult:
    """Fit a guide to ``target.pyro_model(options.subsample_size)`` from the unconstrained
    point ``init`` (the guide's location starts at its constrained values), resuming from
    ``options.checkpoint`` when that file exists. Ctrl-C ends the fit early: the draws come
    from the guide as it is, ``incomplete`` set."""
    o = options
    pyro.set_rng_seed(o.seed)
    pyro.clear_param_store()
    model = target.pyro_model(o.subsample_size)
    init_values = target.constrain(init)
    auto = _guide(target, model, o.guide, init_values)
    # the final iterate of a constant-step Adam jitters around the optimum (the ELBO's
    # gradient is one noisy draw): the step decays geometrically to lr * lr_decay
    optim = pyro.optim.ClippedAdam({"lr": o.lr, "lrd": o.lr_decay ** (1 / o.steps)})
    svi = SVI(model, auto, optim, Trace_ELBO())
    losses, start = [], 0
    if o.checkpoint is not None and os.path.exists(o.checkpoint):
        state = _load_checkpoint(o.checkpoint)
        auto()  # create the guide's parameters, then overwrite them
        with torch.no_grad():
            for name, value in auto.named_parameters():
                value.copy_(state["guide"][name])
        optim.set_state(state["optim"])
        pyro.util.set_rng_state(state["rng"])
        losses, start = state["losses"], state["step"]
    bar = tqdm(range(start, o.steps), desc=f"svi ({o.guide})", disable=not o.progress,
               leave=False)
    incomplete = False
    try:
        for i in bar:
            loss = svi.step()
            if not math.isfinite(loss):
                raise FloatingPointError(f"the ELBO became {loss} at step {i}; lower lr "
                                         f"(is {o.lr})")
            losses.append(loss)
            if i % 50 == 0:
                bar.set_postfix(elbo=f"{-loss:.4g}")
            if o.checkpoint is not None and (i + 1) % o.checkpoint_every == 0:
                _save_checkpoint(o.checkpoint, i + 1, losses, auto, optim)
    except KeyboardInterrupt:
        incomplete = True
    with torch.no_grad():
        draws = [auto() for _ in range(o.num_samples)]
    params = {k: torch.stack([d[k] for d in draws]) for k in init_values}
    return SviResult(params, losses, incomplete)
