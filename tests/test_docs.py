"""The documentation site builds without a single warning, as ``make docs`` builds it.

So a docstring that breaks reStructuredText, or names a bayesirl object that does not exist
(a typo, a renamed or removed function), fails the suite and not only the docs target.

The default suite reads every page and resolves every reference with Sphinx's ``dummy``
builder, which writes nothing: those are the phases where such warnings arise. Writing the HTML
(the theme's navigation for each of the hundred pages) doubles the build's time and adds no
docstring check, so the full ``make docs`` build is a slow test.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="Sphinx is not installed: pip install -e '.[docs]'")

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _build(builder: str, tmp_path: Path) -> Path:
    """Run ``make docs``'s command with ``builder`` into ``tmp_path``; fail with its warnings.

    A fresh environment (-E), so that every page is read and every warning reported.
    """
    out = tmp_path / builder
    command = [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-n", "-q",
               "-b", builder, "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (
        f"sphinx-build -b {builder} exited {done.returncode}; its warnings:\n"
        f"{done.stderr[-20000:]}")
    return out


def test_every_page_reads_and_every_reference_resolves(tmp_path):
    _build("dummy", tmp_path)


@pytest.mark.slow
def test_the_documentation_builds_without_a_warning(tmp_path):
    html = _build("html", tmp_path)
    assert (html / "api" / "generated" / "bayesirl.html").exists()
    assert (html / "notebooks" / "01_quickstart.html").exists()
