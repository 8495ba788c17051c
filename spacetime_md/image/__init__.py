"""Image diffusion models on the shared spacetime core: adapters, Diffusion Edit Distance.

- :mod:`~spacetime_md.image.adapters`: image networks (EDM ``D(x, sigma)``, epsilon-, v- and
  sample-prediction, diffusers-``UNet2DModel``-like ``model(sample, timestep).sample``) as core
  denoisers on flat ``(B, D)`` tensors; :class:`ImageDenoiser` owns the ``event_shape``.
- :mod:`~spacetime_md.image.energy`: memory-bounded (chunked over curve points) curve energy
  with accumulated gradients, optional mixed precision, and a geodesic solver using it.
- :mod:`~spacetime_md.image.distance`: Diffusion Edit Distance (Eq. 17), symmetric by
  construction (pairs in the canonical order of :mod:`~spacetime_md.image.canonical`), with the
  length re-evaluated exactly or with a standard error (:mod:`~spacetime_md.image.length`);
  geodesics with their strip of denoising means; :mod:`~spacetime_md.image.matrix`: distance
  matrices solved in batches of pairs; :mod:`~spacetime_md.image.presets`: named settings.
- :mod:`~spacetime_md.image.model` / :mod:`~spacetime_md.image.training`: a small EDM U-Net
  trained by our own loop on scikit-learn's 8x8 digits (shipped as ``digits_8x8.pt``).
- :mod:`~spacetime_md.image.io`: PNG reading with clear errors, strips, atomic writes.
- :mod:`~spacetime_md.image.analytic`: Gaussian images with exact predictors (test oracle).

Images are ``(C, H, W)`` tensors; pixels in ``[0, 1]``, model units ``2 * pixel - 1``.
Imports torch only (plus Pillow/matplotlib for files); never openmm, mdtraj or torch_geometric.
"""

from spacetime_md.image.adapters import (
    DiscreteTimesteps,
    ImageDenoiser,
    ddpm_alphas_cumprod,
    from_edm_image,
    from_epsilon_image,
    from_unet2d,
    from_v_image,
)
from spacetime_md.image.analytic import GaussianImages
from spacetime_md.image.canonical import image_key, pair_seed
from spacetime_md.image.distance import ImageGeodesic, image_edit_distance, image_geodesic, warm_start_curve
from spacetime_md.image.length import evaluate_curve_length
from spacetime_md.image.matrix import DistanceMatrix, distance_matrix, write_matrix_csv
from spacetime_md.image.presets import (
    DEFAULT_BATCH_PAIRS,
    DEFAULT_LENGTH_POINTS,
    DEFAULT_LENGTH_PROBES,
    DEFAULT_T_MIN,
    DEFAULT_WARM_START,
    EXACT_LENGTH_MAX_DIM,
    IMAGE_PRESETS,
    resolve_preset,
)
from spacetime_md.image.energy import (
    autocast_denoiser,
    chunked_curve_energy,
    chunked_segment_terms,
    optimize_geodesic_chunked,
)
from spacetime_md.image.io import load_image, load_image_folder, save_geodesic_strip, save_image
from spacetime_md.image.model import (
    DIGITS_CHECKPOINT,
    ImageDiffusionModel,
    TinyUNet,
    UNetConfig,
    load_digits_model,
    load_image_model,
    save_image_model,
)
from spacetime_md.image.training import ImageTrainConfig, load_digits_images, train_image_model

__all__ = [
    "ImageDenoiser",
    "from_edm_image",
    "from_epsilon_image",
    "from_v_image",
    "from_unet2d",
    "DiscreteTimesteps",
    "ddpm_alphas_cumprod",
    "GaussianImages",
    "chunked_curve_energy",
    "chunked_segment_terms",
    "autocast_denoiser",
    "optimize_geodesic_chunked",
    "DEFAULT_T_MIN",
    "DEFAULT_LENGTH_POINTS",
    "DEFAULT_LENGTH_PROBES",
    "DEFAULT_WARM_START",
    "DEFAULT_BATCH_PAIRS",
    "EXACT_LENGTH_MAX_DIM",
    "IMAGE_PRESETS",
    "resolve_preset",
    "image_key",
    "pair_seed",
    "evaluate_curve_length",
    "warm_start_curve",
    "ImageGeodesic",
    "image_geodesic",
    "image_edit_distance",
    "DistanceMatrix",
    "distance_matrix",
    "write_matrix_csv",
    "load_image",
    "load_image_folder",
    "save_image",
    "save_geodesic_strip",
    "ImageDiffusionModel",
    "TinyUNet",
    "UNetConfig",
    "save_image_model",
    "load_image_model",
    "load_digits_model",
    "DIGITS_CHECKPOINT",
    "ImageTrainConfig",
    "train_image_model",
    "load_digits_images",
]
