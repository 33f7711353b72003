"""Finite-horizon soft value iteration: time per backup, forward + backward.

For gridworlds ``envs.gridworld(size=n, slip=0.1, horizon=50)`` with S = 1e2, 1e3 (size 32,
S = 1024), 1e4 (size 100) and 1e5 (size 316, S = 99856), batch B = 1 and 64, it times::

    reward = rand(B, S, A, requires_grad=True)                 # float32
    plan = soft_value_iteration(mdp, reward)
    loss = <plan.log_policy, G> + plan.v.sum()                 # G fixed random: both outputs
    loss.backward()                                            # (see Contract)

and reports (forward + backward wall time) / horizon, the median of a few repeats after a
warm-up, beside

(a) a dense ``(S, A, S)`` implementation of the same backward induction (a matrix product per
    backup, plain torch autograd), S <= 1e4 only, run on a shorter horizon at S = 1e4 so that
    it stays within a time budget (the per-backup time does not depend on the horizon);
(b) the memory-bandwidth bound of one backup: ``bytes_min / bandwidth``, with the bandwidth
    measured in the same run by a STREAM triad ``a = b + s * c`` on preallocated float32 arrays
    (``torch.add(b, c, alpha=s, out=a)``, 3 arrays of 2**26 floats, best of 10; STREAM counts
    12 bytes per element: read b and c, write a) and

        bytes_min = 4 * B * (forward:  S*A (read r) + S (read v_next)
                                       + S*A (write log_policy) + S (write v)
                             backward: 2*S*A (read G and log_policy)
                                       + S*A (write grad r) + S (write grad v_next))
                  = 4 * B * (5*S*A + 3*S)  bytes per backup.

    It ignores the sparse transition matrix (S*A*K entries, read once per direction, shared by
    the batch) and any re-reads, so no implementation can beat it.

Targets (printed as PASS/FAIL): at least 50x faster than dense at S = 1e4 (batch 1), and within
8x of the bandwidth bound at S = 1e5, batch 64. At S = 1e5, batch 64, the horizon is 10, not
50: with T = 50 the float32 ``log_policy``, ``q``, ``G`` and their copies are 6.4 GB each.

Run: ``python benchmarks/planning.py [--quick] [--threads N]`` (default 1 thread).
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time

import torch

from bayesirl import envs, soft_value_iteration

SIZES = [(10, 100), (32, 1024), (100, 10_000), (316, 99_856)]  # (grid size, S)
BATCHES = [1, 64]
HORIZON = 50
DENSE_MAX_S = 10_000
DENSE_BUDGET_S = 120.0  # total wall time the dense reference may use
TARGET_DENSE_SPEEDUP = 50.0
TARGET_BOUND_RATIO = 8.0


def stream_triad_bandwidth(n: int = 2**26, repeats: int = 10) -> float:
    """Bytes per second of the STREAM triad ``a = b + s * c`` (12 bytes per element)."""
    a = torch.empty(n, dtype=torch.float32)
    b = torch.rand(n, dtype=torch.float32)
    c = torch.rand(n, dtype=torch.float32)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        best = min(best, time.perf_counter() - t0)
    del a, b, c
    return 12 * n / best


def bytes_per_backup(S: int, A: int, B: int) -> int:
    """Minimum float32 traffic of one forward + backward soft backup (see the module doc)."""
    forward = S * A + S + S * A + S
    backward = 2 * S * A + S * A + S
    return 4 * B * (forward + backward)


def _time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Contract(torch.autograd.Function):
    """``<x, G>`` whose backward hands ``G`` itself to the planner (``dL/dx = G``).

    Written as ``(x * G).sum()`` the loss would allocate two ``(B, T, S, A)`` tensors per step
    (the product and its gradient); at S = 1e5, batch 64 those are 1.3 GB each, and the page
    faults of fresh memory alone would cost more than the planner. The planner's work is the
    same either way: it reads the gradient ``G`` it is given.
    """

    @staticmethod
    def forward(ctx, x, G):
        ctx.G = G
        return torch.dot(x.reshape(-1), G.reshape(-1))

    @staticmethod
    def backward(ctx, grad):
        return (ctx.G if bool(grad == 1) else grad * ctx.G), None


def time_bayesirl(mdp, B: int, repeats: int) -> float:
    """Seconds per backup of bayesirl's soft value iteration, forward + backward."""
    S, A, T = mdp.n_states, mdp.n_actions, mdp.horizon
    g = torch.Generator().manual_seed(0)
    reward = torch.rand(B, S, A, generator=g, dtype=mdp.dtype).requires_grad_()
    G = torch.randn(B, T, S, A, generator=g, dtype=mdp.dtype)

    def step():
        reward.grad = None
        plan = soft_value_iteration(mdp, reward)
        (Contract.apply(plan.log_policy, G) + plan.v.sum()).backward()

    return _time(step, repeats) / T


