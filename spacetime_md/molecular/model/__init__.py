"""The equivariant denoiser: EGNN layers, the model, its training (single process or DDP),
shipped checkpoints and the evaluation of model samples (pipeline step 3).

Units: the network sees dimensionless coordinates (``to_model`` / ``from_model``);
the rest is nm.

Public names are re-exported lazily (see :mod:`spacetime_md.molecular`).
"""

from __future__ import annotations

from spacetime_md.molecular._lazy import attach as _attach

#: public name -> module of this package that defines it
_LAZY = {
    "load_dataset": "dataset",
    "ProcessGroupContext": "ddp",
    "EquivariantDenoiser": "denoiser",
    "from_model": "denoiser",
    "to_model": "denoiser",
    "EquivariantConv": "egnn",
    "EvaluationResult": "evaluation",
    "evaluate_samples": "evaluation",
    "sample_model": "generate",
    "checkpoint_system": "pretrained",
    "load_checkpoint": "pretrained",
    "load_guided": "pretrained",
    "load_pretrained": "pretrained",
    "save_checkpoint": "pretrained",
    "save_guided_checkpoint": "pretrained",
    "TrainConfig": "train_config",
    "resolve_training_system": "train_system",
    "TrainResult": "training",
    "train": "training",
}

__getattr__, __dir__, __all__ = _attach(__name__, _LAZY)
