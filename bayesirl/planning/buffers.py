"""Reuse of large CPU output buffers between calls of the same shape.

Fresh memory is expensive: the first write to a newly mapped page costs the kernel (and, on a
virtual machine, the hypervisor) a page fault and a zero fill, which makes the first pass over
a fresh array several times slower than the next (``benchmarks/RESULTS.md``, "Figures behind
design choices"). Torch's CPU allocator keeps no cache, so a planner called thousands of
times with the same shapes (as NUTS, SVI and the benchmarks do) would pay that on every call
for its ``(..., T, S, A)`` outputs.

:func:`empty` keeps the large arrays it allocates and hands out a view of one; it hands the
array out again once that view has died, i.e. every tensor wrapping it (``torch.from_numpy``
holds the view) and every tensor view of those is gone. At most :data:`MAX_FREE_BYTES` of
unused arrays are kept; :func:`clear` drops them.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

MIN_BYTES = 2**24        # smaller arrays come quickly from malloc's own free lists
MAX_FREE_BYTES = 2**31   # unused arrays kept for reuse, at most
#: Reward draws planned in one batched call where a caller walks over many (posterior summaries,
#: decisions, plots): enough to amortise a planner call, few enough that a chunk's
#: ``(draws, T, S, A)`` policies stay a modest allocation. The one home of that chunk size.
DRAWS_PER_PLAN = 64

_held: list[tuple[np.ndarray, weakref.ref]] = []  # (array, its handed-out view), oldest first
_lock = threading.Lock()  # the planners' batch parts ask from several threads at once


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, reusing the memory of an earlier one that is no
    longer referenced. Wrap it with ``torch.from_numpy`` (never keep other NumPy views)."""
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    if int(np.prod(shape)) * dtype.itemsize < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        return _reuse_or_allocate(shape, dtype)


def _reuse_or_allocate(shape, dtype) -> np.ndarray:
    for i, (arr, ref) in enumerate(_held):
        if ref() is None and arr.shape == shape and arr.dtype == dtype:
            view = arr[...]
            del _held[i]
            _held.append((arr, weakref.ref(view)))
            return view
    arr = np.empty(shape, dtype)
    view = arr[...]
    spare = sum(a.nbytes for a, r in _held if r() is None)
    keep = []
    for a, r in _held:  # oldest first: forget unused arrays beyond the budget
        if r() is None and spare > MAX_FREE_BYTES:
            spare -= a.nbytes
        else:
            keep.append((a, r))
    _held[:] = keep + [(arr, weakref.ref(view))]
    return view


def clear() -> None:
    """Forget every kept array (arrays still in use stay valid and are freed as usual)."""
    with _lock:
        _held.clear()
