"""Running independent jobs (MCMC chains) one after another, in worker processes, or on any
``concurrent.futures.Executor``; Ctrl-C keeps what the jobs made so far.

A job is a picklable, seeded description whose result does not depend on where it runs, so
:func:`run_jobs` may run it anywhere:

- in this process, one after another;
- in a local pool of at most :func:`usable_cores` processes (or ``max_workers``), the rest
  queued, one torch and one BLAS thread each. Processes start with ``spawn`` (``fork`` is unsafe
  with OpenMP threads). ``spawn`` normally re-runs the parent's ``__main__`` in every child, so
  a script that calls ``infer()`` without ``if __name__ == "__main__":`` would start inference
  again there; a job that needs nothing from ``__main__`` (checked by pickling it) starts its
  processes without it, which works the same from a script, a notebook or a REPL. A job that
  does need ``__main__`` (a class defined in the script or notebook) runs in processes that
  re-run a guarded script, and one after another otherwise, with a one-line note;
- on a given executor (e.g. a Dask client's ``get_executor()``), whose workers should run one
  job per process: jobs seed torch's global random number generator.

Interrupts. Worker processes start with SIGINT blocked, whoever sends it (a terminal's Ctrl-C
reaches the whole process group; Jupyter's interrupt only the kernel), and exit when their parent
dies (``PR_SET_PDEATHSIG`` on Linux, else a thread watching the parent's pid). The first Ctrl-C in
this process asks the local workers to stop after their current iteration
(:func:`stop_requested`) and cancels the jobs not started; their results, with the draws made so
far, come back as usual. A second Ctrl-C changes nothing; a third stops waiting and drops the
jobs still finishing. Jobs on a given executor cannot be asked to stop: the first Ctrl-C keeps
what has finished and abandons the rest.

While the jobs run, the main thread's SIGINT handler is wrapped in one that counts the presses
and never raises (:class:`_Presses`; the CLI's own handler still runs inside it), and the wait
wakes every :data:`_POLL` seconds to read the count. Both are needed. The kernel may hand a
Ctrl-C to any thread that does not block it (a torch or BLAS thread), and Python then runs its
handler in the main thread only when that thread next executes bytecode: a main thread blocked
in an untimed wait never does, and the run hung with its chains sampling on. And a
KeyboardInterrupt raised inside ``concurrent.futures`` or ``multiprocessing`` (taking the
futures' locks, starting a process) can leave their state half-changed.

Errors. The first job to fail ends the run as soon as its error comes back, not after the
other jobs' full runs: the jobs not started are cancelled, the local workers asked to stop as
after a Ctrl-C (the pool closes once they have, after their current iteration), and the error
is raised; jobs running on a given executor are abandoned.
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import ctypes
import importlib.util
import io
import multiprocessing
import multiprocessing.context
import os
import pickle
import signal
import sys
import threading
import time
import types
from concurrent.futures.process import BrokenProcessPool  # a submodule, loaded on import
from dataclasses import dataclass

import threadpoolctl
import torch

__all__ = ["Ran", "as_completed", "note", "one_thread", "one_thread_job", "run_jobs",
           "stop_requested", "usable_cores"]

_STOP = None  # in a local pool's worker: the Event its parent sets after a Ctrl-C
_ONE_THREAD = threading.local()  # .depth: the one_thread() blocks this thread is inside
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0  # one_thread() blocks open in any thread: BLAS's count belongs to the process
_BLAS_LIMITER = None  # threadpoolctl's limiter, its original counts restored at the last exit
_PR_SET_PDEATHSIG = 1
_ABANDON_AFTER = 3  # Ctrl-C presses after which the jobs still running are dropped
_POLL = 0.1  # seconds between looks at the Ctrl-C count while waiting for jobs


def note(message: str) -> None:
    """One line for the user on stderr (progress bars go there too)."""
    print(f"bayesirl: {message}", file=sys.stderr, flush=True)


def stop_requested() -> bool:
    """Whether the process that runs the jobs asked this worker to stop (after a Ctrl-C)."""
    return _STOP is not None and _STOP.is_set()


def one_thread_job() -> bool:
    """Whether this process is running a job placed one per core on one torch and one BLAS
    thread (:func:`one_thread`: :func:`run_jobs`'s workers, SBC's simulations): code inside
    should keep that count (the vectorized ensemble, which raises it for a large batch,
    does)."""
    return getattr(_ONE_THREAD, "depth", 0) > 0


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class Ran:
    """What :func:`run_jobs` got back: ``results[i]`` is job ``i``'s result, None for a job
    that did not run (cancelled, abandoned, or after an interrupted one in a sequential run);
    ``interrupted`` whether a Ctrl-C reached this process; ``abandoned`` how many jobs were
    still running when they were dropped."""

    results: list
    interrupted: bool = False
    abandoned: int = 0


# ---------------------------------------------------------------------------- workers
@contextlib.contextmanager
def one_thread():
    """Run the block on one torch thread and one BLAS thread (numpy's, which refracting NUTS
    uses: two BLAS pools of two threads on two cores oversubscribe them), marked as a
    one-thread job (:func:`one_thread_job` is True inside), and restore both counts and the
    mark after. Where one job runs per core: :func:`run_jobs`'s workers, SBC's simulations.

    Jobs may run in threads at once (an executor of threads). torch's count (OpenMP's, per
    thread) and the mark are this thread's, set and restored by each block. numpy's BLAS
    (OpenBLAS) has one count for the process, so it is held at one from the first open block
    in any thread to the last: restored at each exit, a job still running in another thread
    would get the full count, and the last block out would restore the one it found."""
    global _BLAS_USERS, _BLAS_LIMITER
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _ONE_THREAD.depth = getattr(_ONE_THREAD, "depth", 0) + 1
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            _BLAS_LIMITER = threadpoolctl.threadpool_limits(1, user_api="blas")
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                _BLAS_LIMITER.restore_original_limits()
                _BLAS_LIMITER = None
        _ONE_THREAD.depth -= 1
        torch.set_num_threads(threads)


def _in_worker(fn, job):
    # one job per core, restored after for an executor that runs the job in its own process
    with one_thread(), _interruptible_in_main_thread():
        return fn(job)


def _init_worker(stop, parent_pid: int) -> None:
    """A local pool's worker: remember the stop event, never take Ctrl-C (the parent does and
    asks through ``stop``), and exit when the parent dies."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="bayesirl-watch-parent").start()


