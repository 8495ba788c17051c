"""Catalogue of bad inputs to `sample`, `evaluate`, `committor`, `batch`, `image`, `toy` and
`benchmark` (issue 20): one case per line.

Each case must end in exit code 2 with exactly one line on stderr, no traceback, before any
expensive work, and with nothing written: the case's ``--out`` is not created and the shared
inputs (a paths run, pairs files, checkpoints, data) are unchanged. `paths` has its own
catalogue in ``tests/molecular/test_bad_inputs.py``.

Placeholders in the argv: ``{out}`` a fresh path per case; ``{file}`` a plain file; ``{dir}``
an existing directory; ``{paths}`` a directory laid out like `spacetime-md paths` output (one
12-frame path C7eq -> C7ax), ``{trunc}`` the same with half of ``paths_geodesic.npz`` cut off,
``{nonpz}`` without it; ``{pairs}``/``{badpairs}`` pairs files; ``{ckpt}`` a tiny alanine
checkpoint recording its system; ``{data}`` synthetic MD samples (HDF5); ``{a}``/``{b}`` two
shipped digit images, ``{digits}`` their folder, ``{float_img}`` a float image in 0..200.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from spacetime_md import cli
from spacetime_md.image import DIGITS_CHECKPOINT

from .molecular._model_helpers import alanine_trajectory, tiny_model, write_synthetic_h5

DIGITS = Path(DIGITS_CHECKPOINT).parent.parent / "images" / "digits"
EV = ["evaluate", "--checkpoint", "{ckpt}", "--data", "{data}"]
GEO = ["image", "geodesic", "{a}", "{b}"]
DIST = ["image", "distance", "{a}", "{b}"]
BATCH = ["batch", "{pairs}", "--checkpoint", "{ckpt}"]
HUGE = str(10**12)

CASES = [
    # (id, argv, expected message fragment)
    # --- guide: options and the output file checked before the models are loaded
    ("guide out is a dir", ["guide", "--model", "{ckpt}", "--guide", "{ckpt}", "--out", "{dir}"], "--out: expected a file name, got"),
    ("guide out exists", ["guide", "--model", "{ckpt}", "--guide", "{ckpt}", "--out", "{file}"], "exists; pass --overwrite to replace it"),
    ("guide weight negative", ["guide", "--model", "{ckpt}", "--guide", "{ckpt}", "--out", "{out}/g.pt", "--weight", "-1"], "--weight: expected"),
    ("guide edge width nan", ["guide", "--model", "{ckpt}", "--guide", "{ckpt}", "--out", "{out}/g.pt", "--edge-width", "nan"], "--edge-width: expected"),
    ("guide empty window", ["guide", "--model", "{ckpt}", "--guide", "{ckpt}", "--out", "{out}/g.pt", "--log-snr-min", "3", "--log-snr-max", "1"],
     "--log-snr-max: expected a number > --log-snr-min (3), got 1"),
    ("guide missing model", ["guide", "--model", "{dir}/nope.pt", "--guide", "{ckpt}", "--out", "{out}/g.pt"],
     "no such file"),
    # --- image: output files checked before the model is loaded
    ("geodesic out is a dir", [*GEO, "--out", "{dir}"], "--out: expected a file name, got"),
    ("geodesic out under file", [*GEO, "--out", "{file}/x.png"], "which lies under the file"),
    ("geodesic out .json", [*GEO, "--out", "{out}/x.json"], "--out: expected a file name not ending in .json"),
    ("geodesic frames 1", [*GEO, "--out", "{out}/x.png", "--frames", "1"], "--frames: expected an integer in [2, 100], got 1"),
    ("geodesic frames 1000", [*GEO, "--out", "{out}/x.png", "--frames", "1000"], "--frames: expected an integer in [2, 100], got 1000"),
    ("matrix out is a dir", ["image", "matrix", "{digits}", "--out", "{dir}"], "--out: expected a file name, got"),
    ("matrix out under file", ["image", "matrix", "{digits}", "--out", "{file}/m.csv"], "which lies under the file"),
    ("distance json is a dir", [*DIST, "--json", "{dir}"], "--json: expected a file name, got"),
    ("distance json under file", [*DIST, "--json", "{file}/d.json"], "--json: expected a file in a directory"),
    ("t-min nan", [*DIST, "--t-min", "nan"], "--t-min: expected a number in (0, 80], got nan"),
    ("t-min 0", [*DIST, "--t-min", "0"], "--t-min: expected a number in (0, 80], got 0.0"),
    ("t-min inf", [*DIST, "--t-min", "inf"], "--t-min: expected a number in (0, 80], got inf"),
    ("chunk-points 1", [*DIST, "--chunk-points", "1"], "--chunk-points: expected an integer >= 2, got 1"),
    ("max-steps 0", [*DIST, "--max-steps", "0"], "--max-steps: expected an integer >= 1, got 0"),
    ("image seed -1", [*DIST, "--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got -1"),
    ("image threads 1000", [*DIST, "--threads", "1000"], "--threads: expected an integer in [0, 256], got 1000"),
    ("float image 0..200", ["image", "distance", "{a}", "{float_img}"], "expected pixel values in [0, 1]"),
    ("image train out is a file", ["image", "train", "--out", "{file}"], "--out: expected a directory, got"),
    ("image train out under file", ["image", "train", "--out", "{file}/run", "--dry-run"], "which lies under the file"),
    ("image train lr nan", ["image", "train", "--out", "{out}", "--lr", "nan"], "--lr: expected a number in (0, 1], got nan"),
    ("image train batch 0", ["image", "train", "--out", "{out}", "--batch-size", "0"], "--batch-size: expected an integer in [1, 4096], got 0"),
    ("image train steps 0", ["image", "train", "--out", "{out}", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    ("image train channels", ["image", "train", "--out", "{out}", "--base-channels", "100000"], "--base-channels: expected an integer in [1, 256]"),
    # --- evaluate: outputs and ranges before the model is loaded, memory before sampling
    ("save-samples is a dir", [*EV, "--save-samples", "{dir}"], "--save-samples: expected a file name, got"),
    ("save-samples under file", [*EV, "--save-samples", "{file}/s.h5"], "--save-samples: expected a file in a directory"),
    ("evaluate json under file", [*EV, "--json", "{file}/m.json"], "--json: expected a file in a directory"),
    ("evaluate json is a dir", [*EV, "--json", "{dir}"], "--json: expected a file name, got"),
    ("evaluate huge n-samples", [*EV, "--n-samples", HUGE], f"--n-samples: {HUGE} samples of 22 atoms would need about"),
    ("evaluate huge batch", [*EV, "--n-samples", str(10**9), "--batch-size", str(10**9)], "--batch-size: batches of 1000000000 structures of 22 atoms would need about"),
    ("evaluate n-samples 0", [*EV, "--n-samples", "0"], "--n-samples: expected an integer >= 1, got 0"),
    ("evaluate n-steps 0", [*EV, "--n-steps", "0"], "--n-steps: expected an integer >= 1, got 0"),
    ("holdout 1", [*EV, "--holdout-fraction", "1"], "--holdout-fraction: expected a number in (0, 1), got 1.0"),
    ("log-snr-start nan", [*EV, "--log-snr-start", "nan"], "--log-snr-start: expected a number in [-20, 20], got nan"),
    ("log-snr-start 100", [*EV, "--log-snr-start", "100"], "--log-snr-start: expected a number in [-20, 20], got 100.0"),
    ("log-snr-end below start", [*EV, "--log-snr-end", "-9"], "--log-snr-end: expected a number > --log-snr-start (-8), got -9"),
    ("guidance weight inf", [*EV, "--guidance-weight", "inf"], "--guidance-weight: expected a finite number >= 0, got inf"),
    ("guidance min nan", [*EV, "--guidance-log-snr-min", "nan"], "--guidance-log-snr-min: expected a number in [-20, 20], got nan"),
    ("evaluate threads 0", [*EV, "--num-threads", "0"], "--num-threads: expected an integer in [1, 256], got 0"),
    ("evaluate corrector without pc", [*EV, "--corrector-steps", "2"], "method: expected --method pc with --corrector-steps, got --method ancestral"),
    ("evaluate corrector scale 2", [*EV, "--method", "pc", "--corrector-scale", "2"], "--corrector-scale: expected a number in (0, 1], got 2"),
    ("evaluate seed 2^40", [*EV, "--seed", str(2**40)], "--seed: expected an integer in [0, 4294967295]"),
    # --- sample: ranges, memory and --out before the system is minimised
    ("sample huge", ["sample", "--n-samples", HUGE, "--out", "{out}"], f"--n-samples: {HUGE} samples of 22 atoms would need about"),
    ("sample huge dry-run", ["sample", "--n-samples", HUGE, "--out", "{out}", "--dry-run"], "of memory, more than 50% of this machine's"),
    ("sample n-samples 0", ["sample", "--n-samples", "0", "--out", "{out}"], "--n-samples: expected an integer >= 1, got 0"),
    ("temperature nan", ["sample", "--n-samples", "4", "--out", "{out}", "--temperature", "nan"], "--temperature: expected a number in (0, 5000], got nan"),
    ("temperature -5", ["sample", "--n-samples", "4", "--out", "{out}", "--temperature", "-5"], "--temperature: expected a number in (0, 5000], got -5.0"),
    ("n-replicas 0", ["sample", "--n-samples", "4", "--out", "{out}", "--n-replicas", "0"], "--n-replicas: expected an integer in [1, 256], got 0"),
    ("max-temperature inf", ["sample", "--n-samples", "4", "--out", "{out}", "--max-temperature", "inf"], "--max-temperature: expected a number in (0, 5000], got inf"),
    ("max below temperature", ["sample", "--n-samples", "4", "--out", "{out}", "--temperature", "900"], "--max-temperature: expected a number > --temperature (900 K) with 4 replicas, got 800"),
    ("exchange-interval 0", ["sample", "--n-samples", "4", "--out", "{out}", "--exchange-interval", "0"], "--exchange-interval: expected a finite number > 0, got 0.0"),
    ("equilibration -1", ["sample", "--n-samples", "4", "--out", "{out}", "--equilibration", "-1"], "--equilibration: expected a finite number >= 0, got -1.0"),
    ("chunk-size 0", ["sample", "--n-samples", "4", "--out", "{out}", "--chunk-size", "0"], "--chunk-size: expected an integer >= 1, got 0"),
    ("max-chunks -1", ["sample", "--n-samples", "4", "--out", "{out}", "--max-chunks", "-1"], "--max-chunks: expected an integer >= 0, got -1"),
    ("sample seed -1", ["sample", "--n-samples", "4", "--out", "{out}", "--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got -1"),
    ("sample out is a file", ["sample", "--n-samples", "4", "--out", "{file}"], "--out: expected a directory, got"),
    ("sample out under file", ["sample", "--n-samples", "4", "--out", "{file}/s", "--dry-run"], "which lies under the file"),
    # --- committor: the paths run's files, states, frames and --out before the first shot
    ("truncated npz", ["committor", "{trunc}", "--out", "{out}"], "paths: expected paths_geodesic.npz as written by `spacetime-md paths`"),
    ("truncated npz dry-run", ["committor", "{trunc}", "--out", "{out}", "--dry-run"], "got a truncated or damaged file (BadZipFile"),
    ("missing npz", ["committor", "{nonpz}", "--out", "{out}"], "paths: expected paths_geodesic.npz in"),
    ("missing npz dry-run", ["committor", "{nonpz}", "--out", "{out}", "--dry-run"], "paths: expected paths_geodesic.npz in"),
    ("unknown start state", ["committor", "{paths}", "--out", "{out}", "--start-state", "banana"], "state: expected one of ['C7eq', 'C7ax', 'alpha_R'], got 'banana'"),
    ("unknown state dry-run", ["committor", "{paths}", "--out", "{out}", "--start-state", "banana", "--dry-run"], "state: expected one of"),
    ("path index 3", ["committor", "{paths}", "--out", "{out}", "--path", "3", "--dry-run"], "path: expected an index in [0, 1), got 3"),
    ("frames beyond path", ["committor", "{paths}", "--out", "{out}", "--frames", "50"], "n_frames: expected at most the path's 12 frames, got 50"),
    ("timestep 50 fs", ["committor", "{paths}", "--out", "{out}", "--timestep-fs", "50"], "--timestep-fs: expected a number in (0, 5], got 50.0"),
    ("timestep nan", ["committor", "{paths}", "--out", "{out}", "--timestep-fs", "nan"], "timestep_fs: expected a finite number > 0, got nan"),
    ("max-length inf", ["committor", "{paths}", "--out", "{out}", "--max-length-ps", "inf"], "max_length_ps: expected a finite number > 0, got inf"),
    ("committor workers 1000", ["committor", "{paths}", "--out", "{out}", "--workers", "1000"], "--workers: expected an integer in [1, 256], got 1000"),
    ("committor seed 2^40", ["committor", "{paths}", "--out", "{out}", "--seed", str(2**40)], "--seed: expected an integer in [0, 4294967295]"),
    ("committor shots 0", ["committor", "{paths}", "--out", "{out}", "--shots", "0"], "n_shots: expected an integer >= 1, got 0"),
    ("committor out is a file", ["committor", "{paths}", "--out", "{file}"], "--out: expected a directory, got"),
    ("committor out under file", ["committor", "{paths}", "--out", "{file}/c", "--dry-run"], "which lies under the file"),
    ("committor missing states", ["committor", "{paths}", "--out", "{out}", "--states", "{out}/none.json"], "--states: expected an existing file"),
    # --- batch: ranges, pairs, memory and --out before Dask starts
    ("batch out is a file", [*BATCH, "--out", "{file}", "--dry-run"], "--out: expected a directory, got"),
    ("batch non-ASCII out", [*BATCH, "--out", "{out}/résumé"], "--out: expected an ASCII path (the DCD trajectory writer cannot encode 'é')"),
    ("batch non-ASCII dry-run", [*BATCH, "--out", "{out}/résumé", "--dry-run"], "--out: expected an ASCII path"),
    ("batch unknown state", ["batch", "{badpairs}", "--checkpoint", "{ckpt}", "--out", "{out}", "--dry-run"], "bad.csv row 1: state: expected one of"),
    ("batch huge n-paths", [*BATCH, "--out", "{out}", "--n-paths", "100000000"], "pairs.csv row 1: n_paths: 100000000 paths of 960 frames would need about"),
    ("batch huge dry-run", [*BATCH, "--out", "{out}", "--n-paths", "100000000", "--dry-run"], "would need about"),
    ("batch endpoint nan", [*BATCH, "--out", "{out}", "--endpoint-log-snr", "nan"], "endpoint_log_snr: expected a finite number"),
    ("batch min-kl -1", [*BATCH, "--out", "{out}", "--constraint", "avoid", "--avoid-state", "alpha_R", "--min-kl", "-1"], "min_kl: expected a finite number > 0, got -1.0"),
    ("batch workers 1000", [*BATCH, "--out", "{out}", "--workers", "1000"], "--workers: expected an integer in [0, 256], got 1000"),
    ("batch threads 0", [*BATCH, "--out", "{out}", "--threads-per-task", "0", "--dry-run"], "--threads-per-task: expected an integer in [1, 256], got 0"),
    ("batch group 0", [*BATCH, "--out", "{out}", "--group-size", "0"], "--group-size: expected an integer >= 1, got 0"),
    ("batch retries -1", [*BATCH, "--out", "{out}", "--retries", "-1"], "--retries: expected an integer >= 0, got -1"),
    ("batch seed -1", [*BATCH, "--out", "{out}", "--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got -1"),
    # --- toy and benchmark
    ("toy out is a file", ["toy", "--out", "{file}"], "--out: expected a directory, got"),
    ("toy out under file", ["toy", "--out", "{file}/t"], "which lies under the file"),
    ("toy trajectories 0", ["toy", "--out", "{out}", "--n-trajectories", "0"], "--n-trajectories: expected an integer in [1, 1000], got 0"),
    ("toy seed -1", ["toy", "--out", "{out}", "--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got -1"),
    ("table1 out is a file", ["benchmark", "table1", "--out", "{file}", "--quick"], "--out: expected a directory, got"),
]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The shared inputs of the cases (read only)."""
    from PIL import Image

    from spacetime_md.molecular import load_system
    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
    from spacetime_md.molecular.paths.transition import TransitionPaths
    from spacetime_md.molecular.model.pretrained import save_checkpoint
    from spacetime_md.molecular.system.build import system_data_path

    root = tmp_path_factory.mktemp("catalogue")
    (root / "file").write_text("not a directory\n")
    (root / "dir").mkdir()
    system = load_system("alanine-dipeptide")
    import mdtraj

    start, end = (mdtraj.load(str(system_data_path(f"alanine_dipeptide/{n}.pdb"))).xyz[0].astype(np.float64)
                  for n in ("C7eq", "C7ax"))
    frames = np.stack([start + (end - start) * t for t in np.linspace(0.0, 1.0, 12)])[None]
    run = TransitionPaths(frames, np.full((1, 12), 4.0), np.zeros((1, 12)), "geodesic", {}, None)
    for name in ("paths", "trunc", "nonpz"):
        run.save(root / name, system)
        (root / name / "config.json").write_text(json.dumps({"command": "paths", "system": "alanine-dipeptide",
                                                             "solvent": "vacuum"}))
    npz = root / "trunc" / "paths_geodesic.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    (root / "nonpz" / "paths_geodesic.npz").unlink()
    (root / "pairs.csv").write_text("id,start,end\nfirst,C7eq,C7ax\n")
    (root / "bad.csv").write_text("id,start,end\nfirst,C7eq,banana\n")
    torch.manual_seed(0)
    model = EquivariantDenoiser(["X"] * system.n_atoms, system.bonds.tolist(), atom_names=list(system.atom_names),
                                hidden_channels=8, n_layers=1, n_rbf=4)
    ckpt = save_checkpoint(root / "tiny.pt", model, {"system": system.spec()})
    names = [a.name for a in alanine_trajectory().topology.atoms]
    evaluate_ckpt = save_checkpoint(root / "evaluate.pt", tiny_model(atom_names=names))
    data = write_synthetic_h5(root / "samples.h5", n_frames=20, noise_nm=0.005)
    Image.fromarray(np.full((8, 8), 200.0, np.float32), mode="F").save(root / "float.tiff")
    values = {"file": root / "file", "dir": root / "dir", "paths": root / "paths", "trunc": root / "trunc",
              "nonpz": root / "nonpz", "pairs": root / "pairs.csv", "badpairs": root / "bad.csv", "data": data,
              "a": DIGITS / "digit0_test000.png", "b": DIGITS / "digit1_test015.png", "digits": DIGITS,
              "float_img": root / "float.tiff"}
    return root, {k: str(v) for k, v in values.items()}, {"batch": str(ckpt), "evaluate": str(evaluate_ckpt)}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, inputs, tmp_path, capsys):
    _, argv, message = case
    root, values, checkpoints = inputs
    out = tmp_path / "out"
    ckpt = checkpoints["evaluate" if argv[0] == "evaluate" else "batch"]
    argv = [a.format(out=out, ckpt=ckpt, **values) for a in argv]
    before = _snapshot(root)
    code = cli.main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err, captured.out[-500:])
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("spacetime-md: error: ") and message in err, err
    assert not out.exists()
    assert _snapshot(root) == before


