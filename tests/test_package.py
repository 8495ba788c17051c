"""Package-level checks: import isolation and the CLI entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spacetime_md import cli


def test_core_and_toy_do_not_import_heavy_dependencies():
    code = (
        "import sys, spacetime_md, spacetime_md.core, spacetime_md.toy, spacetime_md.cli;"
        "heavy = [m for m in ('openmm', 'mdtraj', 'torch_geometric', 'openmmtools') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "spacetime-md" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0


def test_cli_without_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().out
