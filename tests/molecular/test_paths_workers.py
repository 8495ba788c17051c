"""Annealed-Langevin paths in worker processes: bitwise the frames of one process, whatever the split."""

from __future__ import annotations

import numpy as np
import openmm.unit as unit
import pytest

from spacetime_md.molecular import load_system
from spacetime_md.molecular.paths.openmm_langevin import RestrainedLangevinSampler


@pytest.fixture(scope="module")
def schedule():
    system = load_system("alanine-dipeptide")
    x0 = system.positions_nm
    n_points = 4
    rng = np.random.default_rng(0)
    centres = x0 + 0.02 * rng.standard_normal((n_points, *x0.shape))
    k = np.array([2000.0, 500.0, 1000.0, 3000.0])
    return system, centres, k, x0


def _sampler(system, workers):
    return RestrainedLangevinSampler(system.openmm_system, timestep=1.0 * unit.femtosecond,
                                     friction=10.0 / unit.picosecond, platform="Reference", workers=workers)


def test_workers_give_the_frames_of_one_process(schedule):
    system, centres, k, x0 = schedule
    with _sampler(system, 1) as one:
        ref = one.sample(centres, k, x0, n_paths=5, n_steps=20, seed=7, record_every=10)
    seen = []
    with _sampler(system, 3) as three:
        assert three.workers == 3
        # In the background (all paths in workers) while this process is free, then split three ways.
        pending = three.start_schedule(centres, k, np.full(4, 20), x0, n_paths=5, seed=7, record_every=10,
                                       background=True)
        split = three.sample(centres, k, x0, n_paths=5, n_steps=20, seed=7, record_every=10,
                             callback=lambda info: seen.append(info["path"]))
        background = pending.result()
        assert len(three._pool) == 2
        assert three.n_force_evals == 2 * 5 * 80
    np.testing.assert_array_equal(split.frames, ref.frames)
    np.testing.assert_array_equal(background.frames, ref.frames)
    assert seen == [0, 1, 2, 3, 4]
    assert split.n_force_evals == ref.n_force_evals == 5 * 80
    assert not three._pool  # closed


def test_worker_errors_are_one_line(schedule):
    from spacetime_md.molecular.sampling.workers import ReplicaWorkerError

    system, centres, k, x0 = schedule
    with _sampler(system, 2) as two:
        job = two._job(centres, k, np.full(4, 20), x0, 2, 0, 10)
        two._start_workers(1)
        two._pool[0].call("run_paths", {**job, "indices": np.array([0, 1]), "x_init": job["x_init"][:1]})
        with pytest.raises(ReplicaWorkerError, match=r"OpenMM path worker 1 \(pid \d+\) failed: IndexError"):
            two._pool[0].result()
    with pytest.raises(ValueError, match="workers: expected a positive integer or 'auto', got 0"):
        _sampler(system, 0)


def test_auto_workers_use_the_idle_cores(monkeypatch):
    from spacetime_md.molecular.paths import openmm_langevin

    monkeypatch.setattr(openmm_langevin, "usable_cores", lambda: 4)
    for load, expected in ((0.2, 4), (1.4, 3), (3.6, 1), (9.0, 1)):
        monkeypatch.setattr(openmm_langevin.os, "getloadavg", lambda load=load: (load, load, load))
        assert openmm_langevin.resolve_path_workers("auto", 8) == expected
    assert openmm_langevin.resolve_path_workers(3, 2) == 2  # capped by the paths
    with pytest.raises(ValueError, match="workers: expected a positive integer or 'auto', got 'two'"):
        openmm_langevin.resolve_path_workers("two", 8)


def test_paths_cli_workers_flag(tmp_path, capsys):
    import json

    from spacetime_md import cli
    from spacetime_md.molecular.paths.config import PathConfig

    assert cli.main(["paths", "--out", str(tmp_path / "o"), "--dry-run", "--workers", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["path_config"]["workers"] == 2
    assert cli.main(["paths", "--out", str(tmp_path / "o"), "--workers", "0"]) != 0
    assert "--workers: expected 'auto' or an integer in [1, 256], got '0'" in capsys.readouterr().err
    assert PathConfig().workers == "auto"
    with pytest.raises(ValueError, match="workers: expected a positive integer or 'auto', got 0"):
        PathConfig(workers=0)