def test_catalogue_covers_every_command_but_paths_and_train():
    commands = {argv[0] if argv[0] not in ("image", "benchmark") else f"{argv[0]} {argv[1]}" for _, argv, _ in CASES}
    assert commands == {"image geodesic", "image matrix", "image distance", "image train", "evaluate", "sample",
                        "committor", "batch", "toy", "benchmark table1", "guide"}
    assert len({c[0] for c in CASES}) == len(CASES)


def test_every_ranged_option_shows_its_range_in_help():
    """The ranges the commands check are the ones --help shows."""
    from spacetime_md.commands import batch, committor, evaluate, image, sample, toy

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    image_sub = next(a for a in sub["image"]._actions if a.dest == "image_command").choices
    for command, ranges in [(sub["sample"], sample.RANGES), (sub["evaluate"], evaluate.RANGES),
                            (sub["committor"], committor.RANGES), (sub["batch"], batch.RANGES),
                            (sub["toy"], toy.RANGES), (image_sub["distance"], image.GEODESIC_RANGES),
                            (image_sub["train"], image.TRAIN_RANGES)]:
        actions = {a.dest: a for a in command._actions}
        for dest, option in ranges.items():
            assert option.bounds() in actions[dest].help, (command.prog, dest, actions[dest].help)
            default = actions[dest].default
            assert default is None or option.contains(default), (command.prog, dest, default)



