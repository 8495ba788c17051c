"""Protected output directories (spacetime_md._outputs)."""

from __future__ import annotations

import json
import os

import pytest

from spacetime_md._outputs import (
    MARKER,
    OutputExistsError,
    check_path_encodable,
    finish_output_dir,
    list_outputs,
    prepare_output_dir,
)


def test_fresh_directory_is_claimed_and_finished(tmp_path):
    out = prepare_output_dir(tmp_path / "run", "paths")
    assert json.loads((out / MARKER).read_text())["status"] == "running"
    (out / "report.json").write_text("{}")
    finish_output_dir(out, list_outputs(out, ["*.json"]))
    marker = json.loads((out / MARKER).read_text())
    assert marker["status"] == "finished" and marker["files"] == ["report.json"]


def test_finished_run_and_other_commands_are_protected(tmp_path):
    out = prepare_output_dir(tmp_path / "run", "paths")
    for name in ("geodesic_path000.dcd", "geodesic_path007.dcd", "report.json", "config.json"):
        (out / name).write_text("x")
    finish_output_dir(out, ["geodesic_path000.dcd", "geodesic_path007.dcd", "report.json", "config.json"])
    with pytest.raises(OutputExistsError, match="holds a finished `spacetime-md paths` run"):
        prepare_output_dir(out, "paths")
    with pytest.raises(OutputExistsError, match="holds the results of `spacetime-md paths`"):
        prepare_output_dir(out, "sample")
    with pytest.raises(OutputExistsError, match="holds the results of `spacetime-md paths`"):
        prepare_output_dir(out, "sample", resume=True)
    # Nothing was touched by the refusals.
    assert sorted(p.name for p in out.iterdir() if p.name != MARKER) == [
        "config.json", "geodesic_path000.dcd", "geodesic_path007.dcd", "report.json"]
    (out / "user_notes.txt").write_text("mine")
    prepare_output_dir(out, "paths", overwrite=True)
    # The old run's outputs are gone (no stale path007 next to a new smaller run); other files stay.
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "user_notes.txt"])


def test_unfinished_run_can_resume(tmp_path):
    out = prepare_output_dir(tmp_path / "run", "train")
    (out / "training_state.pt").write_text("x")
    assert prepare_output_dir(out, "train", resume=True) == out
    assert (out / "training_state.pt").exists()


def test_legacy_directory_from_config(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"command": "paths"}))
    with pytest.raises(OutputExistsError, match="finished `spacetime-md paths` run"):
        prepare_output_dir(out, "paths")
    with pytest.raises(OutputExistsError, match="results of `spacetime-md paths`"):
        prepare_output_dir(out, "committor")
    (out / "config.json").write_text(json.dumps({"n_samples": 3}))
    with pytest.raises(OutputExistsError, match="results of `spacetime-md unknown`"):
        prepare_output_dir(out, "paths")
    assert prepare_output_dir(out, "sample", resume=True) == out


def test_bad_paths(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="which is a file"):
        prepare_output_dir(f, "paths")
    with pytest.raises(ValueError, match="lies under the file"):
        prepare_output_dir(f / "sub", "paths")
    with pytest.raises(ValueError, match="expected an ASCII path"):
        prepare_output_dir(tmp_path / "résultats", "paths", ascii_only=True)
    check_path_encodable(tmp_path / "résultats")  # fine for writers without the ASCII limit
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="cannot (create|write)"):
                prepare_output_dir(locked / "run", "paths")
        finally:
            locked.chmod(0o700)


def test_dry_run_creates_nothing(tmp_path):
    out = prepare_output_dir(tmp_path / "run", "paths", dry_run=True)
    assert not out.exists()
