"""`bayesirl run` under real SIGINTs (what Ctrl-C and Jupyter's "interrupt kernel" send), sent
to the main process only: once and twice while sampling, during start-up and while the figures
are drawn. Whatever the signal reaches: exit status 130, one line on stderr and no traceback,
the draws made so far kept in posterior.nc and marked incomplete, and a folder with one run's
complete files or none (no staging folder, no temporary file)."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import tiny_spec

import bayesirl as birl

MARKER = "  reward:"  # the line printed just before inference starts
PROGRESS = re.compile(r"nuts chain (\d+)/\d+:[^|]*\|[^|]*\| *(\d+)/")  # tqdm's bar


class Run:
    """``bayesirl run long.toml --out out`` in a subprocess, its output read as it comes."""

    def __init__(self, tmp_path, warmup=5, parallel=False, command=None, fast="0"):
        (tmp_path / "long.toml").write_text(tiny_spec(
            "long", comment="NUTS chains far longer than the test waits",
            inference=dict(method="nuts", num_samples=100000, warmup=warmup, num_chains=2,
                           max_tree_depth=3, parallel=parallel)))
        env = dict(os.environ, BAYESIRL_FAST=fast, OMP_NUM_THREADS="1")
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "bayesirl.cli.app", "run", "long.toml", "--out",
                        "out"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                        for s, b in ((self.process.stdout, self.out),
                                     (self.process.stderr, self.err))]
        for r in self.readers:
            r.start()

    @staticmethod
    def _read(stream, chunks):
        for chunk in iter(lambda: stream.read1(4096), b""):
            chunks.append(chunk.decode(errors="replace"))

    def text(self, which):
        return "".join(self.out if which == "out" else self.err)

    def wait_until(self, done, what, timeout=180):
        deadline = time.monotonic() + timeout
        while not done():
            assert self.process.poll() is None, f"the run ended before {what}: " + self.text(
                "err")[-3000:]
            assert time.monotonic() < deadline, f"no {what} after {timeout} s"
            time.sleep(0.02)

    def wait_for_inference(self):
        self.wait_until(lambda: MARKER in self.text("out"), "inference started")

    def wait_for_draws(self, chains, at_least):
        """Until each of the first ``chains`` chains' bars shows ``at_least`` iterations."""
        def enough():
            done = {}
            for chain, count in PROGRESS.findall(self.text("err")):
                done[chain] = max(done.get(chain, 0), int(count))
            return all(done.get(str(c + 1), 0) >= at_least for c in range(chains))

        self.wait_until(enough, f"{at_least} iterations in {chains} chain(s)")

    def interrupt(self, times=1):
        for _ in range(times):
            self.process.send_signal(signal.SIGINT)
            time.sleep(0.05)

    def finish(self, timeout=180):
        try:
            self.process.wait(timeout)
        finally:
            self.process.kill()
            for r in self.readers:
                r.join(10)
            self.process.stdout.close()
            self.process.stderr.close()
        return self.process.returncode, self.text("out"), self.text("err")


def the_message(err):
    """The run's last line on stderr: one line, no traceback. The inference layer may add its
    own one-line note of what it kept before it."""
    assert "Traceback" not in err, err[-3000:]
    lines = [ln.split("\r")[-1] for ln in err.splitlines() if "bayesirl:" in ln]
    lines = [ln[ln.index("bayesirl:"):] for ln in lines]
    assert 1 <= len(lines) <= 2, lines
    assert all(ln.startswith("bayesirl: interrupted: kept ") for ln in lines[:-1]), lines
    return lines[-1]


def only_the_output_folder_is_left(tmp_path, *expected):
    assert sorted(os.listdir(tmp_path)) == sorted(["long.toml", *expected])


SLOW = pytest.mark.slow  # parallel chains' processes each import torch and Pyro


@pytest.mark.parametrize("parallel, signals", [
    (False, 1), pytest.param(False, 2, marks=SLOW), pytest.param(True, 2, marks=SLOW)],
    ids=["once", "twice", "parallel-chains-twice"])
def test_sigint_while_sampling_keeps_the_draws_marked_incomplete(tmp_path, parallel, signals):
    run = Run(tmp_path, parallel=parallel)
    run.wait_for_inference()
    run.wait_for_draws(chains=2 if parallel else 1, at_least=15)  # warmup is 5 iterations
    run.interrupt(signals)
    code, out, err = run.finish()
    assert code == 130, err[-3000:]
    line = the_message(err)
    assert line.startswith("bayesirl: interrupted: inference was interrupted") and (
        "marked incomplete" in line), line
    only_the_output_folder_is_left(tmp_path, "out")
    post = birl.RewardPosterior.load(tmp_path / "out" / "posterior.nc")
    assert post.incomplete and post.method == "nuts"
    assert 10 <= post.num_draws < 100000 and post.num_chains == (2 if parallel else 1)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Interrupted" in report and "marked incomplete" in report
    assert "the run was interrupted: the draws are incomplete" in report
    files = set(os.listdir(tmp_path / "out"))
    assert {"posterior.nc", "summary.csv", "report.md", "reward.png", "policy.png"} <= files
    assert not [f for f in files if f.startswith(".") or f.endswith(".tmp")]


@pytest.mark.parametrize("parallel", [False, pytest.param(True, marks=SLOW)],
                         ids=["sequential", "parallel-chains"])
def test_sigint_during_start_up_writes_nothing(tmp_path, parallel):
    """An interrupt before the first draw (the warmup is long; parallel chains' processes are
    starting) leaves no folder at all."""
    run = Run(tmp_path, warmup=100000, parallel=parallel)
    run.wait_for_inference()
    time.sleep(0.5)
    run.interrupt()
    code, out, err = run.finish()
    assert code == 130, err[-3000:]
    line = the_message(err)
    assert "nothing written" in line and "before" in line, line
    only_the_output_folder_is_left(tmp_path)


@pytest.mark.slow
def test_sigint_as_soon_as_the_run_starts_writes_nothing(tmp_path):
    """An interrupt while the problem is built (or inference starts): nothing written."""
    run = Run(tmp_path, warmup=100000)
    run.wait_until(lambda: [f for f in os.listdir(tmp_path) if f.endswith(".partial")],
                   "the staging folder")
    run.interrupt()
    code, out, err = run.finish()
    assert code == 130
    assert "nothing written" in the_message(err)
    only_the_output_folder_is_left(tmp_path)


INTERRUPT_THE_SECOND_FIGURE = """\
import os, signal, sys
from matplotlib.figure import Figure

savefig, calls = Figure.savefig, []

def interrupted_savefig(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # a real SIGINT, to this process, while the policy figure is saved
        os.kill(os.getpid(), signal.SIGINT)
    return savefig(self, *args, **kwargs)

Figure.savefig = interrupted_savefig
from bayesirl.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigint_while_writing_figures_keeps_complete_files_only(tmp_path):
    run = Run(tmp_path, fast="1", command=[
        sys.executable, "-c", INTERRUPT_THE_SECOND_FIGURE, "run", "long.toml", "--out", "out",
        "--quiet"])
    code, out, err = run.finish()
    assert code == 130, err[-3000:]
    line = the_message(err)
    assert "writing the figures was interrupted: only reward.png written" in line, line
    only_the_output_folder_is_left(tmp_path, "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["posterior.nc", "report.md", "reward.png",
                                                    "summary.csv"]
    post = birl.RewardPosterior.load(tmp_path / "out" / "posterior.nc")
    assert not post.incomplete and post.num_draws == 20  # inference itself had finished
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Interrupted" in report and "only reward.png written" in report
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "out" / "reward.png").ndim == 3