def test_add_numeric_declares_each_flag_once_from_its_table():
    """One table entry gives the flag, its type, default, required and the help with the range."""
    import argparse

    from spacetime_md.commands._checks import add_numeric, float_range, int_range

    ranges = {"n_frames": int_range(1, default=10, help="frames (default 10)"),
              "dt": float_range(0, 5, low_open=True, required=True, help="step", note="; in fs"),
              "bare": int_range(0)}
    p = argparse.ArgumentParser()
    add_numeric(p, ranges, "n_frames", "dt")
    actions = {a.dest: a for a in p._actions}
    assert actions["n_frames"].option_strings == ["--n-frames"] and actions["n_frames"].default == 10
    assert actions["n_frames"].help == "frames, >= 1 (default 10)" and actions["n_frames"].type is int
    assert actions["dt"].required and actions["dt"].type is float and actions["dt"].help == "step, in (0, 5]; in fs"
    with pytest.raises(ValueError, match="bare: expected an option with a help text, got none"):
        add_numeric(p, ranges, "bare")


def test_command_help_texts_come_from_the_module_docstring():
    from spacetime_md.commands import command_texts, toy

    help_text, description = command_texts(toy.__doc__)
    assert help_text == "1-D mixture demo: PF-ODE trajectories vs spacetime geodesics (exact denoiser)"
    assert description.startswith("Compare probability-flow trajectories") and "\n" not in description
    assert command_texts("``spacetime-md x``: one line.") == ("one line", "one line")
    with pytest.raises(ValueError, match="expected a docstring starting with '``spacetime-md NAME``: HELP.', got"):
        command_texts("A command without its name.")


