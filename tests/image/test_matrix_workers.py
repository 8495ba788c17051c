"""``distance_matrix(workers=2)``: the same batches in two spawned processes, bitwise equal to one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spacetime_md.image import IMAGE_PRESETS, distance_matrix, from_edm_image, load_digits_images, load_digits_model

SMALL = dataclasses.replace(IMAGE_PRESETS["matrix"], max_steps=6)


@pytest.fixture(scope="module")
def digits():
    model = load_digits_model()
    pixels, _ = load_digits_images("test")
    return model, model.denoiser(), model.to_model(pixels[:5])


def test_two_workers_equal_one_bitwise(digits):
    _, den, images = digits
    kwargs = dict(config=SMALL, batch_pairs=3, length_points=9)  # 10 pairs in 4 batches
    one = distance_matrix(den, images, **kwargs)
    seen = []
    two = distance_matrix(den, images, workers=2, callback=seen.append, **kwargs)
    assert two.extra["workers"] == 2 and one.extra["workers"] == 1
    assert np.array_equal(one.distances, two.distances)
    assert np.array_equal(one.energies, two.energies)
    assert np.array_equal(one.standard_errors, two.standard_errors)
    assert sorted((r["i"], r["j"]) for r in seen) == [(i, j) for i in range(5) for j in range(i + 1, 5)]


def test_workers_are_checked_and_capped(digits):
    model, den, images = digits
    with pytest.raises(ValueError, match="workers"):
        distance_matrix(den, images[:2], config=SMALL, workers=0)
    one_batch = distance_matrix(den, images[:2], config=SMALL, length_points=5, workers=4)
    assert one_batch.extra["workers"] == 1  # capped by the number of batches
    unpicklable = from_edm_image(lambda x, s: model(x, s), model.event_shape, data_range=(-1.0, 1.0))
    with pytest.raises(TypeError, match="picklable"):
        distance_matrix(unpicklable, images[:3], config=SMALL, length_points=5, batch_pairs=1, workers=2)


def test_cli_workers_option(tmp_path, capsys):
    import json
    import shutil
    from pathlib import Path

    from spacetime_md.cli import main
    from spacetime_md.image import DIGITS_CHECKPOINT

    samples = Path(DIGITS_CHECKPOINT).parent.parent / "images" / "digits"
    for name in ("digit0_test000.png", "digit0_test021.png", "digit7_test026.png"):
        shutil.copy(samples / name, tmp_path / name)
    runs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"m{workers}.csv"
        args = ["image", "matrix", str(tmp_path), "--out", str(out), "--max-steps", "1", "--batch-pairs", "2"]
        assert main([*args, "--workers", workers]) == 0
        runs[workers] = json.loads(out.with_suffix(".json").read_text())
    assert runs["1"]["distances"] == runs["2"]["distances"]
    assert runs["1"]["settings"]["workers_used"] == 1 and runs["2"]["settings"]["workers_used"] == 2
    capsys.readouterr()
    assert main(["image", "matrix", str(tmp_path), "--out", str(tmp_path / "x.csv"), "--workers", "two"]) == 2
    err = capsys.readouterr().err
    assert "--workers: expected 'auto' or an integer in [1, 256], got 'two'" in err and len(err.strip().splitlines()) == 1