def _watch_parent(parent_pid: int) -> None:
    """Exit as soon as this process is re-parented (its parent died): where
    ``PR_SET_PDEATHSIG`` does not exist, and should it not fire."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)


# ---------------------------------------------------------------------------- start method
class _MainFinder(pickle.Pickler):
    """Pickles into nothing, noting the classes and functions defined in ``__main__``."""

    def __init__(self):
        super().__init__(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
        self.found = []

    def reducer_override(self, obj):
        if isinstance(obj, (type, types.FunctionType)) and obj.__module__ == "__main__":
            self.found.append(obj.__qualname__)
        return NotImplemented


def _from_main(job) -> list[str]:
    """Names of the classes and functions from ``__main__`` that pickling ``job`` refers to
    (a child process must have them to unpickle it); raises what pickling raises."""
    finder = _MainFinder()
    finder.dump(job)
    return sorted(set(finder.found))


def _main_is_guarded() -> bool:
    """Whether ``__main__`` is a file or module whose work sits under ``if __name__ ==
    "__main__":`` (a child process that re-runs it then only defines its names)."""
    main = sys.modules["__main__"]
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name != "__main__":
        path = getattr(importlib.util.find_spec(spec.name), "origin", None)
    if path is None or not os.path.exists(path):
        return False
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
               and "__name__" in ast.unparse(node.test) for node in tree.body)


class _SpawnProcessWithoutMain(multiprocessing.context.SpawnProcess):
    """A spawned process that does not re-run the parent's ``__main__``: ``spawn`` tells the
    child which main module to run from ``sys.modules["__main__"]`` when the process starts,
    so the parent shows it an empty one for that moment."""

    def start(self):
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            super().start()
        finally:
            sys.modules["__main__"] = main


class _SpawnWithoutMain(multiprocessing.context.SpawnContext):
    Process = _SpawnProcessWithoutMain


def _start_context(job):
    """``(context, why_not)``: how to start processes for jobs like ``job``, or None and the
    reason to run them one after another instead."""
    try:
        names = _from_main(job)
    except Exception as e:  # pickling raises many types (a lambda, a lock, an open file)
        return None, f"a chain cannot be sent to another process ({type(e).__name__}: {e})"
    if not names:
        return _SpawnWithoutMain(), None
    if _main_is_guarded():
        return multiprocessing.get_context("spawn"), None
    return None, (f"they use {', '.join(names)} from __main__, which a chain's process could "
                  "only get by re-running the script; define it in a module, or put the "
                  "script's work under `if __name__ == \"__main__\":`, to run them in parallel")


@contextlib.contextmanager
def _children_without_sigint():
    """Processes started inside begin with SIGINT blocked (a blocked signal stays blocked
    across ``exec``), so Ctrl-C never interrupts their start-up. A Ctrl-C to this process
    meanwhile is held by the kernel and delivered on leaving (or handled at once, should the
    kernel hand it to another thread): run this inside :func:`_counting_presses`, whose
    handler only counts it. The thread's signal mask is restored as it was."""
    if (threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "pthread_sigmask")):
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class _Presses:
    """The Ctrl-C presses received while jobs run, as a SIGINT handler that never raises.

    It replaces the main thread's handler (``previous``). Where that is Python's default, a
    press is counted. Any other (the CLI's, which keeps its own count and phases) is called,
    and a press is counted when it raises KeyboardInterrupt; one it swallows is not. So no
    KeyboardInterrupt is raised inside ``concurrent.futures`` or ``multiprocessing`` (taking
    the futures' locks, starting a process), whose state it could leave half-changed.
    ``caught`` counts those that came as a KeyboardInterrupt all the same (a handler set by
    someone else meanwhile); ``count`` is the total."""

    def __init__(self, previous=None):
        self.previous = previous
        self.counted = 0
        self.caught = 0

    def __call__(self, signum, frame):
        if callable(self.previous) and self.previous is not signal.default_int_handler:
            try:
                self.previous(signum, frame)
            except KeyboardInterrupt:
                pass
            else:
                return
        self.counted += 1

    def raising(self, signum, frame):
        """The handler while a job runs in the main thread itself (an executor that runs
        calls as they are submitted): a press counted is also raised as KeyboardInterrupt,
        which a chain expects in order to stop and keep its draws, as when run in sequence."""
        before = self.counted
        self(signum, frame)
        if self.counted > before:
            raise KeyboardInterrupt

    @property
    def count(self) -> int:
        return self.counted + self.caught


