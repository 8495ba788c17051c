"""``spacetime-md image ...`` in-process with the shipped digits model (few optimiser steps)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spacetime_md.cli import main
from spacetime_md.image import DIGITS_CHECKPOINT, IMAGE_PRESETS

SAMPLES = Path(DIGITS_CHECKPOINT).parent.parent / "images" / "digits"
QUICK = ["--max-steps", "2"]


@pytest.fixture
def pair():
    return str(SAMPLES / "digit0_test000.png"), str(SAMPLES / "digit1_test015.png")


def test_distance_command(pair, tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["image", "distance", *pair, *QUICK, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "diffusion edit distance:" in text
    result = json.loads(out.read_text())
    assert result["distance"] > 0 and result["settings"]["preset"] == "fast"
    assert result["energy"] < result["straight_line_energy"]
    assert result["settings"]["geodesic_config"]["max_steps"] == 2


def test_distance_command_is_symmetric(pair, tmp_path, capsys):
    """Swapping the files gives the bitwise same distance (canonical order of the pair)."""
    out_ab, out_ba = tmp_path / "ab.json", tmp_path / "ba.json"
    assert main(["image", "distance", *pair, *QUICK, "--json", str(out_ab), "--length-points", "8"]) == 0
    assert main(["image", "distance", *pair[::-1], *QUICK, "--json", str(out_ba), "--length-points", "8"]) == 0
    text = capsys.readouterr().out.splitlines()
    lines = [line for line in text if line.startswith("diffusion edit distance:")]
    assert len(lines) == 2 and lines[0] == lines[1] and "exact divergence, 8 curve points" in lines[0]
    ab, ba = json.loads(out_ab.read_text()), json.loads(out_ba.read_text())
    assert ab["distance"] == ba["distance"] and ab["distance_se"] == 0.0 and ab["reversed"] != ba["reversed"]
    assert ab["length_points"] == 8 and ab["settings"]["length_points"] == 8


def test_geodesic_command_writes_strip_and_json(pair, tmp_path, capsys):
    out = tmp_path / "strip.png"
    assert main(["image", "geodesic", *pair, "--out", str(out), "--frames", "5", *QUICK, "--chunk-points", "8"]) == 0
    with Image.open(out) as im:
        assert im.size[0] > 3 * im.size[1]
    info = json.loads(out.with_suffix(".json").read_text())
    assert len(info["strip_log_snr"]) == 5 and info["chunk_points"] == 8
    assert "wrote" in capsys.readouterr().out


def test_matrix_command(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("digit0_test000.png", "digit0_test021.png", "digit7_test026.png"):
        shutil.copy(SAMPLES / name, folder / name)
    out = tmp_path / "m.csv"
    assert main(["image", "matrix", str(folder), "--out", str(out), "--max-steps", "1", "--batch-pairs", "2"]) == 0
    assert "pairs per minute" in capsys.readouterr().out
    rows = list(csv.reader(open(out)))
    assert rows[0][1:] == ["digit0_test000.png", "digit0_test021.png", "digit7_test026.png"]
    d = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0) and np.all(d[np.triu_indices(3, 1)] > 0)
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["n_pairs"] == 3 and info["batch_pairs"] == 2 and info["settings"]["batch_pairs"] == 2
    # Many pairs: the matrix command defaults to the cheap preset (fast costs ~30 CPU s per pair).
    assert info["settings"]["preset"] == "matrix"


def test_dry_run_prints_settings(pair, capsys):
    assert main(["image", "distance", *pair, "--dry-run", "--preset", "accurate", "--t-min", "0.2"]) == 0
    settings = json.loads(capsys.readouterr().out)
    assert settings["t_min"] == 0.2 and settings["geodesic_config"]["n_points"] == list(IMAGE_PRESETS["accurate"].n_points)
    assert main(["image", "train", "--out", "unused", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["train_config"]["base_channels"] == 16


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "x.png"),
         "x.png: expected an image of 8x8 pixels (height x width) for this model, got 16x16"),
        (lambda d: Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "x.png"),
         "x.png: expected 1 channel (grey-scale) for this model, got 3 (RGB)"),
        (lambda d: (d / "x.png").write_text("hello"),
         "x.png: expected an image file (PNG), got a file that is not a readable image"),
        (lambda d: None, "x.png: expected an existing image file, got no such file"),
    ],
    ids=["wrong-size", "wrong-channels", "not-an-image", "missing"],
)
def test_bad_image_gives_one_line_error(pair, tmp_path, capsys, make, message):
    make(tmp_path)
    assert main(["image", "distance", pair[0], str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spacetime-md: error: ")
    assert message in err


def test_rgb_converted_on_request(pair, tmp_path, capsys):
    grey = np.asarray(Image.open(pair[1]))
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    assert main(["image", "distance", pair[1], str(tmp_path / "rgb.png"), "--convert", *QUICK]) == 0
    assert "diffusion edit distance: 0" in capsys.readouterr().out  # same pixels once converted


def test_other_cli_errors(pair, tmp_path, capsys):
    assert main(["image", "geodesic", *pair, "--out", str(tmp_path / "s.png"), "--frames", "1"]) == 2
    assert "--frames: expected an integer in [2, 100], got 1" in capsys.readouterr().err
    assert main(["image", "distance", *pair, "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint: expected an existing file" in capsys.readouterr().err
    assert main(["image", "matrix", str(tmp_path), "--out", str(tmp_path / "m.csv")]) == 2
    assert "expected at least 2 images matching '*.png', got 0" in capsys.readouterr().err
    assert main(["image", "matrix", str(tmp_path), "--out", str(tmp_path / "m.csv"), "--batch-pairs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--batch-pairs: expected an integer in [1, 100000], got 0" in err and len(err.strip().splitlines()) == 1
    assert main(["image", "distance", *pair, "--length-points", "1"]) == 2
    assert "--length-points: expected an integer in [2, 4096], got 1" in capsys.readouterr().err


def test_image_package_imports_no_molecular_stack():
    import subprocess
    import sys

    code = ("import sys, spacetime_md.image, spacetime_md.commands.image; "
            "bad = [m for m in ('openmm', 'mdtraj', 'torch_geometric', 'sklearn', 'diffusers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_distance_text_warns_about_negative_segments():
    import torch

    from spacetime_md.commands.image import _distance_text
    from spacetime_md.image import ImageGeodesic

    line = torch.zeros(2)
    geo = ImageGeodesic(None, 0.1, 4.6, 12.345, 1.0, 2.0, line, line[:, None], None, 0.0, length_points=32)
    assert _distance_text(geo) == "12.35 (exact divergence, 32 curve points)"
    geo.n_negative_segments = 3
    assert "warning: 3 of 31 segments have negative terms" in _distance_text(geo)
    geo.length_method, geo.distance_se = "hutchinson", 0.25
    assert _distance_text(geo).startswith("12.35 +- 0.25 (standard error of the Hutchinson length")


def test_negative_segment_warning_says_how_they_were_counted():
    from types import SimpleNamespace

    from spacetime_md.commands.image import _distance_text

    def geo(clamp):
        return SimpleNamespace(length_method="exact", distance=12.0, length_points=32, n_negative_segments=3,
                               result=SimpleNamespace(config=SimpleNamespace(clamp=clamp)))

    assert "counted by their magnitude" in _distance_text(geo("abs"))
    assert "counted as length 0: the distance is underestimated" in _distance_text(geo("segment"))
