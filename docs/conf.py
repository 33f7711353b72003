"""Sphinx configuration of bayesirl's documentation site.

Build with ``make docs`` (warnings are errors, references are checked: ``-W --keep-going -n``).
Nothing is downloaded at build time: no intersphinx, notebooks are rendered as committed
(without executing them), and MathJax is loaded by the reader's browser, not by the build.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))  # document the checkout's package, installed or not

import bayesirl  # noqa: E402

project = "bayesirl"
author = "the bayesirl authors"
copyright = "the bayesirl authors, MIT licence"  # noqa: A001  Sphinx's name
release = bayesirl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",  # the summary tables; the pages themselves: bayesirl_api
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",  # Markdown pages (MyST) and notebooks
    "bayesirl_api",  # docs/_ext: one page per public module, generated at every build
]

exclude_patterns = ["_build", "_ext", "**/.ipynb_checkpoints"]
templates_path: list[str] = []

# -- API reference -------------------------------------------------------------------------------
autosummary_generate = False  # bayesirl_api writes the pages (each object once, see there)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" as :ivar: fields, not attribute directives: a class that also documents the
# attribute itself (a property, a NamedTuple field) would otherwise describe it twice.
napoleon_use_ivar = True

# -- reference checking (-n) ---------------------------------------------------------------------
nitpicky = True
# No intersphinx (the build fetches nothing), so references to other libraries cannot resolve;
# they render as code. References into bayesirl are all checked: bayesirl_api links them, shows
# a name that exists without a page as code (`sphinx-build -v` lists those), and leaves a name
# that exists nowhere to fail the build.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|scipy|pyro|arviz|az|xarray|pandas|matplotlib|numba|"
               r"gymnasium|dask|distributed|h5py|h5netcdf|tqdm|threadpoolctl|llvmlite)(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing|concurrent\.futures|pathlib|os|dataclasses|enum|"
               r"types|numbers)\..*"),
]


# -- notebooks -----------------------------------------------------------------------------------
nb_execution_mode = "off"  # rendered as committed; tests/test_notebooks.py executes them
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3


def _copy_notebooks() -> None:
    """Mirror notebooks/*.ipynb into docs/notebooks/ (ignored by git): Sphinx reads only files
    under its source directory. Copies only what changed, deletes what was removed."""
    source, target = ROOT / "notebooks", DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    wanted = {path.name: path for path in source.glob("*.ipynb")}
    for old in target.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for name, path in wanted.items():
        copy = target / name
        if not copy.exists() or copy.read_bytes() != path.read_bytes():
            shutil.copyfile(path, copy)


_copy_notebooks()

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"bayesirl {release}"
html_static_path: list[str] = []