# --------------------------------------------------------------------------- Dask teardown


def test_dask_teardown_is_quiet_and_restores_the_loggers(capfd):
    """A client or cluster whose close logs a CommClosedError traceback and raises: nothing on
    stderr, and afterwards the distributed loggers report errors again."""
    pytest.importorskip("distributed")
    from distributed.comm.core import CommClosedError

    from spacetime_md.molecular.workflows.batch_dask import close_dask

    closed = []

    class Noisy:
        def __init__(self, name):
            self.name = name

        def close(self, timeout=None):
            closed.append((self.name, timeout))
            try:
                raise CommClosedError("in <TCP (closed) ConnectionPool.heartbeat_worker>: Stream is closed")
            except CommClosedError:
                logging.getLogger("distributed.core").error("Exception while handling op heartbeat", exc_info=True)
                logging.getLogger("distributed.nanny").warning("Worker process still alive after 4 s, killing")
            raise CommClosedError("Stream is closed")

    handler = logging.StreamHandler()  # to stderr, like distributed's own handler
    core = logging.getLogger("distributed.core")
    core.addHandler(handler)
    try:
        close_dask(Noisy("client"), Noisy("cluster"), timeout=3)
        err = capfd.readouterr().err
        assert closed == [("client", 3), ("cluster", 3)]  # the client first
        assert "Traceback" not in err and "CommClosedError" not in err and "killing" not in err, err
        core.error("a real error after the teardown")
        assert "a real error after the teardown" in capfd.readouterr().err
    finally:
        core.removeHandler(handler)


