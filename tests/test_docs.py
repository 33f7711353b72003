"""The documentation site builds without a single warning, as ``make docs`` builds it.

So a docstring that breaks reStructuredText, or names a bayesirl object that does not exist
(a typo, a renamed or removed function), fails the suite and not only the docs target.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="Sphinx is not installed: pip install -e '.[docs]'")

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_documentation_builds_without_a_warning(tmp_path):
    # the same command as `make docs`, into a temporary folder; a fresh environment (-E) so that
    # every page is read and every warning is reported
    command = [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-n", "-q",
               "-b", "html", "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (
        f"sphinx-build exited {done.returncode}; its warnings:\n{done.stderr[-20000:]}")
    assert (tmp_path / "html" / "api" / "generated" / "bayesirl.html").exists()
    assert (tmp_path / "html" / "notebooks" / "01_quickstart.html").exists()