@contextlib.contextmanager
def _counting_presses():
    """Inside, the main thread's SIGINT handler is a :class:`_Presses` (yielded) wrapping the
    one it had, restored on leaving: a press landing after the last look at the count (the
    jobs done) is then dropped. Elsewhere nothing is installed (the count stays 0; Python runs
    handlers in the main thread only), nor where SIGINT is ignored or not handled from
    Python; inside another such block (jobs that run jobs, in this thread) the outer count is
    shared."""
    if threading.current_thread() is not threading.main_thread():
        yield _Presses()
        return
    previous = signal.getsignal(signal.SIGINT)
    if isinstance(previous, _Presses):
        yield previous
        return
    if not callable(previous):  # SIG_IGN, SIG_DFL, or a handler not set from Python
        yield _Presses()
        return
    presses = _Presses(previous)
    signal.signal(signal.SIGINT, presses)
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _interruptible_in_main_thread():
    """A job that runs in the main thread inside :func:`_counting_presses` gets Ctrl-C as a
    KeyboardInterrupt (:meth:`_Presses.raising`); elsewhere (a worker process or thread)
    nothing changes."""
    handler = (signal.getsignal(signal.SIGINT)
               if threading.current_thread() is threading.main_thread() else None)
    if not isinstance(handler, _Presses):
        yield
        return
    signal.signal(signal.SIGINT, handler.raising)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


# ---------------------------------------------------------------------------- running
def _gather(futures: list, stop, presses: _Presses, stoppable: bool) -> Ran:
    """Wait for ``futures``, surviving Ctrl-C (see the module doc); ``stop`` is the local
    pool's event (None on a given executor), ``presses`` the Ctrl-C count so far (from
    :func:`_counting_presses`), ``stoppable`` whether running jobs honour ``stop``.

    A job's error is raised as soon as it comes back (the first to fail; before any Ctrl-C):
    the jobs not started are cancelled and the running ones asked to stop as after a Ctrl-C
    (a local pool's shutdown then waits the one iteration they take to stop), rather than
    the error waiting for every other job's full run."""
    pending = set(futures)
    abandoned = handled = 0

    def stop_the_rest():
        for f in futures:
            f.cancel()
        if stop is not None:
            stop.set()

    while True:
        if presses.count > handled:
            handled = presses.count
            stop_the_rest()
        if not pending:
            break
        if presses.count >= (_ABANDON_AFTER if stoppable else 1):
            abandoned = sum(1 for f in pending if not f.done())  # cancelled ones are done
            break
        try:  # timed: an untimed wait may never see a Ctrl-C (the module doc)
            done, pending = concurrent.futures.wait(
                pending, timeout=_POLL, return_when=concurrent.futures.FIRST_EXCEPTION)
        except KeyboardInterrupt:  # from a SIGINT handler left in place
            presses.caught += 1
            continue
        failed = [f for f in futures if f in done and not f.cancelled() and f.exception()]
        if failed and not presses.count:  # after a Ctrl-C the stopped jobs' draws are wanted
            stop_the_rest()
            _result(failed[0])  # raises its error
    results = [None if f.cancelled() or not f.done() else _result(f) for f in futures]
    return Ran(results, presses.count > 0, abandoned)


