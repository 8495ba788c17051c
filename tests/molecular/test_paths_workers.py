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


def test_auto_workers_use_the_usable_cores(monkeypatch):
    from spacetime_md.molecular.paths import openmm_langevin
    from spacetime_md.molecular.sampling import workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 4)
    assert openmm_langevin.resolve_path_workers("auto", 8) == 4
    assert openmm_langevin.resolve_path_workers("auto", 3) == 3  # capped by the paths
    assert openmm_langevin.resolve_path_workers(3, 2) == 2
    with pytest.raises(ValueError, match="workers: expected a positive integer or 'auto', got 'two'"):
        openmm_langevin.resolve_path_workers("two", 8)


def test_path_workers_do_not_import_torch(schedule):
    """A path worker process imports numpy and OpenMM only, so it is ready in a fraction of a second."""
    system, centres, k, x0 = schedule
    with _sampler(system, 2) as two:
        two.start_workers()
        two._pool[0].call("run_paths", {**two._job(centres, k, np.full(4, 20), x0, 1, 0, 10),
                                        "indices": np.array([0])})
        two._pool[0].result()
        import subprocess
        import sys

        # The same imports as the worker's entry point, in a fresh interpreter.
        code = ("import sys, spacetime_md.molecular.paths.openmm_langevin, spacetime_md.molecular.sampling.workers; "
                "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


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


def test_one_worker_runs_background_paths_in_a_thread(schedule):
    """``background=True`` with one worker: the paths run in a thread while the caller is free,
    bitwise those of ``sample``; a later call waits for them; ``close`` stops a long run at once."""
    import threading
    import time

    system, centres, k, x0 = schedule
    with _sampler(system, 1) as one:
        ref = one.sample(centres, k, x0, n_paths=3, n_steps=20, seed=5, record_every=10)
        pending = one.start_schedule(centres, k, np.full(4, 20), x0, n_paths=3, seed=5, record_every=10,
                                     background=True)
        assert type(pending._assigned[0][0]).__name__ == "_PathThread"  # not run in this thread
        again = one.sample(centres, k, x0, n_paths=3, n_steps=20, seed=5, record_every=10)  # waits for the thread
        background = pending.result()
    np.testing.assert_array_equal(background.frames, ref.frames)
    np.testing.assert_array_equal(again.frames, ref.frames)
    assert background.n_force_evals == 3 * 80

    sampler = _sampler(system, 1)
    long = sampler.start_schedule(centres, k, np.full(4, 500_000), x0, n_paths=2, seed=0, record_every=1000,
                                  background=True)
    time.sleep(0.3)
    t0 = time.perf_counter()
    sampler.close()
    assert time.perf_counter() - t0 < 5.0  # 4 million steps would take about a minute
    assert not any(t.name == "spacetime-md paths" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="the sampler was closed"):
        long.result()
    # Still usable after close, in the calling thread.
    np.testing.assert_array_equal(sampler.sample(centres, k, x0, n_paths=3, n_steps=20, seed=5,
                                                 record_every=10).frames, ref.frames)


@pytest.mark.parametrize("guarded", [True, False])
def test_auto_workers_need_a_main_guard(tmp_path, guarded):
    """A script without ``if __name__ == "__main__":`` would be re-run by every spawned worker
    (and fail): ``"auto"`` then keeps the paths (and replicas) in the script's process."""
    import subprocess
    import sys

    body = ("from spacetime_md.molecular.paths.openmm_langevin import resolve_path_workers\n"
            "from spacetime_md.molecular.sampling.workers import resolve_workers\n"
            "from spacetime_md._cpu import usable_cores\n"
            "print(resolve_path_workers('auto', 8), resolve_workers('auto', 8), min(usable_cores(), 8))\n")
    script = tmp_path / "script.py"
    script.write_text("if __name__ == '__main__':\n" + "".join("    " + line + "\n" for line in body.splitlines())
                      if guarded else body)
    paths, replicas, cores = map(int, subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                                     check=True).stdout.split())
    assert paths == replicas == (cores if guarded else 1)  # paths and replica exchange alike
