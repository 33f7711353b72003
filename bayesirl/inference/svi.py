"""Stochastic variational inference on a target's Pyro model, with exact and safe resumption,
and a word when it has not converged.

SVI fits an autoguide (or the target's own guide) to the target's Pyro model
(:class:`~bayesirl.inference.target.HasPyroModel`), so minibatches over observation units work.
Adam's step decays geometrically from ``lr`` to ``lr * lr_decay``.

Checkpoints. A checkpoint holds everything a resumed run needs to end exactly where an
uninterrupted one would (the guide's parameters, Adam's moments, the step, the ELBO trace and the
random number generators' states) and a fingerprint of what it was fitted to: the target's
(:class:`~bayesirl.inference.target.Fingerprinted`: the MDP, demonstrations, reward model,
prior, likelihood, rationality) and the settings that change the fit. A run resumes only from a
checkpoint with the same fingerprint; anything else is refused, naming what differs. The file
holds tensors and plain values only and is read with ``torch.load(weights_only=True)``, so a
crafted file cannot run code when it is loaded.

Convergence. Before fitting, features whose scale makes the posterior far narrower than the
prior are reported (:func:`scale_problem`); after it, an ELBO still moving over the last tenth
of the steps, or a guide whose mean sits several of its sds from the MAP, is an
:class:`~bayesirl.posterior.diagnostics.InferenceWarning` with the numbers
(:func:`convergence_problems`), or a ConvergenceError with ``strict``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer import autoguide as ag
from tqdm.auto import tqdm

from bayesirl.inference.executors import note
from bayesirl.inference.target import Fingerprinted, HasGuide, Target, digest
from bayesirl.posterior.diagnostics import ConvergenceError, InferenceWarning

__all__ = ["GUIDES", "SviOptions", "SviResult", "convergence_problems", "run_svi",
           "scale_problem"]

GUIDES = {"normal": ag.AutoNormal, "mvn": ag.AutoMultivariateNormal,
          "lowrank": ag.AutoLowRankMultivariateNormal}

_FORMAT = "bayesirl.svi-checkpoint/2"
_MOVING_Z = 3.0         # the ELBO moved by more than this many standard errors ...
_MOVING_NATS = 0.1      # ... and by more than this many nats over the last tenth: not converged
_FAR_FROM_MAP = 3.0     # the guide's mean this many of its sds from the MAP: not converged
_CHECK_DRAWS = 256      # guide draws for that comparison (after the returned ones)
_REWARD_REACH = 100.0   # one prior sd of a feature's weight moving rewards further: ill-scaled


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
    map_init: bool = True
    strict: bool = False


@dataclass
class SviResult:
    """``params``: ``{site: (num_samples, ...)}`` constrained draws from the guide; ``losses``:
    the ELBO's negative at every step run (resumed steps included); ``incomplete``: the run was
    interrupted."""

    params: dict[str, torch.Tensor]
    losses: list[float]
    incomplete: bool


def fingerprint(target, options: SviOptions) -> dict:
    """What a checkpoint must match to be resumed: the target's fingerprint (or a digest of the
    target) and the settings that change the fit. ``steps`` only where the step decays
    (``lr_decay < 1``): with a constant step, a longer run continues a shorter one exactly."""
    o = options
    found = (dict(target.fingerprint()) if isinstance(target, Fingerprinted)
             else {"target": f"{type(target).__qualname__} {digest(target)}"})
    found.update({"guide": o.guide, "lr": o.lr, "lr_decay": o.lr_decay,
                  "subsample_size": o.subsample_size, "seed": o.seed,
                  "map_init": o.map_init})
    if o.lr_decay != 1:
        found["steps"] = o.steps
    return found


def _rng_state() -> dict:
    """Pyro's RNG states (torch, Python, NumPy) as tensors and plain values."""
    state = pyro.util.get_rng_state()
    name, keys, pos, has_gauss, cached = state["numpy"]
    return {"torch": state["torch"], "random": state["random"],
            "numpy": (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                      int(has_gauss), float(cached))}


def _set_rng_state(state: dict) -> None:
    name, keys, pos, has_gauss, cached = state["numpy"]
    pyro.util.set_rng_state({"torch": state["torch"], "random": state["random"],
                             "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss,
                                       cached)})


