"""Specs of the tests' tiny problem, a 3 x 3 gridworld with one-cell features and horizon 4: the
one home of its TOML for the tests of the command line, its output folder and signals, sweeps
and the Dask cluster. Each test states only what it varies (the inference settings, the name).

The text is written line by line in the order a person would (``name``, ``[environment]``,
``[demonstrations]``, ``[reward]``, ``[inference]``), so a test may still edit one line of it
(``.replace("size = 3", "sise = 3")``) to make a bad spec.

Also the stand-ins the tests of jobs share: an executor that runs calls inline, and a Ctrl-C
pressed on another thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import signal
import threading
import time


def toml_value(value) -> str:
    """``value`` as a TOML value: a dict as an inline table; a bool, number, string or list is
    written alike in JSON and TOML."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def tiny_spec(name: str = "tiny", *, inference: dict, demonstrations: dict | None = None,
              reward: dict | None = None, seed: int | None = None,
              comment: str | None = None) -> str:
    """The TOML text of the tiny gridworld problem.

    ``inference``, ``demonstrations`` (default ``{"n": 4}``) and ``reward`` (default none: the
    CLI's default reward model) are the tables' keys in order; ``seed`` sets the environment's
    seed; ``comment`` is a first line saying what the spec is for."""
    lines = [f"# {comment}"] if comment else []
    lines += [f'name = "{name}"', "[environment]", 'name = "gridworld"', "size = 3",
              "block = 1", "horizon = 4"]
    if seed is not None:
        lines.append(f"seed = {seed}")
    for table, keys in (("demonstrations", demonstrations or {"n": 4}), ("reward", reward),
                        ("inference", inference)):
        if keys:
            lines += [f"[{table}]"] + [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def sweep_spec(num: int = 20) -> str:
    """The sweep and cluster tests' spec: a seeded gridworld, 8 seeded demonstrations, a linear
    reward under a standard normal prior, 2 NUTS chains one after another of ``num`` warmup
    steps and ``num`` draws each."""
    return tiny_spec(
        seed=0, demonstrations={"n": 8, "seed": 0},
        reward={"model": "linear", "prior": {"family": "normal", "loc": 0.0, "scale": 1.0}},
        inference={"method": "nuts", "num_samples": num, "warmup": num, "num_chains": 2,
                   "parallel": False})


class InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once in this process, its result or error in the returned
    future: a stand-in for a worker process, so that a test sees the state the call runs in
    (one home for the tests of chains, sweeps and jobs on a given executor)."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:
            future.set_exception(e)
        return future


@contextlib.contextmanager
def press_on_another_thread(ready):
    """Inside the block, once ``ready()``, a Ctrl-C delivered to a helper thread (which does
    not block SIGINT), not to the main thread: the kernel hands a process-directed signal to
    any such thread (a torch or BLAS thread, say), and Python then runs the handler in the
    main thread only when that thread next runs bytecode. The helper is joined on leaving, so
    no press reaches pytest after the block (should the code under it fail early)."""
    leaving = threading.Event()

    def press():
        while not leaving.is_set():
            if ready():
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                return
            time.sleep(0.01)

    helper = threading.Thread(target=press, daemon=True)
    helper.start()
    try:
        yield
    finally:
        leaving.set()
        helper.join(5)
