"""Batch mode on Dask distributed: pairs files, same results as serial, worker loss, reruns, CLI."""

from __future__ import annotations

from spacetime_md._outputs import MARKER

import json
import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("distributed")

from spacetime_md import cli  # noqa: E402
from spacetime_md.core import GeodesicConfig  # noqa: E402
from spacetime_md.molecular.workflows.batch import run_batch  # noqa: E402
from spacetime_md.molecular.workflows.batch_tasks import BatchTask, derive_seed, read_pairs
from spacetime_md.molecular.paths.config import PathConfig  # noqa: E402
from spacetime_md.molecular.paths.run import run_paths  # noqa: E402

TINY = PathConfig(
    n_paths=2, n_points=8, n_steps=10, baseline=False,
    geodesic=GeodesicConfig(n_nodes=3, n_points=(8,), divergence="hutchinson", n_probes=1, max_steps=2),
)
PAIRS = "id,start,end,seed,n_paths\neq-ax,C7eq,C7ax,,\nax-r,C7ax,alpha_R,5,\neq-r,C7eq,alpha_R,,1\n"


@pytest.fixture(scope="module")
def checkpoint(system, tiny_checkpoint, tmp_path_factory):
    """The shared tiny model saved with its system recorded (as training writes it), so the batch
    needs no --system."""
    from spacetime_md.molecular.model.pretrained import load_checkpoint, save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_with_system.pt", load_checkpoint(tiny_checkpoint),
                           {"system": system.spec()})


@pytest.fixture(scope="module")
def cluster_run(checkpoint, tmp_path_factory):
    """Three pairs on an in-process two-worker LocalCluster (the default execution)."""
    root = tmp_path_factory.mktemp("batch")
    (root / "pairs.csv").write_text(PAIRS)
    events = []
    result = run_batch(root / "pairs.csv", root / "out", config=TINY, checkpoint=checkpoint, plots=False,
                       workers=2, dashboard=False, callback=events.append)
    return root, result, events


def _frames(directory):
    with np.load(directory / "paths_geodesic.npz") as data:
        return data["frames"].copy(), data["energies"].copy()


def _mtimes(out):
    return {p.name: (p / "task.json").stat().st_mtime_ns for p in out.iterdir() if (p / "task.json").is_file()}


# --------------------------------------------------------------------------- pairs files


def test_read_pairs_csv_and_yaml(system, tmp_path):
    system.to_mdtraj(system.positions_nm).save_pdb(str(tmp_path / "start.pdb"))
    (tmp_path / "pairs.csv").write_text(
        "# endpoint pairs\nstart,end,seed,constraint,avoid_state\n\nC7eq,C7ax,,,\nstart.pdb,alpha_R,3,avoid,C7ax\n"
    )
    (tmp_path / "pairs.yaml").write_text(
        "pairs:\n  - {start: C7eq, end: C7ax}\n  - {start: start.pdb, end: alpha_R, seed: 3, constraint: avoid, avoid_state: C7ax}\n"
    )
    from_csv, from_yaml = read_pairs(tmp_path / "pairs.csv"), read_pairs(tmp_path / "pairs.yaml")
    assert from_csv == from_yaml
    first, second = from_csv
    assert first.task_id == "0000-C7eq-C7ax" and dict(first.overrides) == {}
    assert second.task_id == "0001-start-alpha_R" and second.start == str((tmp_path / "start.pdb").resolve())
    assert dict(second.overrides) == {"seed": 3, "constraint": "avoid", "avoid_state": "C7ax"}
    config = second.resolve_config(TINY, batch_seed=0)
    assert config.seed == 3 and config.constraint == "avoid" and config.n_points == TINY.n_points
    # Derived seeds depend on the batch seed and the task id only.
    assert first.resolve_config(TINY, 0).seed == derive_seed(0, "0000-C7eq-C7ax") == derive_seed(0, "0000-C7eq-C7ax")
    assert len({derive_seed(s, t) for s in (0, 1) for t in ("a", "b")}) == 4


