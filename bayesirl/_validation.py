"""The one home of argument checks: numbers, integers, probabilities, tensors and index errors.

Every check names the argument, the offending value (or index) and what was expected, so that a
user sees one line saying what to fix instead of a traceback from deep inside torch. Checks run
once where input enters (constructors, ``infer``, public functions), not in inner loops.

A wrong *type* (a string or a float where an integer is expected) raises
:class:`ArgumentTypeError`, which is both a ``TypeError`` and a ``ValueError``: callers written
against either keep working, and the message is the same one line.
"""

from __future__ import annotations

import concurrent.futures
import math
import numbers

import numpy as np
import torch

__all__ = [
    "GENERATOR_SEED_MAX",
    "SEED_MAX",
    "ArgumentTypeError",
    "as_tensor",
    "bool_tensor",
    "check_bool",
    "check_choice",
    "check_distribution_rows",
    "check_finite",
    "check_indices",
    "check_int",
    "check_number",
    "check_probability",
    "check_process_executor",
    "check_seed",
    "first_bad",
    "fmt_index",
    "integer_scalar",
    "is_posterior",
    "check_names",
    "float_dtype",
    "positive_ints",
    "select_rows",
    "sum_tolerance",
    "to_numpy",
]

#: The largest seed :func:`bayesirl.infer` takes (the CLI's ``inference.seed``, ``--seed``).
SEED_MAX = 2 ** 32 - 1
#: The largest seed ``torch.Generator.manual_seed`` takes (a 64-bit unsigned integer).
GENERATOR_SEED_MAX = 2 ** 64 - 1


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a TypeError that ``except ValueError`` also catches)."""


def _is_real(value) -> bool:
    """A real number (Python or NumPy scalar, not a bool) that is finite."""
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def check_int(name: str, value, low: int | None = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (either bound None for none).

    Python and NumPy integers pass; bools, floats (even whole ones) and strings raise
    :class:`ArgumentTypeError`; integers out of range raise ``ValueError``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer, got {value!r} "
                                f"({type(value).__name__})")
    if (low is not None and value < low) or (high is not None and value > high):
        span = (f"[{low}, {high}]" if low is not None and high is not None
                else f">= {low}" if low is not None else f"<= {high}")
        raise ValueError(f"{name} is {value}, expected an integer {span}")
    return int(value)


def integer_scalar(value) -> int | None:
    """``value`` as an int when it is one integer, else None.

    One integer is a Python or NumPy integer or a 0-d integer tensor (``demos.states[0, 0]``);
    bools (Python, NumPy or tensor), floats, strings and anything with a dimension (lists,
    arrays, 1-d tensors) give None. The one rule for arguments that take either one index or
    something else (an index list, a mask, a distribution), so that ``np.int64(3)`` and
    ``torch.tensor(3)`` mean what ``3`` does."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype.is_floating_point or value.dtype.is_complex or (
                value.dtype == torch.bool):
            return None
        return int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def check_number(name: str, value, low: float = -math.inf, high: float = math.inf, *,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the bounds (``low_open``/``high_open`` exclude
    them). NumPy scalars count as numbers (``np.float32(0.9)`` is 0.9 to float32 precision)."""
    ok = _is_real(value)
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        if low == -math.inf and high == math.inf:
            span = "a finite number"
        elif high == math.inf:
            span = f"a number {'>' if low_open else '>='} {low:g}"
        elif low == -math.inf:
            span = f"a number {'<' if high_open else '<='} {high:g}"
        else:
            span = (f"a number in {'(' if low_open else '['}{low:g}, "
                    f"{high:g}{')' if high_open else ']'}")
        raise ValueError(f"{name} is {value!r}, expected {span}")
    return v


def check_seed(name: str, seed, high: int = GENERATOR_SEED_MAX) -> int:
    """``seed`` as an int in ``[0, high]``: a Python or NumPy integer (bools, floats and
    strings raise :class:`ArgumentTypeError`). The default bound is what a
    ``torch.Generator`` takes; :data:`SEED_MAX` is :func:`bayesirl.infer`'s. A 0-d integer
    tensor counts as its integer (:func:`integer_scalar`)."""
    one = integer_scalar(seed)
    return check_int(name, seed if one is None else one, 0, high)


def check_probability(name: str, value, *, open_low: bool = False,
                      open_high: bool = False) -> float:
    """A probability in [0, 1] (or an open side), e.g. a credible level or a slip rate."""
    return check_number(name, value, 0.0, 1.0, low_open=open_low, high_open=open_high)


def check_bool(name: str, value) -> bool:
    """``value`` if it is a bool: a flag given as 0, 1 or "False" is a mistake, not a truth
    value to guess."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value, options):
    """``value`` if it is one of ``options``; the error lists them."""
    if value not in options:
        raise ValueError(f"{name} is {value!r}, expected one of {', '.join(map(repr, options))}")
    return value


def as_tensor(name: str, value, dtype=None, device=None, integer: bool = False) -> torch.Tensor:
    """Array-likes as a tensor, naming ``name`` when that is impossible.

    ``integer``: a long tensor of indices (whole-number floats are accepted; other floats,
    complex and bools are not). Otherwise a real tensor: integer and bool input becomes the
    default float dtype unless ``dtype`` says otherwise."""
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as e:
            raise ArgumentTypeError(f"{name} must be an array of numbers, "
                                    f"got {type(value).__name__}") from e
    if integer:
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            if t.dtype.is_floating_point and torch.isfinite(t).all() and (t == t.round()).all():
                t = t.long()
            else:
                raise ArgumentTypeError(f"{name} must hold integer indices, got dtype {t.dtype}")
        return t.to(device=device, dtype=torch.long)
    if not (t.dtype.is_floating_point or t.dtype in (torch.int32, torch.int64, torch.int16,
                                                       torch.int8, torch.uint8, torch.bool)):
        raise ArgumentTypeError(f"{name} must be real-valued, got dtype {t.dtype}")
    if not t.dtype.is_floating_point:
        t = t.to(torch.get_default_dtype())
    return t.to(device=device, dtype=dtype or t.dtype)


def float_dtype(dtype) -> torch.dtype:
    """``dtype`` if it is a floating torch dtype (``torch.float32``, ``torch.float64``), torch's
    default dtype for None; anything else raises :class:`ArgumentTypeError`. Probabilities,
    features, observations and rewards are real numbers: an integer dtype would truncate them
    (probabilities to 0), and a complex one is not real."""
    if dtype is None:
        return torch.get_default_dtype()
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ArgumentTypeError(f"dtype must be a floating torch dtype (torch.float32 or "
                                f"torch.float64), got {dtype!r}")
    return dtype


def first_bad(mask: torch.Tensor) -> tuple[int, ...]:
    """Index of the first True entry of ``mask`` (row-major)."""
    return tuple(int(i) for i in mask.nonzero()[0])


def fmt_index(idx: tuple[int, ...]) -> str:
    """``(3, 1)`` as ``"[3, 1]"``, the way error messages print an index."""
    return "[" + ", ".join(str(i) for i in idx) + "]"


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise naming the first non-finite entry of ``t``."""
    bad = ~torch.isfinite(t)
    if bad.any():
        idx = first_bad(bad)
        raise ValueError(f"{name}{fmt_index(idx)} is {t[idx].item()}, expected a finite number")


def sum_tolerance(dtype: torch.dtype) -> float:
    """How far from 1 a sum of probabilities stored in ``dtype`` may be: 1e-6 in float64,
    1e-4 in other dtypes (the rounding that a sum of probabilities in float32 may carry)."""
    return 1e-6 if dtype == torch.float64 else 1e-4


def check_distribution_rows(name: str, p: torch.Tensor, dim: int = -1) -> None:
    """``p`` holds probability distributions along ``dim`` (``(..., n)`` for the default last
    axis: transitions, an initial distribution, a policy's action probabilities): every entry
    finite and >= 0, each row summing to 1 within :func:`sum_tolerance` of ``p``'s dtype.

    The one home of that rule; errors name the first bad entry or row: ``"policy[2, 1, 0] is
    -0.5, expected a probability >= 0"``, ``"policy[2, 1] sums to 3, expected 1"`` (``"initial
    sums to 3, expected 1"`` for a single distribution). A real tensor is expected
    (:func:`as_tensor` makes one)."""
    p = p.detach()
    check_finite(name, p)
    neg = p < 0
    if neg.any():
        idx = first_bad(neg)
        raise ValueError(f"{name}{fmt_index(idx)} is {p[idx].item():.6g}, "
                         "expected a probability >= 0")
    sums = p.sum(dim)
    bad = (sums - 1).abs() > sum_tolerance(p.dtype)
    if bad.any():
        idx = first_bad(bad)
        where = name + (fmt_index(idx) if idx else "")  # one distribution has one sum, no index
        over = "" if dim in (-1, p.dim() - 1) else f" over dim {dim}"
        raise ValueError(f"{where} sums to {sums[idx].item():.6g}{over}, expected 1")


def has_positive_support(prior: torch.distributions.Distribution) -> bool:
    """Whether ``prior`` puts all its mass on ``[0, inf)`` (its support's lower bound is >= 0:
    ``positive``, ``nonnegative``, ``greater_than(c)``, ``interval(c, d)`` with ``c >= 0``),
    as a rationality, a scale or a tie strength needs: a draw below 0 reverses what it
    scales. One rule for every such prior."""
    support = prior.support
    while isinstance(support, torch.distributions.constraints.independent):
        support = support.base_constraint
    low = getattr(support, "lower_bound", None)
    if low is None:
        return False
    return bool((torch.as_tensor(low) >= 0).all())


def check_process_executor(executor, tasks: str = "tasks", *,
                           global_state: str = "seed torch's global random number generator"
                           ) -> None:
    """``executor`` is None or a ``concurrent.futures.Executor`` that runs ``tasks`` in
    processes (a ProcessPoolExecutor, a Dask client's ``get_executor()``).

    A ThreadPoolExecutor is refused: each task ``global_state`` (seeds torch's global random
    number generator, and for some sets its default dtype), state that threads share, so tasks
    running side by side in threads would reseed one another and results would depend on
    timing. ``tasks`` names what runs ("chains", "simulations", "cells") in the message.
    """
    if executor is None:
        return
    if not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor or None, got "
                        f"{type(executor).__name__}")
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
        raise ValueError(f"executor is a ThreadPoolExecutor, expected one that runs {tasks} in "
                         f"processes (a ProcessPoolExecutor, a Dask client's get_executor()): "
                         f"{tasks} {global_state}, which threads share")


def check_indices(name: str, t: torch.Tensor, n: int | None = None, what: str = "an", *,
                  where: torch.Tensor | None = None) -> None:
    """Raise naming the first entry of the integer tensor ``t`` that is not an index: a
    negative one, or, with ``n`` given, one ``>= n``. ``what`` names the kind of index in the
    message (``"a state"``: "expected a state index in [0, S)"); ``where``, a bool tensor of
    ``t``'s shape, limits the check to the entries that are real (padding is ignored)."""
    bad = t < 0 if n is None else (t < 0) | (t >= n)
    if where is not None:
        bad = bad & where
    if bad.any():
        idx = first_bad(bad)
        expected = "a non-negative index" if n is None else f"{what} index in [0, {n})"
        raise ValueError(f"{name}{fmt_index(idx)} is {t[idx].item()}, expected {expected}")


def bool_tensor(name: str, value, device) -> torch.Tensor:
    """``value`` as a bool tensor: bools, or 0/1 (anything else, strings included, is an
    ArgumentTypeError naming ``name``)."""
    try:
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
        raise ArgumentTypeError(f"{name} must be boolean (or 0/1), got {shown}") from None
    if t.dtype != torch.bool:
        if t.dtype.is_complex or not ((t == 0) | (t == 1)).all():
            raise ArgumentTypeError(f"{name} must be boolean (or 0/1), got dtype {t.dtype}")
        t = t != 0
    return t.to(device)


def select_rows(idx, n: int, what: str, whats: str, device=None) -> torch.Tensor:
    """The rows ``idx`` selects of ``n`` items (a ``what``, ``whats`` in the plural) as a long
    tensor ``(k,)`` on ``device``: ``idx`` is one index (an int, a NumPy integer or a 0-d
    integer tensor), a slice, a sequence / array / tensor of indices, or a bool mask ``(n,)``.
    The one rule of ``__getitem__`` over demonstrations, trajectories and comparisons.

    Indices lie in ``[-n, n)``: another is an ``IndexError`` naming it and the range, as is a
    mask of another length; a float, a string or anything else that is no index is an
    :class:`ArgumentTypeError`."""
    rows = torch.arange(n, device=device)
    if (one := integer_scalar(idx)) is not None:
        if not -n <= one < n:
            raise IndexError(f"{what} {one} out of range for {n} {whats}, expected an index "
                             f"in [{-n}, {n})")
        return rows[[one]]
    if isinstance(idx, slice):
        return rows[idx]
    kinds = (f"{whats} must be indexed by an integer, a slice, a sequence of integers or a "
             f"bool mask of length {n}")
    try:
        t = idx if isinstance(idx, torch.Tensor) else torch.as_tensor(np.asarray(idx))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ArgumentTypeError(f"{kinds}, got {type(idx).__name__}") from e
    if t.dtype == torch.bool:
        if tuple(t.shape) != (n,):
            raise IndexError(f"the bool mask has shape {tuple(t.shape)}, expected ({n},), one "
                             f"entry per {what}")
        return rows[t.to(rows.device)]
    if t.dim() > 1 or (t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex)):
        raise ArgumentTypeError(f"{kinds}, got {idx!r}" if t.numel() <= 10 else
                                f"{kinds}, got a {tuple(t.shape)} {t.dtype} array")
    t = t.reshape(-1).long()
    bad = (t < -n) | (t >= n)
    if bad.any():
        i = first_bad(bad)[0]
        raise IndexError(f"index[{i}] is {t[i].item()}, out of range for {n} {whats}, "
                         f"expected an index in [{-n}, {n})")
    return rows[t.to(rows.device)]


def positive_ints(values) -> tuple[int, ...] | None:
    """``values`` as a tuple of ints >= 1, or None when it is not a sequence of those."""
    try:
        return tuple(check_int("value", x) for x in values)
    except (TypeError, ValueError):
        return None


def check_names(name: str, values, n: int) -> tuple[str, ...]:
    """``values`` as a tuple of ``n`` strings, naming ``name`` when it is not a sequence."""
    try:
        out = tuple(str(x) for x in values)
    except TypeError as e:
        raise ArgumentTypeError(f"{name} must be a sequence of {n} names, got {values!r} "
                                f"({type(values).__name__})") from e
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} names, expected {n}")
    return out


def is_posterior(value) -> bool:
    """The one rule for "a posterior was given, not reward draws": anything that is not a
    tensor or an array and has a callable ``reward()`` (a :class:`~bayesirl.RewardPosterior`)."""
    return (not isinstance(value, (torch.Tensor, np.ndarray))
            and callable(getattr(value, "reward", None)))


def to_numpy(x, dtype=None) -> np.ndarray | None:
    """A tensor or array-like as a NumPy array (detached, on the CPU); None stays None.
    ``dtype`` None keeps a tensor's own dtype."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)
