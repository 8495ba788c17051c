"""Grouped geodesic solves in batch mode (``group_size`` / ``--group-size``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("distributed")

from spacetime_md import cli  # noqa: E402
from spacetime_md.core import GeodesicConfig, optimize_geodesics  # noqa: E402
from spacetime_md.molecular.workflows.batch import run_batch  # noqa: E402
from spacetime_md.molecular.paths.config import PathConfig  # noqa: E402
from spacetime_md.molecular.paths.transition import compute_transition_paths, prepare_geodesic_problem
from spacetime_md.molecular.model.pretrained import load_checkpoint  # noqa: E402

TINY = PathConfig(
    n_paths=2, n_points=8, n_steps=10, baseline=False, relaxed=False,
    geodesic=GeodesicConfig(n_nodes=3, n_points=(8,), divergence="hutchinson", n_probes=1, max_steps=3),
)
PAIRS = "id,start,end,seed\neq-ax,C7eq,C7ax,\nax-r,C7ax,alpha_R,5\neq-r,C7eq,alpha_R,\n"


@pytest.fixture(scope="module")
def checkpoint(system, tiny_checkpoint, tmp_path_factory):
    """The shared tiny model saved with its system recorded (as training writes it), so the batch
    needs no --system."""
    from spacetime_md.molecular.model.pretrained import load_checkpoint, save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_with_system.pt", load_checkpoint(tiny_checkpoint),
                           {"system": system.spec()})


def _run(root, name, checkpoint, group_size, **kwargs):
    (root / "pairs.csv").write_text(PAIRS)
    return run_batch(root / "pairs.csv", root / name, config=TINY, checkpoint=checkpoint, plots=False,
                     workers=0, dashboard=False, group_size=group_size, **kwargs)


def _geodesic(directory):
    with np.load(directory / "geodesic.npz") as data:
        return data["log_snr"].copy(), data["x"].copy()


def test_group_results_do_not_depend_on_the_group(checkpoint, tmp_path):
    """Groups of 2 (2 + 1 pairs) and of 3 give each pair the same geodesic and paths."""
    two = _run(tmp_path, "g2", checkpoint, 2)
    three = _run(tmp_path, "g3", checkpoint, 3)
    assert two.ok and three.ok and sorted(two.computed) == sorted(three.computed) == ["ax-r", "eq-ax", "eq-r"]
    for task_id in two.computed:
        l2, x2 = _geodesic(two.out / task_id)
        l3, x3 = _geodesic(three.out / task_id)
        np.testing.assert_allclose(l2, l3, atol=1e-4)
        np.testing.assert_allclose(x2, x3, atol=1e-4)
        r2 = json.loads((two.out / task_id / "task.json").read_text())
        r3 = json.loads((three.out / task_id / "task.json").read_text())
        assert r2["fingerprint"]["geodesic_solver"] == "batched"
        assert r2["summary"]["geodesic_energy"] == pytest.approx(r3["summary"]["geodesic_energy"], rel=1e-4)
        config = json.loads((two.out / task_id / "config.json").read_text())
        assert config["geodesic"] == "precomputed"
    # Different pairs got different geodesics (the group did not share one).
    assert not np.allclose(_geodesic(two.out / "eq-ax")[1], _geodesic(two.out / "eq-r")[1])


def test_grouped_geodesic_equals_a_batched_solve_of_that_pair_alone(system, checkpoint, tmp_path):
    result = _run(tmp_path, "g2", checkpoint, 2)
    model = load_checkpoint(checkpoint)
    config = PathConfig.from_dict(json.loads((result.out / "ax-r" / "task.json").read_text())["fingerprint"]["path_config"])
    torch.manual_seed(config.seed)
    problem = prepare_geodesic_problem(system, model, "C7ax", "alpha_R", config)
    (alone,) = optimize_geodesics(problem.model, [problem.start], [problem.end], config.geodesic,
                                  [problem.constraints], setup_seeds=[config.seed])
    log_snr, x = _geodesic(result.out / "ax-r")
    np.testing.assert_allclose(alone.log_snr.numpy(), log_snr, atol=1e-4)
    np.testing.assert_allclose(alone.x.numpy(), x, atol=1e-4)


def test_rerun_skips_finished_pairs_and_refuses_another_solver(checkpoint, tmp_path):
    first = _run(tmp_path, "out", checkpoint, 2)
    assert first.ok and len(first.computed) == 3
    again = _run(tmp_path, "out", checkpoint, 2)
    assert again.computed == [] and sorted(again.skipped) == ["ax-r", "eq-ax", "eq-r"]
    with pytest.raises(ValueError, match="geodesic_solver"):
        _run(tmp_path, "out", checkpoint, 1)


def test_two_worker_cluster_runs_groups_like_the_serial_run(checkpoint, tmp_path):
    serial = _run(tmp_path, "serial", checkpoint, 2)
    (tmp_path / "pairs.csv").write_text(PAIRS)
    cluster = run_batch(tmp_path / "pairs.csv", tmp_path / "cluster", config=TINY, checkpoint=checkpoint, plots=False,
                        workers=2, dashboard=False, group_size=2)
    assert cluster.ok and sorted(cluster.computed) == sorted(serial.computed)
    for task_id in serial.computed:
        np.testing.assert_allclose(_geodesic(cluster.out / task_id)[1], _geodesic(serial.out / task_id)[1], atol=1e-5)
        with np.load(cluster.out / task_id / "paths_geodesic.npz") as a, np.load(serial.out / task_id / "paths_geodesic.npz") as b:
            np.testing.assert_allclose(a["frames"], b["frames"], atol=1e-4)
    manifest = json.loads((cluster.out / "manifest.json").read_text())
    assert {e["status"] for e in manifest["tasks"].values()} == {"done"}


def test_a_finished_pair_of_a_group_is_not_recomputed(checkpoint, tmp_path):
    first = _run(tmp_path, "out", checkpoint, 3)
    (first.out / "eq-r" / "task.json").unlink()  # make one pair unfinished...
    import shutil

    shutil.rmtree(first.out / "eq-r")
    mtime = (first.out / "eq-ax" / "task.json").stat().st_mtime_ns
    again = _run(tmp_path, "out", checkpoint, 3)
    assert again.computed == ["eq-r"] and sorted(again.skipped) == ["ax-r", "eq-ax"]
    assert (first.out / "eq-ax" / "task.json").stat().st_mtime_ns == mtime


def test_a_precomputed_geodesic_must_join_the_pair(system, checkpoint):
    model = load_checkpoint(checkpoint)
    torch.manual_seed(0)
    problem = prepare_geodesic_problem(system, model, "C7eq", "C7ax", TINY)
    (geo,) = optimize_geodesics(problem.model, [problem.start], [problem.end], TINY.geodesic)
    with pytest.raises(ValueError, match="geodesic: expected a GeodesicResult whose curve joins"):
        compute_transition_paths(system, model, "C7eq", "alpha_R", TINY, geodesic=geo)


def test_bad_group_size(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="group_size: expected an integer >= 1, got 0"):
        _run(tmp_path, "out", checkpoint, 0)


def test_cli_group_size(checkpoint, tmp_path, capsys):
    (tmp_path / "pairs.csv").write_text("start,end\nC7eq,C7ax\nC7ax,alpha_R\n")
    code = cli.main(["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out"), "--checkpoint",
                     str(checkpoint), "--workers", "0", "--group-size", "2", "--n-paths", "2", "--n-points", "8",
                     "--n-steps", "10", "--no-baseline", "--no-plots", "--no-dashboard"])
    assert code == 0
    assert "2 pairs" in capsys.readouterr().err
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["group_size"] == 2
    code = cli.main(["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out2"), "--workers", "0",
                     "--group-size", "0", "--no-dashboard"])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--group-size" in err[0]


def test_a_failing_pair_of_a_group_is_recorded_and_its_neighbour_finishes(system, checkpoint, tmp_path):
    # Same structure as C7eq under another name: passes the batch checks, fails while the
    # group's endpoints are prepared; only that pair fails, with its own error.
    import shutil

    from spacetime_md.molecular.system.build import system_data_path

    state = system.get_state("C7eq")
    shutil.copy(str(state.representative_pdb), tmp_path / "copy.pdb")
    (tmp_path / "pairs.csv").write_text("id,start,end\nbad,C7eq,copy.pdb\ngood,C7eq,C7ax\n")
    result = run_batch(tmp_path / "pairs.csv", tmp_path / "out", config=TINY, checkpoint=checkpoint, plots=False,
                       workers=0, dashboard=False, group_size=2, retries=0)
    assert result.failed == ["bad"] and result.computed == ["good"] and not result.ok
    assert result.records["bad"]["error"].startswith("ValueError: start and end: expected two different structures")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tasks"]["good"]["status"] == "done" and not (tmp_path / "out" / "bad").exists()


def test_a_group_whose_solve_fails_is_solved_pair_by_pair_with_the_same_result(checkpoint, tmp_path, monkeypatch):
    grouped = _run(tmp_path, "grouped", checkpoint, 3)
    import spacetime_md.core as core

    real = core.optimize_geodesics
    calls = []

    def no_room_for_groups(model, starts, ends, *args, **kwargs):
        calls.append(len(starts))
        if len(starts) > 1:
            raise RuntimeError("CUDA out of memory (simulated: groups do not fit)")
        return real(model, starts, ends, *args, **kwargs)

    monkeypatch.setattr(core, "optimize_geodesics", no_room_for_groups)
    alone = _run(tmp_path, "alone", checkpoint, 3)
    assert calls == [3, 1, 1, 1]
    assert alone.ok and sorted(alone.computed) == sorted(grouped.computed)
    for task_id in grouped.computed:
        np.testing.assert_allclose(_geodesic(alone.out / task_id)[1], _geodesic(grouped.out / task_id)[1], atol=1e-4)
