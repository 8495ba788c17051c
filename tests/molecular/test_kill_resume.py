"""``kill -9`` in the middle of the four long commands, then a resume: the result is bitwise the
result of an uninterrupted run (sample, train, committor, batch).

Each command runs in its own process (the console entry point, as a user runs it) with small
settings; the process group is killed with SIGKILL as soon as its first checkpoint is on disk,
so the resumed run really starts from a checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openmm")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
CLI = [sys.executable, "-c", "import sys; from spacetime_md.cli import main; sys.exit(main())"]


def _run(args, cwd):
    done = subprocess.run([*CLI, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _kill_when(args, cwd, ready, timeout=600.0):
    """Start the command; SIGKILL its process group once ``ready()``; True if it was killed
    before finishing."""
    proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return False


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".part"))


def test_sample_killed_then_resumed_is_bitwise_the_uninterrupted_run(tmp_path):
    import mdtraj

    base = ["sample", "--n-samples", "240", "--chunk-size", "40", "--seed", "3", "--no-progress", "--no-plot",
            "--n-replicas", "2"]
    _run([*base, "--out", "whole"], tmp_path)
    killed = _kill_when([*base, "--out", "cut"], tmp_path,
                        lambda: len(list((tmp_path / "cut" / "chunks").glob("*"))) >= 2)
    assert killed, "the run finished before its second chunk was seen; make it longer"
    assert not (tmp_path / "cut" / "samples.h5").exists()
    _run([*base, "--out", "cut", "--resume"], tmp_path)
    a = mdtraj.load(str(tmp_path / "whole" / "samples.h5"))
    b = mdtraj.load(str(tmp_path / "cut" / "samples.h5"))
    assert a.n_frames == b.n_frames == 240
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(np.load(tmp_path / "whole" / "energies.npy"), np.load(tmp_path / "cut" / "energies.npy"))


def test_train_killed_then_resumed_is_bitwise_the_uninterrupted_run(tmp_path):
    import torch

    _run(["sample", "--n-samples", "64", "--chunk-size", "64", "--seed", "0", "--no-progress", "--no-plot",
          "--n-replicas", "1", "--out", "data"], tmp_path)
    base = ["train", "--data", str(tmp_path / "data" / "samples.h5"), "--steps", "60", "--checkpoint-every", "10",
            "--batch-size", "8", "--hidden-channels", "8", "--n-layers", "1", "--seed", "2", "--no-progress",
            "--num-threads", "1"]
    _run([*base, "--out", "whole"], tmp_path)
    killed = _kill_when([*base, "--out", "cut"], tmp_path, lambda: (tmp_path / "cut" / "training_state.pt").is_file())
    assert killed, "training finished before its first checkpoint was seen; make it longer"
    _run([*base, "--out", "cut", "--resume"], tmp_path)
    whole = sorted((tmp_path / "whole").glob("*.pt"))
    assert whole, "no checkpoint written"
    for path in whole:
        if path.name == "training_state.pt":
            continue
        a = torch.load(path, map_location="cpu", weights_only=False)
        b = torch.load(tmp_path / "cut" / path.name, map_location="cpu", weights_only=False)
        sa, sb = a["state_dict"], b["state_dict"]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{path.name}: {key} differs after kill -9 + resume"



def test_committor_killed_then_resumed_is_bitwise_the_uninterrupted_run(paths_dir, tmp_path):
    base = ["committor", str(paths_dir), "--frames", "6", "--shots", "12", "--workers", "1", "--max-length-ps", "1",
            "--no-plot", "--no-refine", "--seed", "5"]
    _run([*base, "--out", str(tmp_path / "whole")], tmp_path)

    def some_shots_saved():
        path = tmp_path / "cut" / "shots.json"
        try:
            return bool(json.loads(path.read_text()).get("frames"))
        except (OSError, ValueError):
            return False

    killed = _kill_when([*base, "--out", str(tmp_path / "cut")], tmp_path, some_shots_saved)
    assert killed, "the committor finished before its first shot checkpoint was seen; make it longer"
    assert not (tmp_path / "cut" / "committor.json").exists()
    done = _run([*base, "--out", str(tmp_path / "cut")], tmp_path)
    assert "from checkpoint" in done.stdout
    a = json.loads((tmp_path / "whole" / "committor.json").read_text())
    b = json.loads((tmp_path / "cut" / "committor.json").read_text())
    assert a["frames"] and a["shots"]["resumed"] == 0 and b["shots"]["resumed"] > 0
    for key in ("frames", "ts_candidates", "max_energy_frame", "crosses_half"):
        assert a[key] == b[key], key
    assert _leftovers(tmp_path / "cut") == []


def test_batch_killed_then_resumed_is_bitwise_the_uninterrupted_run(system, tiny_checkpoint, tmp_path):
    from spacetime_md.molecular.model.pretrained import load_checkpoint, save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "tiny_with_system.pt", load_checkpoint(tiny_checkpoint),
                                 {"system": system.spec()})
    (tmp_path / "pairs.csv").write_text("id,start,end\neq-ax,C7eq,C7ax\nax-r,C7ax,alpha_R\neq-r,C7eq,alpha_R\n")
    config = {"n_paths": 2, "n_points": 8, "n_steps": 10, "baseline": False,
              "geodesic": {"n_nodes": 3, "n_points": [8], "divergence": "hutchinson", "n_probes": 1, "max_steps": 2}}
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    base = ["batch", str(tmp_path / "pairs.csv"), "--checkpoint", str(checkpoint), "--path-config",
            str(tmp_path / "tiny.json"), "--workers", "0", "--no-plots", "--no-progress", "--seed", "1"]
    _run([*base, "--out", str(tmp_path / "whole")], tmp_path)
    killed = _kill_when([*base, "--out", str(tmp_path / "cut")], tmp_path,
                        lambda: len(list((tmp_path / "cut").glob("*/task.json"))) >= 1)
    assert killed, "the batch finished before its first pair was seen; make it longer"
    _run([*base, "--out", str(tmp_path / "cut")], tmp_path)
    for pair in ("eq-ax", "ax-r", "eq-r"):
        with np.load(tmp_path / "whole" / pair / "paths_geodesic.npz") as a, \
                np.load(tmp_path / "cut" / pair / "paths_geodesic.npz") as b:
            np.testing.assert_array_equal(a["frames"], b["frames"])
            np.testing.assert_array_equal(a["energies"], b["energies"])
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert all(t["status"] == "done" for t in manifest["tasks"].values())
