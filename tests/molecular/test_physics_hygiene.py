"""The suite's guard on torch's global state (``tests/conftest.py``) fails an offending test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_test_that_leaves_torch_threads_or_dtype_changed_fails(tmp_path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import _torch_global_state_unchanged  # noqa: F401\n")
    (tmp_path / "test_offenders.py").write_text(
        "import torch\n"
        "def test_threads():\n    torch.set_num_threads(torch.get_num_threads() + 1)\n"
        "def test_dtype():\n    torch.set_default_dtype(torch.float64)\n"
        "def test_after():\n"
        "    assert torch.get_default_dtype() == torch.float32 and torch.get_num_threads() == 1\n"
        "def test_restores():\n"
        "    n = torch.get_num_threads()\n    torch.set_num_threads(n + 1)\n    torch.set_num_threads(n)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "ERROR test_offenders.py::test_threads - Failed: the test changed torch's global state" in text
    assert "torch.get_num_threads(): expected 1, got 2" in text
    assert "torch.get_default_dtype(): expected torch.float32, got torch.float64" in text
    assert "4 passed, 2 errors" in text  # errors at teardown; the offenders' settings were restored for the tests after them


def test_the_cli_gives_an_in_process_caller_its_thread_count_back(capsys):
    import torch

    from spacetime_md import cli

    before = torch.get_num_threads()
    # evaluate sets --num-threads, then fails on its data: the count is restored either way
    code = cli.main(["evaluate", "--data", "nowhere", "--num-threads", str(before + 1), "--guidance-weight", "2"])
    assert code == 2 and "data: no such file or directory 'nowhere'" in capsys.readouterr().err
    assert torch.get_num_threads() == before