@pytest.mark.parametrize("text, error, match", [
    ("start\nC7eq\n", ValueError, r"pairs.csv: expected a header with 'start' and 'end'"),
    ("start,end,colour\nC7eq,C7ax,red\n", ValueError, r"unknown \['colour'\]"),
    ("start,end\nC7eq\n", ValueError, r"pairs.csv row 1: expected 2 values \(start,end\), got 1"),
    ("start,end\nC7eq,\n", ValueError, r"pairs.csv row 1: end: expected a state name or a PDB path, got nothing"),
    ("start,end,seed\nC7eq,C7ax,1\nC7eq,C7ax,x\n", ValueError, r"pairs.csv row 2: seed: expected an integer, got 'x'"),
    ("start,end,n_paths\nC7eq,C7ax,0\n", ValueError, r"row 1: n_paths: expected an integer >= 1, got 0"),
    ("start,end\nC7eq,missing.pdb\n", FileNotFoundError, r"row 1: end: expected a PDB file, got missing path"),
    ("id,start,end\na,C7eq,C7ax\na,C7ax,C7eq\n", ValueError, r"expected unique task ids, got 'a' twice \(pairs.csv row 1 and pairs.csv row 2\)"),
    ("id,start,end\n../x,C7eq,C7ax\n", ValueError, r"row 1: id: expected letters, digits"),
    ("start,end\n", ValueError, r"pairs.csv: expected at least one pair, got none"),
    ("", ValueError, r"expected a header row with at least 'start,end', got an empty file"),
])
def test_bad_csv_rows_give_clear_errors(tmp_path, text, error, match):
    (tmp_path / "pairs.csv").write_text(text)
    with pytest.raises(error, match=match):
        read_pairs(tmp_path / "pairs.csv")


def test_bad_files_and_rows_checked_against_the_system(tmp_path, checkpoint):
    with pytest.raises(ValueError, match=r"pairs: expected a .csv, .yaml or .yml file, got 'pairs.txt'"):
        (tmp_path / "pairs.txt").write_text("start,end\n")
        read_pairs(tmp_path / "pairs.txt")
    (tmp_path / "pairs.yaml").write_text("- {start: C7eq, end: C7ax}\n- C7eq\n")
    with pytest.raises(ValueError, match=r"pairs.yaml entry 2: expected a mapping with 'start' and 'end', got 'C7eq'"):
        read_pairs(tmp_path / "pairs.yaml")
    cases = [
        ("start,end\nC7eq,C7ax\nC7eq,nowhere\n", KeyError, r"pairs.csv row 2: state: expected one of"),
        ("start,end\nC7eq,C7eq\n", ValueError, r"row 1: start and end: expected two different structures"),
        ("start,end,constraint\nC7eq,C7ax,avoid\n", ValueError, r"row 1: avoid_state: expected a state name"),
    ]
    for text, error, match in cases:
        (tmp_path / "pairs.csv").write_text(text)
        with pytest.raises(error, match=match):
            run_batch(tmp_path / "pairs.csv", tmp_path / "out", config=TINY, checkpoint=checkpoint, workers=0)
    assert not (tmp_path / "out").exists()  # checked before anything is written


# --------------------------------------------------------------------------- execution


def test_two_worker_cluster_matches_the_serial_run(cluster_run, checkpoint):
    root, result, events = cluster_run
    out = root / "out"
    assert sorted(result.computed) == ["ax-r", "eq-ax", "eq-r"] and not result.failed and not result.skipped
    assert [e["event"] for e in events] == ["start", "task", "task", "task", "end"]
    pids = {rec["pid"] for rec in result.records.values()}
    assert os.getpid() not in pids  # ran on the worker processes
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v["status"] for k, v in manifest["tasks"].items()} == dict.fromkeys(["eq-ax", "ax-r", "eq-r"], "done")
    assert manifest["runs"][-1]["computed"] == 3 and manifest["runs"][-1]["finished_at"] is not None
    assert (out / "summary.csv").read_text().count("\n") == 4
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != MARKER]  # no temporary folders left
    for task in read_pairs(root / "pairs.csv"):
        config = task.resolve_config(TINY, batch_seed=0)
        serial = root / f"serial-{task.task_id}"
        run_paths(serial, start=task.start, end=task.end, config=config, checkpoint=checkpoint, plots=False)
        frames, energies = _frames(out / task.task_id)
        serial_frames, serial_energies = _frames(serial)
        assert frames.shape[0] == config.n_paths
        np.testing.assert_array_equal(frames, serial_frames)
        np.testing.assert_array_equal(energies, serial_energies)
        assert result.records[task.task_id]["seed"] == config.seed
    assert result.records["ax-r"]["seed"] == 5


