"""Catalogue of bad inputs to `spacetime-md paths` (issue 20): one case per line.

Each case must end in exactly one line on stderr, exit code 2, no traceback, and nothing
written to --out. All are refused before the geodesic is solved (they run in well under a
second each on the shipped model, which is not even loaded for most of them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit
import pytest

from spacetime_md import cli
from spacetime_md.molecular import load_system

DATA = Path(__file__).resolve().parents[2] / "spacetime_md" / "data" / "alanine_dipeptide"
C7EQ, C7AX = str(DATA / "C7eq.pdb"), str(DATA / "C7ax.pdb")


def _write_pdb(path: Path, positions_nm: np.ndarray, *, scale: float = 1.0) -> str:
    system = load_system("alanine-dipeptide")
    with open(path, "w") as f:
        app.PDBFile.writeFile(system.topology, positions_nm * scale * unit.nanometer, f)
    return str(path)


@pytest.fixture(scope="module")
def bad_pdbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pdbs")
    x = app.PDBFile(C7AX).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    swapped = x.copy()
    swapped[[8, 10]] = swapped[[10, 8]]
    (d / "garbage.pdb").write_text("this is not a PDB file\n")
    return {
        "mirror": _write_pdb(d / "mirror.pdb", x * np.array([-1.0, 1.0, 1.0])),
        "swapped": _write_pdb(d / "swapped.pdb", swapped),
        "collapsed": _write_pdb(d / "collapsed.pdb", np.zeros_like(x) + 0.5),
        # Written in nm: PDB files are read as Angstrom, so every length is 10x too small.
        "nm": _write_pdb(d / "nm.pdb", x, scale=0.1),
        "garbage": str(d / "garbage.pdb"),
    }


CASES = [
    # (id, extra argv, expected message fragment)
    ("mirror end", ["--end-pdb", "{mirror}"], "end: expected the chirality of alanine-dipeptide's reference structure, got a mirror image"),
    ("swapped atoms", ["--end-pdb", "{swapped}"], "end: expected bonds near their force-field lengths"),
    ("collapsed", ["--end-pdb", "{collapsed}"], "collapsed coordinates"),
    ("pdb written in nm", ["--end-pdb", "{nm}"], "about 10x too small"),
    ("garbage pdb", ["--end-pdb", "{garbage}"], "end: expected a readable PDB file"),
    ("missing pdb", ["--end-pdb", "nope.pdb"], "end: expected a PDB file, got missing path 'nope.pdb'"),
    ("start and start-pdb", ["--start", "C7eq", "--start-pdb", C7EQ], "--start and --start-pdb: expected one of them, got both"),
    ("unknown state", ["--start", "banana"], "state: expected one of ['C7eq', 'C7ax', 'alpha_R'], got 'banana'"),
    ("avoid without constraint", ["--avoid-state", "alpha_R"], "--avoid-state: only used with --constraint avoid"),
    ("avoid without state", ["--constraint", "avoid"], "avoid_state: expected a state name with constraint 'avoid'"),
    ("endpoint log_snr -50", ["--endpoint-log-snr", "-50"], "endpoint_log_snr: expected a value in [1, 12]"),
    ("endpoint log_snr nan", ["--endpoint-log-snr", "nan"], "endpoint_log_snr: expected a finite number"),
    ("endpoint log_snr 1e6", ["--endpoint-log-snr", "1e6"], "endpoint_log_snr: expected a value in [1, 12]"),
    ("min log_snr above endpoints", ["--constraint", "low-variance", "--min-log-snr", "5"], "min_log_snr: expected a value in [-4, endpoint_log_snr=4)"),
    ("zero paths", ["--n-paths", "0"], "n_paths: expected an integer >= 1, got 0"),
    ("huge n-paths", ["--n-paths", "100000000"], "n_paths: 100000000 paths of 960 frames would need about"),
    ("record-every not a divisor", ["--record-every", "7"], "record_every: expected a divisor of n_steps (300), got 7"),
    ("threads 0", ["--num-threads", "0"], "--num-threads: expected an integer in [1, 256], got 0"),
    ("negative init dip", ["--geodesic-init-dips", "0", "-1"], "--geodesic-init-dips: expected distinct finite numbers >= 0 (log_snr), got 0 -1"),
    ("repeated init dip", ["--geodesic-init-dips", "3", "3"], "--geodesic-init-dips: expected distinct finite numbers >= 0"),
    ("start threads 0", ["--geodesic-start-threads", "0"], "--geodesic-start-threads: expected an integer in [1, 256] or 'auto', got 0"),
    ("negative min-kl", ["--constraint", "avoid", "--avoid-state", "alpha_R", "--min-kl", "-1"], "min_kl: expected a finite number > 0"),
    ("retired tetrapeptide model as checkpoint", ["--checkpoint", "alanine-tetrapeptide-w32"], "checkpoint: 'alanine-tetrapeptide-w32' is no longer shipped (use 'alanine-tetrapeptide', the one model of every command)"),
    ("retired model as checkpoint", ["--checkpoint", "alanine-dipeptide-24k"], "checkpoint: 'alanine-dipeptide-24k' is no longer shipped"),
    ("unknown system", ["--system", "chignolin"], "system: expected one of ['alanine-dipeptide', 'alanine-tetrapeptide'], got 'chignolin'"),
    ("missing states file", ["--states", "nope.json"], "--states: expected an existing file, got 'nope.json'"),
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, dry_run, bad_pdbs, tmp_path, capsys):
    _, extra, message = case
    out = tmp_path / "out"
    argv = ["paths", "--out", str(out), *[a.format(**bad_pdbs) for a in extra]]
    if dry_run:
        argv.append("--dry-run")
    code = cli.main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err, captured.out[-500:])
    assert err.count("\n") == 0 and "Traceback" not in err
    assert message in err, err
    assert not out.exists()


def test_output_directory_protection(tmp_path, capsys):
    """--out holding another command's or a finished run's results is refused, nothing overwritten."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"command": "sample", "n_samples": 10}))
    code = cli.main(["paths", "--out", str(out), "--n-paths", "1"])
    assert code == 2
    assert "holds the results of `spacetime-md sample`" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["command"] == "sample"
    code = cli.main(["paths", "--out", str(tmp_path / "résumé"), "--n-paths", "1"])
    assert code == 2 and "expected an ASCII path" in capsys.readouterr().err
    assert not (tmp_path / "résumé").exists()
    f = tmp_path / "file"
    f.write_text("x")
    for target in (f, f / "sub"):
        assert cli.main(["paths", "--out", str(target), "--n-paths", "1"]) == 2
        assert "--out: expected a directory" in capsys.readouterr().err


