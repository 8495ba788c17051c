"""Replica exchange in worker processes: bitwise the samples of the in-process run, resumable
with another number of workers, a replica's noise independent of the process that runs it, and
a dead worker reported in one line without a hang or a leftover process."""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import openmm
import openmm.unit as unit
import pytest

from spacetime_md.cli import main
from spacetime_md.errors import SpacetimeMDError
from spacetime_md.molecular import load_system, sample_boltzmann
from spacetime_md.molecular.sampling.workers import ReplicaGroup, ReplicaWorkerError, WorkerGroup, resolve_workers
from tests.molecular.test_sampling import FAST as SAMPLING_FAST

#: test_sampling.py's tiny settings (3 replicas, 10 MD steps between exchanges), no plot.
FAST = {**SAMPLING_FAST, "plot": False}


@pytest.fixture(scope="module")
def system():
    return load_system("alanine-dipeptide")


@pytest.fixture(autouse=True)
def no_leftover_processes():
    yield
    assert multiprocessing.active_children() == []


@pytest.fixture
def deadline():
    """Fail instead of hanging (a worker protocol bug would block on a pipe)."""
    def on_alarm(signum, frame):
        raise TimeoutError("test took longer than 120 s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _same(a, b):
    np.testing.assert_array_equal(a.coordinates_nm, b.coordinates_nm)
    np.testing.assert_array_equal(a.energies_kj_per_mol, b.energies_kj_per_mol)
    assert a.report["exchange_acceptance"] == b.report["exchange_acceptance"]
    assert a.report["round_trips"] == b.report["round_trips"]


def test_two_workers_give_bitwise_the_in_process_samples_and_resume_with_one(tmp_path, system, deadline):
    one = sample_boltzmann(system, 10, tmp_path / "one", seed=4, workers=1, **FAST)
    two = sample_boltzmann(system, 10, None, seed=4, workers=2, **FAST)
    assert (one.report["workers"], two.report["workers"]) == (1, 2)
    _same(one, two)
    # A run started with 2 workers and resumed with 1 (and the other way round) is the same run.
    part = sample_boltzmann(system, 10, tmp_path / "cut", seed=4, workers=2, max_chunks=1, **FAST)
    assert not part.complete
    resumed = sample_boltzmann(system, 10, tmp_path / "cut", seed=4, workers=1, resume=True, **FAST)
    _same(one, resumed)


def test_a_replicas_noise_does_not_depend_on_its_process_neighbours(system):
    """The Reference platform draws all Langevin noise of a process from one generator; the group
    reseeds it per replica, so a replica run alone gives what it gives beside others."""
    xml = openmm.XmlSerializer.serialize(system.openmm_system)
    x0 = system.minimize().value_in_unit(unit.nanometer)
    kw = dict(system_xml=xml, platform_name="Reference", friction_per_ps=1.0, timestep_fs=2.0, steps_per_exchange=7)
    both = ReplicaGroup(temperatures_k=[300.0, 400.0], **kw)
    alone = ReplicaGroup(temperatures_k=[400.0], **kw)
    other = ReplicaGroup(temperatures_k=[300.0], **kw)
    zeros = np.zeros((1, *x0.shape))
    both.start(np.stack([x0, x0]), np.zeros((2, *x0.shape)))
    alone.start(x0[None], zeros)
    other.start(x0[None], zeros)
    for seeds in ([11, 12], [13, 14]):
        xb, vb, eb = both.step(seeds, {})
        other.step([99], {})  # draws from the process-wide generator in between
        xa, va, ea = alone.step([seeds[1]], {})
        np.testing.assert_array_equal(xb[1], xa[0])
        np.testing.assert_array_equal(vb[1], va[0])
        assert eb[1] == ea[0]
    # Velocities from a seed do not depend on the group either.
    _, v_both = both.initialize_velocities([5, 6])
    _, v_alone = alone.initialize_velocities([6])
    np.testing.assert_array_equal(v_both[1], v_alone[0])


def test_a_killed_worker_is_one_line_error_no_hang_no_leftover(tmp_path, system, deadline):
    def kill_a_worker(info):
        (child,) = multiprocessing.active_children()
        os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(ReplicaWorkerError) as err:
        sample_boltzmann(system, 12, tmp_path / "run", seed=1, workers=2, callback=kill_a_worker, **FAST)
    message = str(err.value)
    assert "\n" not in message
    assert "replica-exchange worker 1" in message and "killed by signal 9" in message and "--resume" in message
    assert isinstance(err.value, SpacetimeMDError)  # the CLI prints it as one line
    # The checkpoint written before the kill resumes to the uninterrupted run.
    resumed = sample_boltzmann(system, 12, tmp_path / "run", seed=1, workers=1, resume=True, **FAST)
    _same(resumed, sample_boltzmann(system, 12, None, seed=1, workers=1, **FAST))


def test_a_failing_worker_reports_its_error(system, deadline):
    xml = openmm.XmlSerializer.serialize(system.openmm_system)
    worker = WorkerGroup(1, [2], dict(system_xml=xml, platform_name="NoSuchPlatform", temperatures_k=[500.0],
                                      friction_per_ps=1.0, timestep_fs=2.0, steps_per_exchange=10))
    try:
        with pytest.raises(ReplicaWorkerError, match=r"worker 1 \(pid \d+, temperature slots 2\) failed: .*NoSuchPlatform"):
            worker.result()
    finally:
        worker.close()


def test_workers_option_errors(tmp_path, system, capsys):
    assert resolve_workers(8, 3) == 3
    assert 1 <= resolve_workers("auto", 64) <= os.cpu_count()
    for bad in (0, -1, 1.5, True, "many"):
        with pytest.raises(ValueError, match="workers: expected a positive integer or 'auto'"):
            resolve_workers(bad, 4)
    with pytest.raises(ValueError, match="workers: expected a positive integer or 'auto', got 0"):
        sample_boltzmann(system, 4, None, workers=0, **FAST)
    base = ["sample", "--n-samples", "4", "--out", str(tmp_path / "cli"), "--n-replicas", "2", "--no-progress",
            "--no-plot", "--exchange-interval", "0.02", "--equilibration", "0.1"]
    assert main([*base, "--workers", "0"]) != 0
    assert "--workers: expected 'auto' or an integer in [1, 256], got '0'" in capsys.readouterr().err
    assert main([*base, "--workers", "2"]) == 0
    assert "2 processes" in capsys.readouterr().out


def test_keyboard_interrupt_stops_the_workers(tmp_path, system, deadline):
    def interrupt(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_boltzmann(system, 12, tmp_path / "run", seed=1, workers=2, callback=interrupt, **FAST)
    # no_leftover_processes checks that no worker is left
