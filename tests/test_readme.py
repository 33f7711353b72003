"""Every ```python block of README.md runs as written, each as a script of its own.

A newcomer saves a block to a file and runs ``python file.py``; so does this test, in a fresh
folder, with the environment of a user (``BAYESIRL_FAST`` removed: nothing shrinks what the
README says to run). A script is what parallel chains' ``spawn`` re-imports, so a block that
only works in a REPL fails here. Blocks that sample (``infer`` with NUTS, HMC or SVI, NUTS being
its default method) take minutes: they are ``slow`` (``pytest -m slow``); the others run in
the default suite, and every block is at least compiled there.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
SAMPLES = re.compile(r"\binfer\((?![^)]*method\s*=\s*[\"']map[\"'])")
TIMEOUT = 900  # seconds per block


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of every fenced ```python block, ``line`` its first code line."""
    return [(text.count("\n", 0, m.start(1)) + 1, m[1]) for m in FENCE.finditer(text)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def params():
    for line, code in BLOCKS:
        marks = [pytest.mark.slow] if SAMPLES.search(code) else []
        yield pytest.param(line, code, id=f"README.md:{line}", marks=marks)


def test_the_readme_has_python_blocks():
    assert BLOCKS, "README.md has no ```python block"


def test_the_block_finder_reads_fences_and_the_slow_rule():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\nz = 3\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\nz = 3\n")]
    assert SAMPLES.search("post = birl.infer(mdp, demos, model)")
    assert SAMPLES.search('birl.infer(mdp, demos, m, method="nuts")')
    assert not SAMPLES.search('birl.infer(mdp, demos, m, method="map")')


@pytest.mark.parametrize("line, code", [(line, code) for line, code in BLOCKS],
                         ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_every_block_compiles(line, code):
    compile(code, f"README.md:{line}", "exec")


@pytest.mark.parametrize("line, code", list(params()))
def test_block_runs_as_a_script(line, code, tmp_path):
    script = tmp_path / f"readme_{line}.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "BAYESIRL_FAST"}
    result = subprocess.run([sys.executable, script.name], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, (f"README.md:{line} exited {result.returncode}:\n"
                                    f"{result.stderr[-4000:]}")
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