def test_rerun_does_no_finished_work_again(cluster_run, checkpoint):
    root, first, _ = cluster_run
    out = root / "out"
    before = _mtimes(out)
    again = run_batch(root / "pairs.csv", out, config=TINY, checkpoint=checkpoint, plots=False, workers=2)
    assert again.computed == [] and sorted(again.skipped) == ["ax-r", "eq-ax", "eq-r"]
    assert again.dashboard_link is None  # nothing to do: no cluster was started
    assert _mtimes(out) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["computed"] for r in manifest["runs"]] == [3, 0]
    # Settings that differ from the finished results are refused, not silently mixed.
    with pytest.raises(ValueError, match=r"eq-ax: expected the settings its finished result .* got different \['path_config'\]"):
        run_batch(root / "pairs.csv", out, config=PathConfig(n_paths=3, n_points=8, n_steps=10, baseline=False,
                                                             geodesic=TINY.geodesic),
                  checkpoint=checkpoint, plots=False, workers=0)
    # A lost task folder is recomputed (serially here) with the same result.
    frames, _ = _frames(out / "eq-ax")
    import shutil

    shutil.rmtree(out / "eq-ax")
    third = run_batch(root / "pairs.csv", out, config=TINY, checkpoint=checkpoint, plots=False, workers=0)
    assert third.computed == ["eq-ax"] and sorted(third.skipped) == ["ax-r", "eq-r"]
    np.testing.assert_array_equal(_frames(out / "eq-ax")[0], frames)


@pytest.fixture
def local_cluster():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


def test_killing_a_worker_loses_no_finished_result(local_cluster, checkpoint, tmp_path):
    cluster, client = local_cluster
    slow = PathConfig(n_paths=2, n_points=8, n_steps=300, record_every=300, baseline=False,
                      geodesic=TINY.geodesic)
    tasks = [BatchTask(f"t{i}", "C7eq", end) for i, end in enumerate(["C7ax", "alpha_R"] * 2)]
    killed = {}

    def kill_a_busy_worker(info):
        if info["event"] != "task" or killed:
            return
        killed["finished"] = {info["task_id"]: (tmp_path / "out" / info["task_id"] / "task.json").read_text()}
        for _ in range(100):
            busy = [addr for addr, keys in client.processing().items() if keys]
            if busy:
                break
            time.sleep(0.05)
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        killed["pid"] = pid

    started = time.time()
    result = run_batch(tasks, tmp_path / "out", config=slow, checkpoint=checkpoint, plots=False,
                       scheduler=cluster.scheduler_address, callback=kill_a_busy_worker)
    assert "pid" in killed
    assert not result.failed and sorted(result.computed) == [t.task_id for t in tasks]
    # The result finished before the kill is untouched; every task has a complete folder.
    (task_id, text), = killed["finished"].items()
    assert (tmp_path / "out" / task_id / "task.json").read_text() == text
    for task in tasks:
        assert _frames(tmp_path / "out" / task.task_id)[0].shape == (2, 8, 22, 3)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".") and p.name != MARKER]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all(v["status"] == "done" for v in manifest["tasks"].values())
    assert all(started <= r["finished_at"] <= time.time() for r in result.records.values())  # timestamps, no speed


# --------------------------------------------------------------------------- CLI


