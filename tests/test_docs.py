"""The documentation site builds without a warning and documents every public name.

Builds ``docs/`` with Sphinx (``-W``: warnings are errors, as for a release) into a temporary
folder, then reads the built inventory (``objects.inv``) and checks that every public name of
``spacetime_md.core``, ``.molecular``, ``.image`` and ``.toy`` is in the API reference.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = ("spacetime_md.core", "spacetime_md.molecular", "spacetime_md.image", "spacetime_md.toy")


def _public_names(module_name: str) -> list[str]:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from spacetime_docs import public_names
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return public_names(module_name)


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs_html")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(out / ".doctrees"),
         str(DOCS), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"sphinx -W failed:\n{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}"
    return out


def test_docs_build_without_warnings(built_docs: Path) -> None:
    for page in ("index.html", "getting_started.html", "api/core.html", "api/molecular.html", "benchmarks.html",
                 "models.html", "method/equations.html", "method/knobs.html", "tutorials/alanine_paths.html"):
        assert (built_docs / page).is_file(), f"{page}: expected in the built site, got nothing"


@pytest.mark.parametrize("module_name", PACKAGES)
def test_every_public_name_in_api_reference(built_docs: Path, module_name: str) -> None:
    from sphinx.util.inventory import InventoryFile

    with open(built_docs / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    documented = {name for domain in inventory.values() for name in domain}
    module = importlib.import_module(module_name)
    names = _public_names(module_name)
    assert names, f"{module_name}: expected public names, got none"
    missing = [name for name in names if f"{module_name}.{name}" not in documented]
    assert not missing, f"{module_name}: public names missing from the API reference: {missing}"
    page = (built_docs / "api" / f"{module_name.rsplit('.', 1)[1]}.html").read_text()
    assert all(f'id="{module_name}.{name}"' in page for name in names), module.__name__


def test_model_cards_rendered(built_docs: Path) -> None:
    page = (built_docs / "models.html").read_text()
    for card in sorted((ROOT / "spacetime_md" / "data" / "models").glob("*.json")):
        assert card.name in page, f"{card.name}: expected a model card on models.html"
