"""`bayesirl run` under real SIGINTs (what Ctrl-C and Jupyter's "interrupt kernel" send), sent
to the main process only: once and twice while sampling, during start-up and while the figures
are drawn. Whatever the signal reaches: exit status 130, one line on stderr and no traceback,
the draws made so far kept in posterior.nc and marked incomplete, and a folder with one run's
complete files or none (no staging folder, no temporary file)."""

import os
import signal
import subprocess
import sys
import time

import pytest

import bayesirl as birl

LONG = """\
# sequential NUTS chains far longer than the test waits
name = "long"
[environment]
name = "gridworld"
size = 3
block = 1
horizon = 4
[demonstrations]
n = 4
[inference]
method = "nuts"
num_samples = 100000
warmup = {warmup}
num_chains = 2
max_tree_depth = 3
parallel = false
"""
MARKER = "  reward:"  # the line printed just before inference starts


def start(tmp_path, warmup=5, extra=()):
    (tmp_path / "long.toml").write_text(LONG.format(warmup=warmup))
    env = dict(os.environ, BAYESIRL_FAST="0", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "bayesirl.cli.app", "run", "long.toml", "--out", "out",
         *extra], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def wait_for_inference(process):
    for line in process.stdout:
        if line.startswith(MARKER):
            return
    raise AssertionError("the run ended before inference started: "
                         + process.communicate()[1][-2000:])


def finish(process, timeout=120):
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return process.returncode, out, err


def the_one_line(err):
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("bayesirl:")]
    assert len(lines) == 1, lines
    return lines[0]


def only_the_output_folder_is_left(tmp_path, *expected):
    assert sorted(os.listdir(tmp_path)) == sorted(["long.toml", *expected])


@pytest.mark.parametrize("signals", [1, 2], ids=["once", "twice"])
def test_sigint_while_sampling_keeps_the_draws_marked_incomplete(tmp_path, signals):
    process = start(tmp_path)
    wait_for_inference(process)
    time.sleep(1.5)  # warmup is 5 iterations: draws are being made
    for _ in range(signals):
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
    code, out, err = finish(process)
    assert code == 130
    line = the_one_line(err)
    assert line.startswith("bayesirl: interrupted: inference was interrupted") and (
        "marked incomplete" in line)
    only_the_output_folder_is_left(tmp_path, "out")
    post = birl.RewardPosterior.load(tmp_path / "out" / "posterior.nc")
    assert post.incomplete and post.num_draws >= 1 and post.method == "nuts"
    assert 0 < post.num_draws < 100000
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Interrupted" in report and "marked incomplete" in report
    assert "the run was interrupted: the draws are incomplete" in report
    files = set(os.listdir(tmp_path / "out"))
    assert {"posterior.nc", "summary.csv", "report.md", "reward.png", "policy.png"} <= files
    assert not [f for f in files if f.startswith(".") or f.endswith(".tmp")]


def test_sigint_during_start_up_writes_nothing(tmp_path):
    """An interrupt before the first draw (the warmup is long) leaves no folder at all."""
    process = start(tmp_path, warmup=100000)
    wait_for_inference(process)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == 130
    line = the_one_line(err)
    assert "nothing written" in line and "before" in line, line
    only_the_output_folder_is_left(tmp_path)


@pytest.mark.slow
def test_sigint_as_soon_as_the_run_starts_writes_nothing(tmp_path):
    """An interrupt while the problem is built (or inference starts): nothing written."""
    process = start(tmp_path, warmup=100000)
    deadline = time.monotonic() + 60
    while not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == 130
    assert "nothing written" in the_one_line(err)
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
    (tmp_path / "long.toml").write_text(LONG.format(warmup=5))
    env = dict(os.environ, BAYESIRL_FAST="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPT_THE_SECOND_FIGURE, "run", "long.toml", "--out", "out",
         "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    code, out, err = finish(process)
    assert code == 130
    line = the_one_line(err)
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