def test_rerun_needs_overwrite_and_leaves_no_stale_paths(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "run"
    base = ["paths", "--system", "alanine-dipeptide", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
            "--n-points", "4", "--n-steps", "10", "--no-plots", "--no-baseline"]
    assert cli.main([*base, "--n-paths", "3"]) == 0
    capsys.readouterr()
    assert (out / "geodesic_path002.dcd").exists()
    before = (out / "report.json").read_text()
    # A second run into a finished run's directory is refused, and a failed run changes nothing.
    assert cli.main([*base, "--n-paths", "1"]) == 2
    assert "holds a finished `spacetime-md paths` run" in capsys.readouterr().err
    assert (out / "report.json").read_text() == before
    # With --overwrite the old outputs go first: no stale path002 next to a one-path report.
    assert cli.main([*base, "--n-paths", "1", "--overwrite"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.glob("geodesic_path*.dcd")) == ["geodesic_path000.dcd"]
    assert len(json.loads((out / "report.json").read_text())["geodesic"]["per_path"]) == 1
    marker = json.loads((out / ".spacetime_md_run.json").read_text())
    assert marker["status"] == "finished" and "geodesic_path000.dcd" in marker["files"]
    # Another command may not write into it either.
    assert cli.main(["sample", "--n-samples", "5", "--out", str(out)]) == 2
    assert "holds the results of `spacetime-md paths`" in capsys.readouterr().err
