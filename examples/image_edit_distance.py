"""Diffusion Edit Distance between handwritten digits with the shipped 8x8 model.

Loads three of the held-out digits shipped with the package, computes their pairwise
Diffusion Edit Distances (geodesic lengths in the spacetime of the diffusion model, anchored at
noise level t_min = 0.1), and writes the geodesic between the first two as a strip of denoising
means with the noise level of every frame.

    python examples/image_edit_distance.py [--out DIR] [--preset fast|accurate]

Takes about a minute or two on one CPU thread with the ``fast`` preset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from spacetime_md.image import (
    DIGITS_CHECKPOINT,
    distance_matrix,
    image_geodesic,
    load_digits_model,
    load_image,
    resolve_preset,
    save_geodesic_strip,
)
from spacetime_md.image.io import write_json

SAMPLES = Path(DIGITS_CHECKPOINT).parent.parent / "images" / "digits"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/image_example")
    parser.add_argument("--preset", default="fast", choices=["fast", "accurate"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load_digits_model()
    denoiser = model.denoiser()  # flat (B, 64) core denoiser with event_shape (1, 8, 8)
    names = ["digit0_test000.png", "digit0_test021.png", "digit7_test026.png"]
    pixels = torch.stack([load_image(SAMPLES / n, event_shape=model.event_shape) for n in names])
    images = model.to_model(pixels)  # [0, 1] -> [-1, 1]
    config = resolve_preset(args.preset, seed=args.seed)

    result = distance_matrix(denoiser, images, config=config)
    print("Diffusion Edit Distance")
    for name, row in zip(names, result.distances):
        print(f"  {name:<20}" + "".join(f"{v:9.3f}" for v in row))
    euclid = torch.cdist(pixels.flatten(1), pixels.flatten(1))
    print("Euclidean pixel distance")
    for name, row in zip(names, euclid.tolist()):
        print(f"  {name:<20}" + "".join(f"{v:9.3f}" for v in row))

    geo = image_geodesic(denoiser, images[0], images[2], config=config)
    log_snr, means = geo.denoising_means(9)
    out = Path(args.out)
    save_geodesic_strip(out / "geodesic_0_to_7.png", model.to_pixels(means), log_snr,
                        title=f"DiffED {geo.distance:.3g}")
    write_json(out / "geodesic_0_to_7.json", {**geo.summary(), "names": [names[0], names[2]],
                                               "distance_matrix": result.summary()})
    print(f"geodesic 0 -> 7: length {geo.distance:.3f}, energy {geo.energy:.1f} "
          f"(straight line {geo.straight_line_energy:.1f}), highest noise sigma "
          f"{float(torch.exp(torch.tensor(-geo.log_snr_min / 2))):.3f}")
    print(f"wrote {out / 'geodesic_0_to_7.png'} and {out / 'geodesic_0_to_7.json'}")


if __name__ == "__main__":
    main()