def check_checkpoint(path) -> str:
    """``path`` as a string, checked before SVI starts: a file (not a directory) in a directory
    that exists, so that a typo fails at once rather than at the first save. ValueError naming
    ``checkpoint`` otherwise."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"checkpoint is {path!r}, a directory; expected the path of a file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"checkpoint is {path!r}, but its directory {parent!r} does not "
                         "exist; create it, or pass a checkpoint path in an existing directory")
    return path


def _save_checkpoint(path, step, losses, guide, optim, print_):
    """Atomically write everything SVI needs to resume exactly (parameters, optimiser moments,
    the step, the ELBO trace, the RNG states) with the fingerprint ``print_``: tensors and
    plain values only."""
    state = {"format": _FORMAT, "fingerprint": print_, "step": step,
             "losses": [float(x) for x in losses],
             "guide": {k: v.detach().clone() for k, v in guide.named_parameters()},
             "optim": optim.get_state(), "rng": _rng_state()}
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path, print_: dict) -> dict:
    """The checkpoint at ``path`` (tensors and plain values only: ``weights_only``), refused
    with a ValueError unless its fingerprint is ``print_``."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # a crafted pickle, a truncated file, anything else: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"checkpoint {path} is not a readable bayesirl SVI checkpoint (it must "
                         f"hold tensors and plain values only): {first}") from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"checkpoint {path} is not a bayesirl SVI checkpoint (expected format "
                         f"{_FORMAT!r})")
    there = state.get("fingerprint") or {}
    differ = [f"{k} ({there.get(k, 'absent')!r} there, {v!r} here)"
              for k, v in print_.items() if there.get(k) != v]
    differ += [f"{k} ({there[k]!r} there, absent here)" for k in there if k not in print_]
    if differ:
        raise ValueError(f"checkpoint {path} was written by a run on another {'; '.join(differ)};"
                         " delete it, or pass another checkpoint path, to start afresh")
    return state


def _restore(path, state, guide, optim) -> None:
    """Load the checkpoint's guide parameters and Adam state, one-line errors on a mismatch."""
    saved = state["guide"]
    params = dict(guide.named_parameters())
    if set(saved) != set(params):
        raise ValueError(f"checkpoint {path} has the guide parameters {sorted(saved)}, expected "
                         f"{sorted(params)}")
    with torch.no_grad():
        for name, value in params.items():
            if tuple(saved[name].shape) != tuple(value.shape):
                raise ValueError(f"checkpoint {path}: the guide parameter {name!r} has shape "
                                 f"{tuple(saved[name].shape)}, expected {tuple(value.shape)}")
            value.copy_(saved[name])
    try:
        optim.set_state(state["optim"])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"checkpoint {path}: its optimiser state does not fit this guide "
                         f"({type(e).__name__}: {e})") from None


def _guide(target, model, name, init_values):
    if isinstance(target, HasGuide):
        return target.guide(name)
    return GUIDES[name](model, init_loc_fn=pyro.infer.autoguide.init_to_value(
        values=init_values))


def run_svi(target, init: dict[str, torch.Tensor], options: SviOptions) -> SviResult:
    """Fit a guide to ``target.pyro_model(options.subsample_size)`` from the unconstrained
    point ``init`` (the guide's location starts at its constrained values: the MAP when
    ``options.map_init``), resuming from ``options.checkpoint`` when that file exists and was
    written by the same problem and settings (see the module doc). Ctrl-C ends the fit early:
    the draws come from the guide as it is, ``incomplete`` set. Warns (raises with
    ``options.strict``) when the fit has not converged, see :func:`convergence_problems`."""
    o = options
    problem = scale_problem(target, o.lr)
    if problem is not None:
        warnings.warn(InferenceWarning(f"ill-conditioned features:\n- {problem}"),
                      stacklevel=3)
    print_ = fingerprint(target, o)
    state = (_load_checkpoint(o.checkpoint, print_)
             if o.checkpoint is not None and os.path.exists(o.checkpoint) else None)
    pyro.set_rng_seed(o.seed)
    pyro.clear_param_store()
    model = target.pyro_model(o.subsample_size)
    init_values = target.constrain(init)
    auto = _guide(target, model, o.guide, init_values)
    # the final iterate of a constant-step Adam jitters around the optimum (the ELBO's
    # gradient is one noisy draw): the step decays geometrically to lr * lr_decay
    optim = pyro.optim.ClippedAdam({"lr": o.lr, "lrd": o.lr_decay ** (1 / o.steps)})
    losses, start = [], 0
    if state is not None:
        auto()  # create the guide's parameters, then overwrite them
        _restore(o.checkpoint, state, auto, optim)
        _set_rng_state(state["rng"])
        losses, start = list(state["losses"]), state["step"]
    incomplete = _steps(SVI(model, auto, optim, Trace_ELBO()), losses, start, o,
                        lambda step: _save_checkpoint(o.checkpoint, step, losses, auto, optim,
                                                      print_))
    with torch.no_grad():
        params = _draws(auto, o.num_samples, init_values)
        if incomplete:
            note(f"interrupted: the guide after {len(losses)} of {o.steps} steps; the "
                 "posterior is marked incomplete")
        else:
            check = _draws(auto, _CHECK_DRAWS, init_values)
            _report(convergence_problems(losses, check, init_values if o.map_init else None),
                    o.strict)
    return SviResult(params, losses, incomplete)


