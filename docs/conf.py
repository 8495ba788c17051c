"""Sphinx configuration of the spacetime_md documentation (``docs/``).

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (``tests/test_docs.py`` builds it
with warnings as errors). Pages are Markdown (MyST); the tutorial notebook is rendered without
execution here (``tests/test_notebook.py`` executes it).
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

project = "spacetime_md"
author = "spacetime_md developers"
copyright = "2026, spacetime_md developers"
try:
    from importlib.metadata import version as _version

    release = _version("spacetime-md")
except Exception:  # pragma: no cover - docs built from a source tree without install
    release = "0.1.0"

extensions = [
    "myst_nb",  # Markdown (MyST) pages and the tutorial notebook
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpydoc-style docstrings
    "sphinx.ext.mathjax",
    "spacetime_docs",  # public-api and model-card directives (docs/_ext)
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute"]

# Markdown
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The notebook is executed by tests/test_notebook.py (nbclient), not by every docs build.
nb_execution_mode = "off"

# API reference
autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = True
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_preprocess_types = False

# Keep "--flag" as typed (no en dashes) in prose and in the model cards.
smartquotes = False

html_theme = "alabaster"
html_title = "spacetime_md"
html_static_path: list[str] = []
html_theme_options = {"description": "Transition paths from the spacetime geometry of diffusion models",
                      "page_width": "1100px", "sidebar_width": "240px"}

# Notes written alongside the code (docs/<name>.md). They are listed in the index when they
# exist, so the site builds with or without them.
OPTIONAL_NOTES = ("geodesic", "peer_protocol", "scaling", "diffed", "mutation_testing")


def _add_optional_notes(app, docname, source):  # noqa: ANN001 - Sphinx event signature
    if docname != "index":
        return
    present = [name for name in OPTIONAL_NOTES if name in app.env.found_docs]  # found when the build started
    if present:
        block = "\n```{toctree}\n:maxdepth: 1\n:caption: Notes\n\n" + "\n".join(present) + "\n```\n"
    else:
        block = ""
    source[0] = source[0].replace("<!-- optional-notes -->", block)


def setup(app):  # noqa: ANN001, ANN201
    app.connect("source-read", _add_optional_notes)
