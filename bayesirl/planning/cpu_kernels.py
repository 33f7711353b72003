"""The finite-horizon soft DP and its adjoint on the CPU, compiled with Numba.

Everything is batch-first, as the user sees it: ``r (B, S, A)``, ``log_policy (B, T, S, A)``,
``v (B, T, S)``, and each direction is ONE compiled call, loops over time, states and batch
included. Inference plans small MDPs thousands of times (an 8x8 gridworld with horizon 30 is
10^4 state-actions per pass), where a loop of array operations would cost its Python and
dispatch overhead dozens of times per step; here a backup is a few nanoseconds per
state-action. The states are swept in blocks (:func:`block_size`) and, inside a block, one
batch row after another, so that the block's transitions stay in cache across the batch while
each row reads its successors' values from one contiguous ``(S,)`` row.

The forward pass keeps no scratch: ``v[:, t + 1]`` is the next step's value. The backward pass
is the adjoint recursion (see ``planning._SoftBackwardInduction``).

From :data:`WIDE_BATCH` reward rows on, the soft DP runs with the batch innermost instead
(:func:`_forward_wide`, :func:`_backward_wide`): a successor's values are then one contiguous
``(B,)`` row, so gathers, scatters, exponentials and logarithms are SIMD loops over the batch
(polynomials :func:`fast_exp` and :func:`fast_log`, since Numba's ``math.exp`` and ``math.log``
are scalar libm calls), and tiles of states move between the two layouts through 8x8
transposes in registers (:func:`_transpose_strided`: a scalar transpose moves one element per
instruction and cost as much as the arithmetic at S = 1e5, batch 64). These work in the working
precision throughout (the batch-first kernels take float64 exponentials and sums), so float32
rows take the SIMD path end to end (``benchmarks/planning.py`` measures it).
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import threading

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba import literal_unroll, types
from numba.extending import intrinsic, overload

from bayesirl.planning import buffers as _buffers

_BLOCK_BYTES = 2**18  # transitions of one block of states: (C, A, K) indices and probabilities

_jit = numba.njit(cache=True, nogil=True)


def _interruptible(entry):
    """``entry`` (a Python entry point into the compiled kernels), raising a Ctrl-C as the
    ``KeyboardInterrupt`` it is.

    A Python SIGINT handler that raises (the CLI's, see ``bayesirl.cli.app``) can run while
    Numba boxes an array that a compiled function returns; the dispatcher then returns that
    result with the interrupt still set, and CPython reports it as a ``SystemError`` caused by
    the ``KeyboardInterrupt``. Inference keeps its draws on a ``KeyboardInterrupt`` only, so
    the cause is raised in its place. Any other ``SystemError`` passes unchanged.
    """
    @functools.wraps(entry)
    def call(*args, **kwargs):
        try:
            return entry(*args, **kwargs)
        except SystemError as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                raise e.__cause__ from None
            raise

    return call


def block_size(S: int, A: int, K: int) -> int:
    """States per block: their ``(C, A, K)`` indices and probabilities in about 256 KB."""
    return max(1, min(S, _BLOCK_BYTES // (16 * A * K)))


@_jit
def _q_state(succ, prob, r_b, v_next, s, q_out):
    """``q_out[a] = r_b[s, a] + sum_k prob[s, a, k] v_next[succ[s, a, k]]``; returns max_a."""
    m = -math.inf
    for a in range(succ.shape[1]):
        q = r_b[s, a]
        for k in range(succ.shape[2]):
            q += prob[s, a, k] * v_next[succ[s, a, k]]
        q_out[a] = q
        m = max(m, q)
    return m


@_jit
def _scatter_state(succ, prob, g_q, s, carry_b):
    """``carry_b[s'] += sum_a P(s' | s, a) g_q[a]``: the transpose of :func:`_q_state`."""
    for a in range(succ.shape[1]):
        for k in range(succ.shape[2]):
            carry_b[succ[s, a, k]] += prob[s, a, k] * g_q[a]


@_jit
def _forward(succ, prob, r, v_end, out, v, C, soft):
    """The backward induction of both DPs: ``out`` receives the log-policy (``soft``) or the
    Q-values (hard), ``v`` the log-sum-exp or the max over actions."""
    B, T, S, A = out.shape
    ex = np.empty(C * A if soft else 0)  # exp(q - max) of a block, then log sums (float64)
    for t in range(T - 1, -1, -1):
        for s0 in range(0, S, C):
            end = min(S, s0 + C)
            for b in range(B):
                v_next = v_end[b] if t == T - 1 else v[b, t + 1]
                q, vt = out[b, t], v[b, t]
                for s in range(s0, end):
                    m = _q_state(succ, prob, r[b], v_next, s, q[s])
                    vt[s] = m
                    if soft:
                        for a in range(A):
                            ex[(s - s0) * A + a] = q[s, a] - m
                if soft:
                    _soft_normalise(q, vt, s0, end, ex)


@_jit
def _soft_normalise(q, vt, s0, end, ex):
    """States ``s0 <= s < end`` of one step: ``vt[s] += log sum_a exp(ex)`` and
    ``q[s] -= vt[s]``, for ``ex`` holding ``q - max`` (``vt`` the max). The exponentials and
    logarithms run as flat loops over the block, which LLVM vectorises (libm's are scalar
    calls, and a loop over a state's few actions is too short to vectorise)."""
    A, n = q.shape[1], end - s0
    for i in range(n * A):
        ex[i] = fast_exp(ex[i])
    for k in range(n):
        z = ex[k * A]
        for a in range(1, A):
            z += ex[k * A + a]
        ex[k] = z  # k * A >= k: a state's sum overwrites only sums already taken
    for k in range(n):
        ex[k] = fast_log(ex[k])
    for k in range(n):
        s = s0 + k
        value = vt[s] + ex[k]
        vt[s] = value
        for a in range(A):
            q[s, a] -= value


def _batch_parts(B: int, threads: int, row_work: int) -> list[slice]:
    """Split ``B`` reward rows over up to ``threads`` threads, each part at least
    :data:`WIDE_BATCH` rows (so that each runs the wide kernel) and :data:`MIN_THREAD_WORK`
    state-action-steps (``row_work = T * S * A`` per row: one call runs all T backups of its
    part; smaller parts lose to the pool's hand-off)."""
    n = max(1, min(threads, B // WIDE_BATCH, row_work * B // MIN_THREAD_WORK))
    edges = [B * i // n for i in range(n + 1)]
    return [slice(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _in_threads(fn, parts: list[slice]) -> list:
    """``[fn(part) for part in parts]``, the first in this thread and the others in a pool
    (the kernels release the GIL). The pool starts its threads as they are first needed."""
    global _pool
    if len(parts) == 1:
        return [fn(parts[0])]
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1,
                                                          thread_name_prefix="bayesirl-dp")
    futures = [_pool.submit(fn, part) for part in parts[1:]]
    first = fn(parts[0])
    return [first] + [f.result() for f in futures]


@_interruptible
def soft_dp_forward(succ, prob, r, v_end, log_policy, v, threads: int = 1):
    """Backward induction, filling ``log_policy (B, T, S, A)`` and ``v (B, T, S)``.

    ``succ, prob: (S, A, K)`` the sparse transitions, ``r: (B, S, A)``, ``v_end: (B, S)`` the
    value of the state reached after the last step. All C-contiguous, one floating dtype.
    ``threads``: batches of at least twice :data:`WIDE_BATCH` rows are split over threads.
    """
    def run(part):
        _soft_forward_rows(succ, prob, r[part], v_end[part], log_policy[part], v[part])

    B, T, S, A = log_policy.shape
    _in_threads(run, _batch_parts(B, threads, T * S * A))


def _soft_forward_rows(succ, prob, r, v_end, log_policy, v):
    B, _, S, A = log_policy.shape
    if B >= WIDE_BATCH:
        dt = log_policy.dtype
        _forward_wide(succ, prob, r, v_end, log_policy, v, _buffers.empty((S, A, B), dt),
                      _buffers.empty((S, B), dt), _buffers.empty((S, B), dt),
                      np.empty((TILE, A, B), dt), np.empty(B, dt), np.empty(B, dt))
    else:
        _forward(succ, prob, r, v_end, log_policy, v, block_size(*succ.shape), True)


@_jit
def _backward(succ, prob, out, v, g_v, g_out, g_r, carry, carry_next, g_q, rtol, C):
    """The adjoint of :func:`_forward`. ``v is None``: the soft DP, ``out`` the log-policy,
    ``dv_t / dq_t = pi_t``; else the hard DP, ``out`` the Q-values, ``dv_t / dq_t`` the
    greedy policy with ties (within ``rtol * max(1, |v|)``) split evenly."""
    B, T, S, A = out.shape
    g_r[...] = 0
    carry[...] = 0
    pi = np.empty(C * A if v is None else 0, out.dtype)  # soft: a block's policy
    for t in range(T):
        carry_next[...] = 0
        for s0 in range(0, S, C):
            end = min(S, s0 + C)
            for b in range(B):
                o = out[b, t]
                if v is None:  # one flat loop, which LLVM vectorises
                    flat = o.reshape(-1)
                    for i in range((end - s0) * A):
                        pi[i] = fast_exp(flat[s0 * A + i])
                for s in range(s0, end):
                    w = carry[b, s]
                    if g_v is not None:
                        w += g_v[b, t, s]
                    if v is None:
                        if g_out is not None:  # d log pi / dq also moves v
                            for a in range(A):
                                w -= g_out[b, t, s, a]
                        for a in range(A):
                            g_q[a] = pi[(s - s0) * A + a] * w
                    else:
                        top = v[b, t, s] - rtol * max(1.0, abs(v[b, t, s]))
                        n = 0
                        for a in range(A):
                            n += o[s, a] >= top
                        for a in range(A):
                            g_q[a] = w / n if o[s, a] >= top else 0.0
                    for a in range(A):
                        if g_out is not None:
                            g_q[a] += g_out[b, t, s, a]
                        g_r[b, s, a] += g_q[a]
                    _scatter_state(succ, prob, g_q, s, carry_next[b])
        carry, carry_next = carry_next, carry
    return carry


def _adjoint_buffers(B, S, A, dtype):
    """Scratch of the adjoint passes: two ``(B, S)`` carries and one ``(A,)`` row of g_q."""
    return np.empty((B, S), dtype), np.empty((B, S), dtype), np.empty(A, dtype)


@_interruptible
def soft_dp_backward(succ, prob, log_policy, g_v, g_lp, g_r, threads: int = 1):
    """Adjoint of :func:`soft_dp_forward`, forward in time::

        g_q_t = G_lp[t] + pi_t * (G_v[t] + P^T g_q_{t-1} - sum_a G_lp[t]),
        g_r = sum_t g_q_t,   g_v_end = P^T g_q_{T-1}.

    ``g_v: (B, T, S)`` and ``g_lp: (B, T, S, A)`` are the output gradients (either may be
    None); writes ``dL/dr`` into ``g_r: (B, S, A)`` and returns ``dL/dv_end: (B, S)``.
    """
    def run(part):
        return _soft_backward_rows(succ, prob, log_policy[part],
                                   None if g_v is None else g_v[part],
                                   None if g_lp is None else g_lp[part], g_r[part])

    B, T, S, A = log_policy.shape
    return np.concatenate(_in_threads(run, _batch_parts(B, threads, T * S * A)))


def _soft_backward_rows(succ, prob, log_policy, g_v, g_lp, g_r):
    B, _, S, A = log_policy.shape
    dt = log_policy.dtype
    if B >= WIDE_BATCH:
        return _backward_wide(succ, prob, log_policy, g_v, g_lp, g_r,
                              _buffers.empty((S, A, B), dt), _buffers.empty((S, B), dt),
                              _buffers.empty((S, B), dt),
                              np.empty((TILE, A, B), dt), np.empty((TILE, A, B), dt),
                              np.empty((TILE, B), dt), np.empty((A, B), dt), np.empty(B, dt))
    return _backward(succ, prob, log_policy, None, g_v, g_lp, g_r,
                     *_adjoint_buffers(B, S, A, dt), 0.0, block_size(*succ.shape))


@_interruptible
def hard_dp_forward(succ, prob, r, v_end, q, v):
    """Hard backward induction: fills ``q (B, T, S, A)`` and ``v = max_a q`` ``(B, T, S)``.
    Arguments as in :func:`soft_dp_forward`."""
    S, A, K = succ.shape
    _forward(succ, prob, r, v_end, q, v, block_size(S, A, K), False)


@_interruptible
def hard_dp_backward(succ, prob, q, v, g_v, g_q, g_r, rtol):
    """Adjoint of :func:`hard_dp_forward`: ``v_t = max_a q_t`` passes its gradient to the
    maximising actions, split evenly among ties within ``rtol * max(1, |v|)``::

        g_q_t = G_q[t] + w_t * (G_v[t] + P^T g_q_{t-1}),   g_r = sum_t g_q_t,

    ``w_t`` the tie-split greedy policy. Writes ``dL/dr`` into ``g_r (B, S, A)`` and returns
    ``dL/dv_end (B, S)``.
    """
    B, _, S, A = q.shape
    return _backward(succ, prob, q, v, g_v, g_q, g_r, *_adjoint_buffers(B, S, A, q.dtype), rtol,
                     block_size(*succ.shape))


# --------------------------------------------------------------- wide batches: batch innermost
# The user's batch-first arrays are transposed TILE states at a time into small batch-last
# scratch tiles; the reward, the values and the carries live batch-last for the whole call.

WIDE_BATCH = 8  # from this many rows on, the batch-innermost kernels are the faster ones
MIN_THREAD_WORK = 2**16  # T * S * A * rows of a batch part run in its own thread
TILE = 64        # states per transposed tile


def fast_exp(x):
    """``exp(x)`` for ``x <= 0`` as straight-line float code (no libm call) that LLVM
    vectorises: within 2 ulp of exp down to the smallest normal result, 0 below, NaN for NaN
    (tests/test_planning.py measures it)."""
    raise NotImplementedError  # only its numba overload below is ever called


def fast_log(x):
    """``log(x)`` as straight-line float code (no libm call) that LLVM vectorises: within
    1 ulp of log for positive numbers (subnormals included), -inf for 0, inf for inf, NaN for
    NaN and negative numbers (tests/test_planning.py measures it)."""
    raise NotImplementedError  # only its numba overload below is ever called


_BITCASTS = {types.int32: (types.float32, llvm_ir.FloatType()),
             types.int64: (types.float64, llvm_ir.DoubleType()),
             types.float32: (types.int32, llvm_ir.IntType(32)),
             types.float64: (types.int64, llvm_ir.IntType(64))}


@intrinsic
def _bitcast(typingctx, x):
    """Reinterpret the bits of an int32 as a float32, of an int64 as a float64, and back."""
    if x not in _BITCASTS:
        return None
    to, llvm_type = _BITCASTS[x]

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_type)

    return to(x), codegen


@intrinsic
def _divide(typingctx, x, y):
    """``x / y`` for floats of one type, without the zero check Numba puts on ``/`` (a
    branch that stops LLVM from vectorising the loop around it)."""
    if x != y or x not in (types.float32, types.float64):
        return None

    def codegen(context, builder, signature, args):
        return builder.fdiv(*args)

    return x(x, y), codegen


def _exp_impl(ftype, itype, magic, lo, ln2_hi, ln2_lo, degree, bias, mantissa):
    """Cody-Waite reduction ``x = n ln2 + f``, |f| <= ln2 / 2, a Taylor polynomial of
    ``degree`` in Horner form for exp(f), and ``2^n`` built from its exponent bits."""
    coef = tuple(ftype(1 / math.factorial(i)) for i in range(degree, -1, -1))
    magic, lo, log2e = ftype(magic), ftype(lo), ftype(1 / math.log(2))
    ln2_hi, ln2_lo = ftype(ln2_hi), ftype(ln2_lo)
    bias, mantissa = itype(bias), itype(mantissa)

    def impl(x):
        y = max(x, lo)
        n = (y * log2e + magic) - magic  # round to nearest, without a call
        f = (y - n * ln2_hi) - n * ln2_lo
        p = coef[0]
        for c in literal_unroll(coef[1:]):
            p = p * f + c
        e = p * _bitcast(itype((itype(n) + bias) << mantissa))
        return e if x >= lo else (ftype(0.0) if x < lo else x)  # x < lo: 0; NaN: NaN

    return impl


_EXP32 = _exp_impl(np.float32, np.int32, 12582912.0, -87.0, 0.693359375, -2.12194440e-4,
                   7, 127, 23)
_EXP64 = _exp_impl(np.float64, np.int64, 6755399441055744.0, -708.0, 0.693145751953125,
                   1.42860682030941723212e-6, 13, 1023, 52)


def _overload_by_float(fn, impl32, impl64) -> None:
    """Register ``impl32`` and ``impl64`` as the Numba implementations of ``fn`` for a float32
    and a float64 argument, inlined at every call site (any other type: no implementation, so
    Numba reports a typing error)."""
    @overload(fn, inline="always")
    def typer(x):
        if x == types.float32:
            return impl32
        if x == types.float64:
            return impl64
        return None


_overload_by_float(fast_exp, _EXP32, _EXP64)


def _log_impl(ftype, itype, mantissa, bias, scale_bits, ln2_hi, ln2_lo, terms):
    """fdlibm's reduction ``x = 2^e m``, sqrt(1/2) <= m < sqrt(2), and
    ``log(m) = f - f^2/2 + s (f^2/2 + R(s^2))`` with ``f = m - 1``, ``s = f / (2 + f)`` and R the
    atanh series (|s| <= 0.172) to ``terms`` terms; subnormals are scaled up first."""
    coef = tuple(ftype(2 / (2 * k + 1)) for k in range(terms, 0, -1))
    tiny, scale = ftype(2.0 ** (1 - bias)), ftype(2.0 ** scale_bits)
    sqrt2, ln2_hi, ln2_lo = ftype(math.sqrt(2)), ftype(ln2_hi), ftype(ln2_lo)
    low_bits, one_bits = itype((1 << mantissa) - 1), itype(bias << mantissa)
    bias, scale_bits = itype(bias), itype(scale_bits)
    zero, half, two = ftype(0.0), ftype(0.5), ftype(2.0)
    inf, nan = ftype(np.inf), ftype(np.nan)

    def impl(x):
        small = x < tiny
        i = _bitcast(x * scale if small else x)
        e = itype(itype(i >> mantissa) - bias - (scale_bits if small else itype(0)))
        m = _bitcast(itype((i & low_bits) | one_bits))  # [1, 2)
        big = m > sqrt2
        f = (m * half if big else m) - ftype(1.0)
        k = ftype(itype(e + itype(1)) if big else e)
        s = _divide(f, two + f)
        z = s * s
        r = coef[0]
        for c in literal_unroll(coef[1:]):
            r = r * z + c
        r = r * z
        hfsq = half * f * f
        y = k * ln2_hi + (f - (hfsq - (s * (hfsq + r) + k * ln2_lo)))
        finite = (x > zero) & (x < inf)
        return y if finite else (-inf if x == zero else (x if x > zero else nan))

    return impl


_LOG32 = _log_impl(np.float32, np.int32, 23, 127, 25, 0.693359375, -2.12194440e-4, 5)
_LOG64 = _log_impl(np.float64, np.int64, 52, 1023, 54, 6.93147180369123816490e-01,
                   1.90821492927058770002e-10, 11)


_overload_by_float(fast_log, _LOG32, _LOG64)


# An 8x8 block transpose in registers: 8 unaligned vector loads, the 24-shuffle network of
# unpacklo/hi (32-bit), then 64-bit, then 128-bit interleaves, 8 vector stores. Scalar loops
# (LLVM does not vectorise a transpose) move one element per instruction.
_SHUFFLES = ((0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15),
             (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15),
             (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15))


@intrinsic
def _transpose8(typingctx, src, src_at, src_stride, dst, dst_at, dst_stride):
    """``dst[dst_at + j * dst_stride + i] = src[src_at + i * src_stride + j]`` for
    ``i, j < 8``: ``src, dst`` flat float arrays of one dtype, offsets in elements. NO bounds
    checks: the caller keeps every index in range (:func:`_transpose_strided`)."""
    ok = (isinstance(src, types.Array) and isinstance(dst, types.Array)
          and src.dtype in (types.float32, types.float64) and dst.dtype == src.dtype
          and src.ndim == dst.ndim == 1)
    if not ok:
        return None

    def codegen(context, builder, signature, args):
        i64 = llvm_ir.IntType(64)
        vec = llvm_ir.VectorType(context.get_value_type(signature.args[0].dtype), 8)
        lo, hi, lo2, hi2, lo4, hi4 = (
            llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(32), 8), m) for m in _SHUFFLES)
        offsets = [builder.sext(a, i64) if a.type != i64 else a
                   for a in (args[1], args[2], args[4], args[5])]

        src_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        dst_data = context.make_array(signature.args[3])(context, builder, args[3]).data
        s_at, s_stride, d_at, d_stride = offsets

        def pointer(data, at, stride, i):
            ptr = builder.gep(data, [builder.add(at, builder.mul(stride, i64(i)))])
            return builder.bitcast(ptr, vec.as_pointer())

        x = [builder.load(pointer(src_data, s_at, s_stride, i), align=1) for i in range(8)]
        t = []
        for k in range(0, 8, 2):
            t += [builder.shuffle_vector(x[k], x[k + 1], lo),
                  builder.shuffle_vector(x[k], x[k + 1], hi)]
        u = []
        for g in (0, 4):
            for a, b in ((t[g], t[g + 2]), (t[g + 1], t[g + 3])):
                u += [builder.shuffle_vector(a, b, lo2), builder.shuffle_vector(a, b, hi2)]
        y = ([builder.shuffle_vector(u[j], u[j + 4], lo4) for j in range(4)]
             + [builder.shuffle_vector(u[j], u[j + 4], hi4) for j in range(4)])
        for j in range(8):
            builder.store(y[j], pointer(dst_data, d_at, d_stride, j), align=1)
        return context.get_dummy_value()

    return types.none(src, src_at, src_stride, dst, dst_at, dst_stride), codegen


@_jit
def _transpose_strided(src, src_at, src_stride, dst, dst_at, dst_stride, rows, cols):
    """``dst[dst_at + j * dst_stride + i] = src[src_at + i * src_stride + j]`` for
    ``i < rows, j < cols`` (flat arrays): 8x8 register blocks, scalar edges. The side with the
    larger stride (far apart rows, in memory the window does not cover) is walked eight of
    its rows at a time from start to end, which the hardware prefetchers follow better than
    a sweep of all its rows eight elements at a time."""
    if not (0 <= src_at and src_at + (rows - 1) * src_stride + cols <= src.size
            and 0 <= dst_at and dst_at + (cols - 1) * dst_stride + rows <= dst.size):
        raise IndexError("transpose out of bounds")
    rows_outer = src_stride > dst_stride
    r8, c8 = rows - rows % 8, cols - cols % 8
    outer, inner = (r8, c8) if rows_outer else (c8, r8)
    for p in range(0, outer, 8):
        for q in range(0, inner, 8):
            i0, j0 = (p, q) if rows_outer else (q, p)
            _transpose8(src, src_at + i0 * src_stride + j0, src_stride,
                        dst, dst_at + j0 * dst_stride + i0, dst_stride)
    for i in range(r8, rows):  # scalar edges
        for j in range(cols):
            dst[dst_at + j * dst_stride + i] = src[src_at + i * src_stride + j]
    for j in range(c8, cols):
        for i in range(r8):
            dst[dst_at + j * dst_stride + i] = src[src_at + i * src_stride + j]


@_jit
def _transpose(x, out):
    """``out[n, b] = x[b, n]`` for C-contiguous ``x (B, N)``, in slabs of :data:`TILE`
    columns whose ``(TILE, B)`` destination stays in cache."""
    B, N = x.shape
    xf, of = x.reshape(-1), out.reshape(-1)
    for n0 in range(0, N, TILE):
        _transpose_strided(xf, n0, N, of, n0 * B, B, B, min(TILE, N - n0))


@_jit
def _forward_wide(succ, prob, r, v_end, log_policy, v, rT, v_a, v_b, q, m, z):
    """:func:`_forward` with the batch innermost: ``rT (S, A, B)`` holds ``r`` transposed,
    ``v_a, v_b (S, B)`` the values of two consecutive steps, ``q (TILE, A, B)`` one tile's
    Q-values, written out as ``q - v``, ``m, z (B,)`` the running max and sum."""
    B, T, S, A = log_policy.shape
    _transpose(v_end, v_a)
    _transpose(r.reshape(B, S * A), rT.reshape(S * A, B))
    v_next, v_now = v_a, v_b
    for t in range(T - 1, -1, -1):
        for s0 in range(0, S, TILE):
            n = min(TILE, S - s0)
            for i in range(n):
                s = s0 + i
                for b in range(B):
                    m[b] = -math.inf
                for a in range(A):
                    for b in range(B):
                        q[i, a, b] = rT[s, a, b]
                    for k in range(succ.shape[2]):
                        p, j = prob[s, a, k], succ[s, a, k]
                        for b in range(B):
                            q[i, a, b] += p * v_next[j, b]
                    for b in range(B):
                        m[b] = max(m[b], q[i, a, b])
                for b in range(B):
                    z[b] = 0
                for a in range(A):
                    for b in range(B):
                        z[b] += fast_exp(q[i, a, b] - m[b])
                for b in range(B):
                    v_now[s, b] = m[b] + fast_log(z[b])
            for i in range(n):
                for a in range(A):
                    for b in range(B):
                        q[i, a, b] -= v_now[s0 + i, b]
            _transpose_strided(q.reshape(-1), 0, B, log_policy.reshape(-1),
                               (t * S + s0) * A, T * S * A, n * A, B)
            _transpose_strided(v_now.reshape(-1), s0 * B, B, v.reshape(-1), t * S + s0, T * S,
                               n, B)
        v_next, v_now = v_now, v_next


@_jit
def _backward_wide(succ, prob, log_policy, g_v, g_lp, g_r, g_rT, carry, carry_next, lp, glp,
                   gv, g_q, w):
    """:func:`_backward` with the batch innermost: ``g_rT (S, A, B)``, ``carry,
    carry_next (S, B)``, tiles ``lp, glp (TILE, A, B)`` and ``gv (TILE, B)`` of the inputs
    transposed in, ``g_q (A, B)`` and ``w (B,)``."""
    B, T, S, A = log_policy.shape
    g_rT[...] = 0
    carry[...] = 0
    if g_lp is None:  # a missing output gradient is a zero tile, once for the whole call
        glp[...] = 0
    if g_v is None:
        gv[...] = 0
    for t in range(T):
        carry_next[...] = 0
        for s0 in range(0, S, TILE):
            n = min(TILE, S - s0)
            at = (t * S + s0) * A
            _transpose_strided(log_policy.reshape(-1), at, T * S * A, lp.reshape(-1), 0, B,
                               B, n * A)
            if g_lp is not None:
                _transpose_strided(g_lp.reshape(-1), at, T * S * A, glp.reshape(-1), 0, B, B,
                                   n * A)
            if g_v is not None:
                _transpose_strided(g_v.reshape(-1), t * S + s0, T * S, gv.reshape(-1), 0, B, B,
                                   n)
            for i in range(n):
                s = s0 + i
                for b in range(B):
                    w[b] = carry[s, b] + gv[i, b]
                for a in range(A):
                    for b in range(B):
                        w[b] -= glp[i, a, b]
                for a in range(A):
                    for b in range(B):
                        g_q[a, b] = fast_exp(lp[i, a, b]) * w[b] + glp[i, a, b]
                        g_rT[s, a, b] += g_q[a, b]
                    for k in range(succ.shape[2]):
                        p, j = prob[s, a, k], succ[s, a, k]
                        for b in range(B):
                            carry_next[j, b] += p * g_q[a, b]
        carry, carry_next = carry_next, carry
    _transpose(g_rT.reshape(S * A, B), g_r.reshape(B, S * A))
    g_v_end = np.empty((B, S), carry.dtype)
    _transpose(carry, g_v_end)
    return g_v_end