def dense_soft_induction(P2: torch.Tensor, reward: torch.Tensor, T: int):
    """The same finite-horizon soft DP with a dense ``P2: (S * A, S)``; ``reward: (B, S, A)``.

    Returns ``log_policy (B, T, S, A)`` and ``v (B, T, S)``; differentiable by plain autograd.
    """
    B, S, A = reward.shape
    v = reward.new_zeros(B, S)
    log_policy, values = [], []
    for _ in range(T):
        q = reward + (P2 @ v.T).T.reshape(B, S, A)
        v = torch.logsumexp(q, -1)
        log_policy.append(q - v.unsqueeze(-1))
        values.append(v)
    return torch.stack(log_policy[::-1], 1), torch.stack(values[::-1], 1)


def time_dense(mdp, B: int, T: int, repeats: int) -> float:
    """Seconds per backup of :func:`dense_soft_induction`, forward + backward."""
    S, A = mdp.n_states, mdp.n_actions
    P2 = mdp.transition_matrix().reshape(S * A, S)
    g = torch.Generator().manual_seed(0)
    reward = torch.rand(B, S, A, generator=g, dtype=mdp.dtype).requires_grad_()
    G = torch.randn(B, T, S, A, generator=g, dtype=mdp.dtype)

    def step(horizon=T):
        reward.grad = None
        log_policy, v = dense_soft_induction(P2, reward, horizon)
        ((log_policy * G[:, :horizon]).sum() + v.sum()).backward()

    step(1)  # warm-up on one backup (the dense reference is slow at S = 1e4)
    return _time(step, repeats, warmup=0) / T


def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def main(quick: bool = False, threads: int = 1) -> list[dict]:
    """Print the table and the target lines; return the rows."""
    torch.set_num_threads(threads)
    sizes = [s for s in SIZES if s[1] <= 1024] if quick else SIZES
    print(f"planning: soft value iteration, forward + backward per backup, float32, "
          f"threads={torch.get_num_threads()}")
    bandwidth = stream_triad_bandwidth(n=2**24 if quick else 2**26)
    print(f"STREAM triad bandwidth: {bandwidth / 1e9:.2f} GB/s")
    rows, dense_spent = [], 0.0
    for size, S in sizes:
        base = envs.gridworld(size=size, slip=0.1, horizon=HORIZON, block=size // 4,
                              dtype=torch.float32)
        A = base.n_actions
        for B in BATCHES:
            T = 10 if S > 50_000 and B > 1 else HORIZON
            mdp = base if T == HORIZON else base.replace(horizon=T)
            repeats = 3 if quick or S * B > 1e6 else 5
            ours = time_bayesirl(mdp, B, repeats)
            gc.collect()
            dense = None
            if S <= DENSE_MAX_S and dense_spent < DENSE_BUDGET_S:
                t_dense = 3 if S > 1024 else 10 if quick else HORIZON
                t0 = time.perf_counter()
                dense = time_dense(mdp, B, t_dense, repeats=1 if S > 1024 or quick else 3)
                dense_spent += time.perf_counter() - t0
                gc.collect()
            bound = bytes_per_backup(S, A, B) / bandwidth
            rows.append(dict(S=S, B=B, T=T, ours=ours, dense=dense, bound=bound))
            print(f"  S={S} B={B} T={T}: {ours * 1e3:.3f} ms/backup", flush=True)
        del base
        gc.collect()

    print()
    print(f"{'S':>7} {'batch':>5} {'T':>3} {'bayesirl ms':>12} {'dense ms':>10} "
          f"{'vs dense':>9} {'bound ms':>9} {'x bound':>8}")
    for row in rows:
        speedup = None if row["dense"] is None else row["dense"] / row["ours"]
        print(f"{row['S']:>7} {row['B']:>5} {row['T']:>3} {row['ours'] * 1e3:>12.3f} "
              f"{_fmt(None if row['dense'] is None else row['dense'] * 1e3):>10} "
              f"{_fmt(speedup, '.1f'):>9} {row['bound'] * 1e3:>9.4f} "
              f"{row['ours'] / row['bound']:>8.1f}")
    print("(ms per backup = forward + backward wall time / horizon T; the dense reference runs "
          f"{'10' if quick else HORIZON} backups at S <= 1e3 and 3 at S = 1e4)")

    def find(S, B):
        return next((r for r in rows if r["S"] == S and r["B"] == B), None)

    row = find(10_000, 1)
    if row is not None and row["dense"] is not None:
        speedup = row["dense"] / row["ours"]
        verdict = "PASS" if speedup >= TARGET_DENSE_SPEEDUP else "FAIL"
        print(f"{verdict}: S=1e4, batch 1: {speedup:.1f}x faster than dense "
              f"(target >= {TARGET_DENSE_SPEEDUP:.0f}x)")
    row = find(99_856, 64)
    if row is not None:
        ratio = row["ours"] / row["bound"]
        verdict = "PASS" if ratio <= TARGET_BOUND_RATIO else "FAIL"
        print(f"{verdict}: S=1e5, batch 64: {ratio:.1f}x the bandwidth bound "
              f"(target <= {TARGET_BOUND_RATIO:.0f}x)")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only S <= 1e3, in seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    main(args.quick, args.threads)
