"""The tutorial notebook ``docs/tutorials/alanine_paths.ipynb`` runs from top to bottom.

Executed with nbclient in a fresh kernel (about a minute on one CPU core): the shipped model,
the geodesic, OpenMM paths, the plots and the 3-D view must all be produced without an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("py3Dmol")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "alanine_paths.ipynb"


def test_tutorial_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), \
        "alanine_paths.ipynb: expected a notebook saved without outputs"
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 3, f"expected >= 3 figures (paths over the FES, energy profile, log_snr), got {len(images)}"
    assert any("application/3dmoljs_load.v0" in out.get("data", {}) or "3dmol" in str(out.get("data", {})).lower()
               for out in outputs), "expected the py3Dmol 3-D view of a path"
