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


def test_malloc_env_only_where_the_user_set_nothing():
    base = {"PATH": "/usr/bin"}
    assert cli.malloc_env(base, "linux") == {**base, "MALLOC_MMAP_THRESHOLD_": "1073741824",
                                             "MALLOC_TRIM_THRESHOLD_": "1073741824"}
    for env, platform in (({**base, "MALLOC_MMAP_THRESHOLD_": "131072"}, "linux"),
                          ({**base, "MALLOC_TRIM_THRESHOLD_": "65536"}, "linux"),
                          ({**base, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "linux"),
                          ({**base, "SPACETIME_MD_MALLOC": "system"}, "linux"),
                          (base, "darwin"), (base, "win32")):
        assert cli.malloc_env(env, platform) is None, (env, platform)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the restart is Linux-only")
def test_console_script_restarts_once_with_the_allocator_settings(tmp_path):
    """A script like the installed ``spacetime-md`` (``console_main()``): run without the
    variables, it is restarted by ``execve`` with the same interpreter, path and arguments and
    the variables set; the restarted run sees them and does not restart again."""
    import os

    script = tmp_path / "spacetime-md"
    script.write_text(
        "import os, sys\n"
        "from spacetime_md.cli import console_main\n"
        "count = int(os.environ.get('RUNS', '0')) + 1\n"
        "os.environ['RUNS'] = str(count)\n"
        "if os.environ.get('MALLOC_MMAP_THRESHOLD_'):\n"
        "    print(count, os.environ['MALLOC_MMAP_THRESHOLD_'], os.environ.get('MALLOC_TRIM_THRESHOLD_'), sys.argv[1:])\n"
        "sys.exit(console_main())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "SPACETIME_MD_MALLOC"))}
    out = subprocess.run([sys.executable, str(script), "--version"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["2 1073741824 1073741824 ['--version']", f"spacetime-md {cli.__version__}"]
    # The user's own setting wins: no restart, nothing changed.
    out = subprocess.run([sys.executable, str(script), "--version"], capture_output=True, text=True,
                         env={**env, "MALLOC_MMAP_THRESHOLD_": "131072"})
    assert out.returncode == 0 and out.stdout.splitlines()[0] == "1 131072 None ['--version']", out.stdout + out.stderr