def _steps(svi, losses: list, start: int, o: SviOptions, save) -> bool:
    """SVI steps ``start .. o.steps - 1``, appending each loss to ``losses`` and calling
    ``save(step)`` every ``o.checkpoint_every`` steps when there is a checkpoint. Returns
    whether Ctrl-C ended them early."""
    bar = tqdm(range(start, o.steps), desc=f"svi ({o.guide})", disable=not o.progress,
               leave=False)
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
                save(i + 1)
    except KeyboardInterrupt:
        return True
    return False


def _draws(guide, n: int, sites) -> dict[str, torch.Tensor]:
    """``n`` draws of the fitted ``guide``, ``{site: (n, ...)}`` for each of ``sites``."""
    draws = [guide() for _ in range(n)]
    return {k: torch.stack([d[k] for d in draws]) for k in sites}


def _report(problems: list[str], strict: bool) -> None:
    if not problems:
        return
    message = "SVI has not converged:\n- " + "\n- ".join(problems)
    if strict:
        raise ConvergenceError(message)
    warnings.warn(InferenceWarning(message), stacklevel=4)


def convergence_problems(losses: list[float], draws: dict[str, torch.Tensor],
                         map_point: dict[str, torch.Tensor] | None) -> list[str]:
    """Why an SVI fit looks unconverged, as sentences with the numbers (empty: none found).

    - The ELBO still moving: over the last tenth of the steps (at least 10) its mean differs
      from the tenth before by more than three standard errors of that difference and more
      than 0.1 nats (a fit still improving, or drifting away).
    - The guide far from the MAP: its mean, over ``draws {site: (m, ...)}`` of the fitted
      guide, more than three of its sds from ``map_point`` (constrained, None: not checked)
      in some coordinate. Near the posterior's mode a Gaussian guide centres within a
      fraction of an sd of it; an ill-conditioned fit wanders off, and a factorised guide of
      coupled parameters sits narrow and off-centre (the sentence names both readings).
    """
    problems = []
    w = max(len(losses) // 10, 10)
    if len(losses) >= 2 * w:
        before = np.asarray(losses[-2 * w:-w])
        last = np.asarray(losses[-w:])
        moved = float(before.mean() - last.mean())   # > 0: the ELBO still rose
        se = float(np.sqrt(before.var(ddof=1) / w + last.var(ddof=1) / w))
        if abs(moved) > _MOVING_Z * se and abs(moved) > _MOVING_NATS:
            problems.append(f"the ELBO still {'rose' if moved > 0 else 'fell'} by "
                            f"{abs(moved):.3g} nats (standard error {se:.2g}) between the last "
                            f"two tenths of its {len(losses)} steps; run more steps or raise lr")
    for site, value in (map_point or {}).items():
        x = draws[site].reshape(draws[site].shape[0], -1).double()
        mean, sd = x.mean(0), x.std(0)
        z = (mean - value.reshape(-1).double()).abs() / sd
        worst = int(z.argmax())
        if float(z[worst]) > _FAR_FROM_MAP:
            index = "" if value.dim() == 0 else f"[{worst}]"
            problems.append(f"the guide's mean of {site}{index} is {float(mean[worst]):.4g}, "
                            f"{float(z[worst]):.3g} of its sds ({float(sd[worst]):.3g}) from "
                            f"the MAP {float(value.reshape(-1)[worst]):.4g}: the fit has "
                            "not converged, or the guide's family cannot centre on the mode "
                            "(a factorised guide of tightly coupled parameters, such as AVRIL's "
                            "w and latent rewards, is narrow and off-centre)")
    return problems


def scale_problem(target, lr: float) -> str | None:
    """A warning when a linear reward's features make the problem ill-conditioned, else None.

    A weight whose prior sd times its feature's largest magnitude exceeds 100 moves rewards by
    more than 100 per prior sd: the likelihood then pins it to a posterior far narrower than
    the prior (its sd shrinks with the feature's scale), finer than Adam's steps and the
    guide's initial scale resolve, and SVI wanders. (MAP and NUTS, which adapts its step size
    and mass matrix, are not affected.) An improper prior counts the feature's scale alone."""
    if not isinstance(target, Target):
        return None
    linear = target.reward_model.linear_map()
    if linear is None or linear[1] is None:
        return None
    site, phi = linear
    scale = phi.detach().abs().reshape(-1, phi.shape[-1]).amax(0).double()        # (d,)
    try:
        sd = target.priors[site].stddev.detach().double().expand(scale.shape)
    except NotImplementedError:  # an improper prior
        sd = torch.ones_like(scale)
    reach = scale * sd
    j = int(reach.argmax())
    if not float(reach[j]) > _REWARD_REACH:
        return None
    return (f"features[..., {j}] reach {float(scale[j]):.3g} in magnitude with a prior sd of "
            f"{float(sd[j]):.3g} on {site}[{j}]: one prior sd moves rewards by "
            f"{float(reach[j]):.3g}, so the posterior is far narrower than the prior along it, "
            f"finer than SVI's steps (lr={lr}) resolve; rescale the features to order 1 (e.g. "
            f"divide feature {j} by {float(scale[j]):.3g}) and the prior with them")