def test_cli_batch(tmp_path, checkpoint, capsys):
    (tmp_path / "pairs.csv").write_text("id,start,end\nfirst,C7eq,C7ax\n")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY.to_dict()))
    args = ["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
            "--path-config", str(config), "--workers", "0", "--no-plots", "--no-progress", "--seed", "3"]
    assert cli.main(args + ["--dry-run", "--n-paths", "1"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["tasks"][0]["seed"] == derive_seed(3, "first") and resolved["path_config"]["n_paths"] == 1
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert "first" in captured.out and "1 computed, 0 already finished, 0 failed" in captured.out
    assert json.loads((tmp_path / "out" / "first" / "task.json").read_text())["seed"] == derive_seed(3, "first")
    # --dry-run on the finished folder: the pair is reported finished; other settings are refused
    # exactly as the real run refuses them (one line, exit 2), nothing is written.
    before = sorted(p.name for p in (tmp_path / "out").rglob("*"))
    assert cli.main(args + ["--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"][0]["status"] == "finished (skipped)"
    assert cli.main(args + ["--dry-run", "--n-paths", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "first: expected the settings its finished result" in err
    assert "different ['path_config']" in err
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == before
    (tmp_path / "bad.csv").write_text("start,end\nC7eq,C7ax,extra\n")
    code = cli.main(["batch", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("spacetime-md: error: bad.csv row 1: expected 2 values (start,end), got 3")
    code = cli.main(["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "o3"), "--path-config",
                     str(tmp_path / "nope.json")])
    assert code == 2 and "--path-config: expected a JSON file, got missing path" in capsys.readouterr().err


def test_a_failing_pair_is_recorded_and_the_batch_goes_on(system, checkpoint, tmp_path, capsys):
    # Same structure as C7eq under another name: passes the checks, fails inside the task.
    import shutil

    from spacetime_md.molecular.system.build import system_data_path

    state = system.get_state("C7eq")
    shutil.copy(str(state.representative_pdb), tmp_path / "copy.pdb")
    (tmp_path / "pairs.csv").write_text("id,start,end\nbad,C7eq,copy.pdb\ngood,C7eq,C7ax\n")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY.to_dict()))
    args = ["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
            "--path-config", str(config), "--workers", "0", "--no-plots", "--no-progress", "--retries", "0"]
    assert cli.main(args) == 1
    captured = capsys.readouterr()
    assert "pair bad failed: ValueError: start and end: expected two different structures" in captured.err
    assert "1 computed, 0 already finished, 1 failed" in captured.out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tasks"]["bad"]["status"] == "failed" and "two different structures" in manifest["tasks"]["bad"]["error"]
    assert manifest["tasks"]["good"]["status"] == "done" and not (tmp_path / "out" / "bad").exists()
    # A rerun tries the failed pair again and skips the finished one.
    result = run_batch(tmp_path / "pairs.csv", tmp_path / "out", config=TINY, checkpoint=checkpoint, plots=False,
                       workers=0)
    assert result.skipped == ["good"] and result.failed == ["bad"] and not result.ok


def test_cli_batch_takes_a_guided_checkpoint_and_refuses_a_hard_interval(system, tiny_checkpoint, tmp_path, capsys):
    """A guided checkpoint (`spacetime-md guide`, like the shipped default) runs a batch like any
    model; one with a hard interval is a one-line error before any pair is computed."""
    import torch

    from spacetime_md.molecular.model.pretrained import load_checkpoint, save_guided_checkpoint

    model = load_checkpoint(tiny_checkpoint)
    guide = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        for p in guide.parameters():
            p.mul_(0.9)
    (tmp_path / "pairs.csv").write_text("id,start,end\nfirst,C7eq,C7ax\n")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY.to_dict()))
    for width, code in ((0.5, 0), (0.0, 2)):
        ckpt = save_guided_checkpoint(tmp_path / f"guided{width}.pt", model, guide, weight=2.0, log_snr_min=-2.0,
                                      log_snr_max=8.0, edge_width=width, metadata={"system": system.spec()})
        out = tmp_path / f"out{width}"
        args = ["batch", str(tmp_path / "pairs.csv"), "--out", str(out), "--checkpoint", str(ckpt),
                "--path-config", str(config), "--workers", "0", "--no-plots", "--no-progress"]
        assert cli.main(args) == code
        captured = capsys.readouterr()
        if code == 0:
            assert "1 computed, 0 already finished, 0 failed" in captured.out
            assert (out / "first" / "task.json").is_file()
        else:
            err = captured.err.strip()
            assert err.count("\n") == 0 and "hard interval (edge_width 0)" in err, err
            assert not (out / "first").exists()