def _result(future):
    """``future``'s result; its job's error as it is, a local pool's broken process as a
    RuntimeError saying what to do."""
    try:
        return future.result()
    except BrokenProcessPool as e:
        raise RuntimeError(
            "a chain's process died before returning its draws (killed for lack of memory, "
            "or by a signal); pass parallel=False to run the chains one after another, or "
            "fewer max_workers") from e


def _sequential(fn, jobs, ends_run) -> Ran:
    results, interrupted = [], False
    for job in jobs:
        try:
            results.append(fn(job))
        except KeyboardInterrupt:
            interrupted = True
        if interrupted or ends_run(results[-1]):
            break
    return Ran(results + [None] * (len(jobs) - len(results)), interrupted)


def _submit(submit, fn, jobs, presses: _Presses) -> list:
    """One future per job: ``jobs`` submitted through ``submit`` until a Ctrl-C (counted in
    ``presses``); the jobs after it are not started, their futures cancelled."""
    futures = []
    try:
        for job in jobs:
            if presses.count:
                break
            futures.append(submit(_in_worker, fn, job))
    except KeyboardInterrupt:  # from a SIGINT handler set by someone else meanwhile
        presses.caught += 1
    while len(futures) < len(jobs):
        futures.append(concurrent.futures.Future())
        futures[-1].cancel()
    return futures


def _local_pool(fn, jobs, context, max_workers: int) -> Ran:
    stop = context.Event()
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers, mp_context=context, initializer=_init_worker,
        initargs=(stop, os.getpid()))
    abandoned = False
    try:
        with _counting_presses() as presses:
            with _children_without_sigint():
                futures = _submit(pool.submit, fn, jobs, presses)
            ran = _gather(futures, stop, presses, stoppable=True)
        abandoned = ran.abandoned > 0
    finally:
        # after the third Ctrl-C, no waiting: the workers, told to stop, exit after their
        # current iteration (or with this process), and their results are dropped anyway;
        # here Ctrl-C is Python's again, and stops the wait for that iteration
        try:
            pool.shutdown(wait=not abandoned, cancel_futures=True)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
    return ran


def as_completed(futures):
    """Yield ``futures`` as they finish, as ``concurrent.futures.as_completed`` does, but
    waking every :data:`_POLL` seconds, so that a Ctrl-C raises KeyboardInterrupt here within
    that time even when it landed on another thread (a Dask client's, say): an untimed wait
    sees it only when the next future finishes (the module doc)."""
    pending = set(futures)
    while pending:
        done, pending = concurrent.futures.wait(
            pending, timeout=_POLL, return_when=concurrent.futures.FIRST_COMPLETED)
        yield from done


def run_jobs(fn, jobs: list, *, parallel: bool, ends_run, executor=None,
             max_workers: int | None = None) -> Ran:
    """``fn(job)`` for every job: on ``executor`` when given, else in a local process pool of
    ``max_workers`` (default: as many as :func:`usable_cores`, at most one per job) when
    ``parallel``, else one after another, where a result for which ``ends_run(result)`` is
    true (it was interrupted) also ends the run. ``fn`` must be a module-level function. See
    the module doc for Ctrl-C."""
    if executor is not None:
        with _counting_presses() as presses:
            futures = _submit(executor.submit, fn, jobs, presses)
            return _gather(futures, None, presses, stoppable=False)
    if not parallel or len(jobs) < 2:
        return _sequential(fn, jobs, ends_run)
    context, why_not = _start_context(jobs[0])
    if context is None:
        note(f"running the chains one after another: {why_not}")
        return _sequential(fn, jobs, ends_run)
    workers = min(len(jobs), max_workers or usable_cores())
    return _local_pool(fn, jobs, context, workers)