def test_batch_rerun_shuts_down_quietly(inputs, tmp_path, capfd):
    """Two real runs on a one-worker local cluster (the second one computes the pair added to
    the pairs file): no traceback on stderr at shutdown (about 15 s)."""
    pytest.importorskip("distributed")
    root, values, checkpoints = inputs
    from spacetime_md.core import GeodesicConfig
    from spacetime_md.molecular.paths.config import PathConfig

    tiny = PathConfig(n_paths=1, n_points=4, n_steps=10, baseline=False,
                      geodesic=GeodesicConfig(n_nodes=3, n_points=(8,), divergence="hutchinson", n_probes=1,
                                              max_steps=2))
    (tmp_path / "tiny.json").write_text(json.dumps(tiny.to_dict()))
    args = ["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out"), "--checkpoint",
            checkpoints["batch"], "--path-config", str(tmp_path / "tiny.json"), "--workers", "1", "--no-plots",
            "--no-progress", "--no-dashboard"]
    for pairs in ("id,start,end\nfirst,C7eq,C7ax\n", "id,start,end\nfirst,C7eq,C7ax\nsecond,C7ax,alpha_R\n"):
        (tmp_path / "pairs.csv").write_text(pairs)
        assert cli.main(args) == 0
        err = capfd.readouterr().err
        assert "Traceback" not in err and "CommClosedError" not in err, err
        assert "1 to run" in err and len(err.strip().splitlines()) == 1, err
