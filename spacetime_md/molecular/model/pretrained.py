"""Saving, loading and shipping trained denoisers.

A denoiser checkpoint is a ``torch.save`` file holding a plain dictionary

    format           "spacetime_md.equivariant_denoiser"
    format_version   1
    model_config     EquivariantDenoiser.config (architecture, atom types, bonds,
                     sigma_data and the nm -> model-unit length_scale_nm)
    state_dict       the weights (EMA weights for trained models)
    metadata         free JSON-like information (command, data, metrics, ...)

Files are read with ``torch.load(weights_only=True)`` (no arbitrary code runs) and written
atomically. Integrity is verified on load: a checkpoint written by :func:`save_checkpoint`
carries ``weights_sha256`` (a digest of every tensor's name, dtype, shape and bytes), and a
shipped model's file must match the ``sha256`` of its model card; a mismatch raises
:class:`~spacetime_md.errors.CheckpointError` (``verify=False`` loads anyway, for your own
files only). The training loop's resumable state file (``format`` ending in
``training_state``) can be loaded too: its EMA weights are used.
Every failure to read a file as a denoiser raises :class:`~spacetime_md.errors.CheckpointError`
with the path and the reason.

A *guided* checkpoint (``format`` ``"spacetime_md.guided_equivariant_denoiser"``, written by
:func:`save_guided_checkpoint`) is one file holding a model, a weaker guide of the same
architecture (typically an early EMA snapshot of the same run) and the guidance settings:
``guide_state_dict``, ``guide_weights_sha256`` and ``guidance`` (``weight``, ``log_snr_min``,
``log_snr_max``, ``edge_width``) on top of the keys above. :func:`load_checkpoint` returns it as
an :class:`~spacetime_md.core.AutoGuidedDenoiser`, which every command accepts where it accepts a
model; with ``edge_width > 0`` it is smooth in log_snr, so geodesics and paths can use it (the
shipped default ``alanine-dipeptide`` is one).
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from spacetime_md import __version__
from spacetime_md.core.denoisers import AutoGuidedDenoiser
from spacetime_md._atomic import torch_save_atomic
from spacetime_md.errors import CheckpointError
from spacetime_md.molecular.model.denoiser import EquivariantDenoiser

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "GUIDED_CHECKPOINT_FORMAT",
    "save_guided_checkpoint",
    "PRETRAINED",
    "RETIRED",
    "resolve_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "load_pretrained",
    "load_guided",
    "pretrained_path",
    "checkpoint_system",
    "verify_checkpoint",
    "weights_digest",
    "PRETRAINED_SYSTEMS",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "spacetime_md.equivariant_denoiser"
TRAINING_STATE_FORMAT = "spacetime_md.equivariant_denoiser.training_state"
CHECKPOINT_VERSION = 1
GUIDED_CHECKPOINT_FORMAT = "spacetime_md.guided_equivariant_denoiser"

#: Shipped models: name -> file under ``spacetime_md/data/models``.
PRETRAINED: dict[str, str] = {
    # The one alanine-dipeptide model of every command (issue 21): the focus recipe (half the
    # noise levels drawn from log_snr 0-5) for 13 000 steps (26.0 min on 2 cores), guided by its
    # own step-3250 EMA snapshot, w = 2.5 switched on over log_snr [-2, 8) by sigmoids of width
    # 0.5 (`spacetime-md guide`), so that geodesics can differentiate it. One file.
    "alanine-dipeptide": "alanine_dipeptide_vacuum_guided.pt",
    "alanine-dipeptide-vacuum": "alanine_dipeptide_vacuum_guided.pt",
    "alanine-dipeptide-guided": "alanine_dipeptide_vacuum_guided.pt",
    # Ace-(Ala)3-Nme, 42 atoms, the one model of every command since the fourteenth session: the
    # sparse-graph EGNN with 64 channels and the focus recipe, 12 000 steps on 50 000 replica-exchange
    # samples (49.9 min on 2 cores), guided by its own step-3000 EMA snapshot, w = 4 switched on over
    # log_snr [-2, 8) by sigmoids of width 0.5 (`spacetime-md guide`). One file.
    "alanine-tetrapeptide": "alanine_tetrapeptide_vacuum_guided.pt",
    "alanine-tetrapeptide-vacuum": "alanine_tetrapeptide_vacuum_guided.pt",
    "alanine-tetrapeptide-guided": "alanine_tetrapeptide_vacuum_guided.pt",
}

_ALA2_TRAIN = "spacetime-md train --data runs/ala2_samples --seed 0 "
_TETRA_TRAIN = "spacetime-md train --data runs/tetra_50k --seed 0 --graph sparse "

#: Models shipped before and retired from the package (one model per molecule for every command:
#: ``alanine-dipeptide`` since the eleventh session, ``alanine-tetrapeptide`` since the fourteenth):
#: name -> the command that rebuilds it from ``spacetime-md sample --system SYSTEM --n-samples 50000
#: --seed 0 --out runs/ala2_samples`` (or ``runs/tetra_50k``) (docs/models.md has their
#: measurements; their cards are in docs/retired_models).
RETIRED: dict[str, str] = {
    "alanine-dipeptide-24k": _ALA2_TRAIN + "--out runs/ala2_model_24k --steps 24000 --snapshot-every 6000",
    "alanine-dipeptide-focus": _ALA2_TRAIN + "--out runs/ala2_model_focus --steps 14000 --focus-fraction 0.5 "
                                             "--focus-log-snr-min 0 --focus-log-snr-max 5 --snapshot-every 3500",
    # The default for paths, committor, batch and evaluate until the eleventh session.
    "alanine-dipeptide-12k": _ALA2_TRAIN + "--out runs/ala2_model --steps 12000 --num-threads 1 --snapshot-every 3000",
    # The default model's own model, unguided.
    "alanine-dipeptide-focus13k": _ALA2_TRAIN + "--out runs/ala2_model_focus13k --steps 13000 --num-threads 2 "
                                                "--compile --focus-fraction 0.5 --focus-log-snr-min 0 "
                                                "--focus-log-snr-max 5 --snapshot-every 3250",
    "alanine-dipeptide-w64": _ALA2_TRAIN + "--out runs/ala2_model_w64 --steps 18000 --num-threads 2 "
                                           "--hidden-channels 64 --focus-fraction 0.5 --focus-log-snr-min 0 "
                                           "--focus-log-snr-max 5 --snapshot-every 4500 --checkpoint-every 500",
    # The tetrapeptide's default until the thirteenth session (32 channels, uniform noise levels);
    # its guided pair was this model with its model_step003000.pt, `spacetime-md guide --weight 4
    # --edge-width 0`.
    "alanine-tetrapeptide-w32": _TETRA_TRAIN + "--out runs/tetra_model --steps 12000 --num-threads 1 "
                                               "--snapshot-every 3000 --checkpoint-every 250",
}


def _refuse_retired(name: str) -> None:
    if name in RETIRED:
        # The current model of the same molecule: the longest shipped name the retired one extends.
        current = max((p for p in PRETRAINED if name.startswith(p + "-")), key=len, default="alanine-dipeptide")
        raise ValueError(
            f"checkpoint: {name!r} is no longer shipped (use {current!r}, the one model of every command); "
            f"to rebuild it, run `{RETIRED[name]}` and pass its model.pt"
        )


#: The preset system of each shipped model (the dipeptide's checkpoints predate embedded system
#: specs; for a shipped model the preset wins over an embedded spec, so states added to the preset
#: since training, e.g. the tetrapeptide's nterm_alpha_R, are known).
PRETRAINED_SYSTEMS: dict[str, str] = {
    file: "alanine-tetrapeptide" if file.startswith("alanine_tetrapeptide") else "alanine-dipeptide"
    for file in set(PRETRAINED.values())
}


def checkpoint_system(model: "EquivariantDenoiser", *, platform: str | None = None, solvent: str | None = None):
    """The :class:`~spacetime_md.molecular.MolecularSystem` a model was trained for, or ``None``.

    Models trained by :func:`~spacetime_md.molecular.train` record their system (PDB text,
    force field, solvent, CVs, states) in ``metadata["system"]``; shipped models map to their
    preset (:data:`PRETRAINED_SYSTEMS`). ``solvent`` overrides the recorded solvent for presets.
    """
    from spacetime_md.molecular.system.build import MolecularSystem, load_system

    meta = getattr(model, "metadata", None) or {}
    spec = meta.get("system")
    source = getattr(model, "source_file", None)
    shipped = source is not None and _shipped_card_sha256(Path(source)) is not None
    if isinstance(spec, dict) and "pdb" in spec and not shipped:
        if solvent is not None and solvent != spec.get("solvent"):
            raise ValueError(
                f"solvent: the model was trained for {spec.get('name')} in {spec.get('solvent')}, got {solvent!r}"
            )
        return MolecularSystem.from_spec(spec, platform=platform)
    preset = PRETRAINED_SYSTEMS.get(Path(source).name) if source else None
    if preset is not None:
        return load_system(preset, solvent=solvent or "vacuum", platform=platform)
    if isinstance(spec, dict) and "pdb" in spec:
        return MolecularSystem.from_spec(spec, platform=platform)
    return None


def _cpu_float32(model: EquivariantDenoiser) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
            for k, v in model.state_dict().items()}


def save_checkpoint(
    path: str | os.PathLike,
    model: EquivariantDenoiser,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (weights in float32 on the CPU) and ``metadata`` to ``path`` atomically."""
    if not isinstance(model, EquivariantDenoiser):
        raise TypeError(f"model: expected an EquivariantDenoiser, got {type(model).__name__}")
    state = _cpu_float32(model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "spacetime_md_version": __version__,
        "model_config": model.config,
        "state_dict": state,
        "weights_sha256": weights_digest(state),
        "metadata": dict(metadata or {}),
    }
    return torch_save_atomic(payload, path)


def save_guided_checkpoint(
    path: str | os.PathLike,
    model: EquivariantDenoiser,
    guide: EquivariantDenoiser,
    *,
    weight: float,
    log_snr_min: float,
    log_snr_max: float,
    edge_width: float,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model, its guide and the guidance settings to one file, atomically.

    :func:`load_checkpoint` returns it as ``AutoGuidedDenoiser(model, guide, weight, log_snr_min,
    log_snr_max, edge_width)``. ``model`` and ``guide`` must have the same ``config`` (the same
    molecule, architecture and units), e.g. a training run's final model and one of its early
    EMA snapshots (``train --snapshot-every``).
    """
    for name, m in (("model", model), ("guide", guide)):
        if not isinstance(m, EquivariantDenoiser):
            raise TypeError(f"{name}: expected an EquivariantDenoiser, got {type(m).__name__}")
    if model.config != guide.config:
        differ = sorted(k for k in set(model.config) | set(guide.config) if model.config.get(k) != guide.config.get(k))
        raise CheckpointError(f"guide: expected the model's architecture, molecule and units, got different "
                              f"{', '.join(differ)}")
    settings = AutoGuidedDenoiser(model, guide, weight, log_snr_min, log_snr_max, edge_width).guidance_settings()
    state, guide_state = _cpu_float32(model), _cpu_float32(guide)
    payload = {
        "format": GUIDED_CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "spacetime_md_version": __version__,
        "model_config": model.config,
        "state_dict": state,
        "weights_sha256": weights_digest(state),
        "guide_state_dict": guide_state,
        "guide_weights_sha256": weights_digest(guide_state),
        "guidance": settings,
        "metadata": dict(metadata or {}),
    }
    return torch_save_atomic(payload, path)


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in sorted name order."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _shipped_card_sha256(path: Path) -> str | None:
    """The model card's sha256 when ``path`` is a shipped model file, else ``None``."""
    import json

    models_dir = _model_file("x").parent.resolve()
    try:
        resolved = path.resolve()
    except OSError:
        return None
    if resolved.parent != models_dir:
        return None
    card = resolved.with_suffix(".json")
    if not card.is_file():
        return None
    return json.loads(card.read_text()).get("sha256")


def verify_checkpoint(path: Path, payload: Mapping[str, Any]) -> str:
    """Check a loaded checkpoint's integrity; return how (``"card"``, ``"embedded"``, ``"none"``).

    Raises :class:`CheckpointError` when the file differs from its shipped model card's sha256 or
    the weights differ from the embedded ``weights_sha256``.
    """
    expected = _shipped_card_sha256(path)
    if expected is not None:
        actual = _file_sha256(path)
        if actual != expected:
            raise CheckpointError(
                f"{path}: corrupted shipped model: sha256 {actual[:12]}... differs from its model card's "
                f"{expected[:12]}... (reinstall the package)"
            )
        return "card"
    recorded = payload.get("weights_sha256")
    if recorded is None:
        return "none"
    checks = [("weights", payload["ema_state_dict" if payload["format"] == TRAINING_STATE_FORMAT else "state_dict"],
               recorded)]
    if payload["format"] == GUIDED_CHECKPOINT_FORMAT:
        checks.append(("guide weights", payload["guide_state_dict"], payload.get("guide_weights_sha256")))
    for what, weights, expected_digest in checks:
        actual = weights_digest(weights)
        if actual != expected_digest:
            raise CheckpointError(
                f"{path}: corrupted checkpoint: {what} sha256 {actual[:12]}... differs from the recorded "
                f"{str(expected_digest)[:12]}... (verify=False / --no-verify loads it anyway)"
            )
    return "embedded"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate the dictionary stored in a checkpoint file (no model is built)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {str(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt or truncated file?): "
            f"{type(exc).__name__}: {reason}"
        ) from exc
    if not isinstance(payload, dict) or "format" not in payload:
        got = type(payload).__name__ if not isinstance(payload, dict) else f"keys {sorted(payload)[:6]}"
        raise CheckpointError(f"{path}: expected a spacetime_md denoiser checkpoint, got {got}")
    fmt = payload["format"]
    if fmt not in (CHECKPOINT_FORMAT, TRAINING_STATE_FORMAT, GUIDED_CHECKPOINT_FORMAT):
        raise CheckpointError(
            f"{path}: expected format {CHECKPOINT_FORMAT!r}, {GUIDED_CHECKPOINT_FORMAT!r} or "
            f"{TRAINING_STATE_FORMAT!r}, got {fmt!r}"
        )
    version = payload.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: expected format_version {CHECKPOINT_VERSION}, got {version!r} "
            f"(written by spacetime_md {payload.get('spacetime_md_version', 'unknown')})"
        )
    weights_key = "ema_state_dict" if fmt == TRAINING_STATE_FORMAT else "state_dict"
    required = ("model_config", weights_key)
    if fmt == GUIDED_CHECKPOINT_FORMAT:
        required += ("guide_state_dict", "guidance")
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return payload


def load_checkpoint(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    freeze: bool = True,
    n_atoms: int | None = None,
    verify: bool = True,
) -> EquivariantDenoiser | AutoGuidedDenoiser:
    """Build an :class:`EquivariantDenoiser` from a checkpoint file.

    Parameters
    ----------
    path : path-like or str
        A checkpoint file, or the name of a shipped model (:data:`PRETRAINED`).
    device, dtype
        Where and in which precision the model computes.
    freeze : bool
        Put the model in eval mode and switch off parameter gradients (gradients with
        respect to the *input* still work, which is what the geometry needs).
    n_atoms : int, optional
        Expected number of atoms; a checkpoint for another molecule raises
        :class:`CheckpointError`.
    verify : bool
        Check integrity (the shipped model card's sha256, or the embedded weights digest);
        a mismatch raises :class:`CheckpointError`. ``False`` skips the check (your own files
        only: shipped models are always verified).

    Returns
    -------
    EquivariantDenoiser or AutoGuidedDenoiser
        With the checkpoint's ``metadata`` attached as ``model.metadata``; a guided checkpoint
        (:func:`save_guided_checkpoint`, e.g. the shipped ``alanine-dipeptide``) gives the
        :class:`~spacetime_md.core.AutoGuidedDenoiser` of its model and guide, which stands in
        for the model (``n_atoms``, ``to_model``, ``length_scale_nm``, ... are the model's).
    """
    path = resolve_checkpoint(path)
    payload = read_checkpoint(path)
    if verify or _shipped_card_sha256(path) is not None:
        how = verify_checkpoint(path, payload)
        if how == "none":
            logger.info("%s: no integrity record (written before checkpoints carried one); not verified", path)
    weights = payload["ema_state_dict" if payload["format"] == TRAINING_STATE_FORMAT else "state_dict"]
    model = _build_model(path, payload["model_config"], weights, n_atoms)
    metadata = dict(payload.get("metadata") or {})
    if payload["format"] == GUIDED_CHECKPOINT_FORMAT:
        guide = _build_model(path, payload["model_config"], payload["guide_state_dict"], n_atoms, "guide ")
        try:
            model = AutoGuidedDenoiser(model, guide, **payload["guidance"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: invalid guidance settings: {exc}") from exc
    model = model.to(device=device, dtype=dtype)
    if freeze:
        model.eval()
        model.requires_grad_(False)
    for m in {id(m): m for m in (model, getattr(model, "denoiser", model))}.values():
        m.metadata = metadata
        m.source_file = str(path)
    return model


def _build_model(path: Path, config: Any, weights: Mapping[str, torch.Tensor], n_atoms: int | None,
                 what: str = "") -> EquivariantDenoiser:
    """An :class:`EquivariantDenoiser` of ``config`` with ``weights`` (checked against it)."""
    try:
        model = EquivariantDenoiser(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model_config: {exc}") from exc
    if n_atoms is not None and model.n_atoms != n_atoms:
        raise CheckpointError(
            f"{path}: expected a model for {n_atoms} atoms, got one for {model.n_atoms} atoms"
        )
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        problems.append(f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:4])}" + (" ..." if len(unexpected) > 4 else ""))
    for key in sorted(set(expected) & set(weights)):
        if tuple(expected[key].shape) != tuple(weights[key].shape):
            problems.append(
                f"{key} has shape {tuple(weights[key].shape)}, architecture expects {tuple(expected[key].shape)}"
            )
    if problems:
        raise CheckpointError(
            f"{path}: {what}weights do not match the architecture in its model_config: " + "; ".join(problems)
        )
    model.load_state_dict(weights)
    return model


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` as a file path: a shipped model's name (:data:`PRETRAINED`) becomes its file,
    anything else is taken as a path (an existing file of that name wins over a model name)."""
    if isinstance(path, str) and not Path(path).exists():
        _refuse_retired(path)
        if path in PRETRAINED:
            return pretrained_path(path)
    return Path(path)


def pretrained_path(name: str = "alanine-dipeptide") -> Path:
    """Path of a shipped checkpoint (see :data:`PRETRAINED`)."""
    _refuse_retired(name)
    if name not in PRETRAINED:
        raise ValueError(f"name: expected one of {sorted(PRETRAINED)}, got {name!r}")
    return _model_file(PRETRAINED[name])


def _model_file(file_name: str) -> Path:
    return Path(str(importlib.resources.files("spacetime_md") / "data" / "models" / file_name))


def load_guided(
    checkpoint: str | os.PathLike,
    guide: str | os.PathLike,
    *,
    weight: float = 2.5,
    log_snr_min: float = -2.0,
    log_snr_max: float = 8.0,
    edge_width: float = 0.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AutoGuidedDenoiser:
    """Load a model and a weaker guide model of the same molecule as an
    :class:`~spacetime_md.core.AutoGuidedDenoiser` (autoguidance, for sampling).

    Parameters
    ----------
    checkpoint, guide : path-like or str
        Checkpoint files or shipped model names; typically the final and an early EMA snapshot
        (``train --snapshot-every``) of one training run.
    weight, log_snr_min, log_snr_max : float
        Guidance weight and the levels (model units) where it applies. The defaults were selected
        for alanine dipeptide by the Ramachandran JSD against the model's training samples
        (``benchmarks/bench_autoguidance.py``, docs/models.md).
    edge_width : float
        0 (default): a hard interval, for sampling. ``> 0``: the guidance is switched on and off
        by sigmoids of this width in log_snr, so geodesics can use the pair (``spacetime-md
        guide`` writes such a pair to one checkpoint file).

    Raises
    ------
    CheckpointError
        If the two checkpoints describe different molecules (atoms, atom names, bonds) or
        different model units (``length_scale_nm``).
    """
    model = load_checkpoint(checkpoint, device=device, dtype=dtype)
    weak = load_checkpoint(guide, device=device, dtype=dtype)
    for what, name, loaded in (("checkpoint", checkpoint, model), ("guide", guide, weak)):
        if isinstance(loaded, AutoGuidedDenoiser):
            raise ValueError(f"{what}: {str(name)!r} is a guided checkpoint and brings its own guide; expected a "
                             f"single model")
    for key in ("atom_types", "atom_names", "bonds", "length_scale_nm"):
        a, b = model.config.get(key), weak.config.get(key)
        if a != b:
            raise CheckpointError(
                f"guide: expected a model of the same molecule and units as {str(checkpoint)!r} "
                f"({key} = {_short(a)}), got {key} = {_short(b)} in {str(guide)!r}"
            )
    return AutoGuidedDenoiser(model, weak, weight, log_snr_min, log_snr_max, edge_width)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_pretrained(
    name: str = "alanine-dipeptide",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> EquivariantDenoiser | AutoGuidedDenoiser:
    """Load a shipped, frozen denoiser in one call.

    ``load_pretrained("alanine-dipeptide")`` returns the vacuum 300 K alanine dipeptide
    model (22 atoms, model units ``x_nm / model.length_scale_nm``), a guided checkpoint: an
    :class:`~spacetime_md.core.AutoGuidedDenoiser` smooth in log_snr; use it directly as a core
    denoiser ``model(x (B, 66), log_snr (B,))``. ``load_pretrained("alanine-tetrapeptide")`` is
    the 42-atom Ace-(Ala)3-Nme model, a guided checkpoint in the same way.
    """
    _refuse_retired(name)
    if name not in PRETRAINED:
        raise ValueError(f"name: expected one of {sorted(PRETRAINED)}, got {name!r}")
    return load_checkpoint(pretrained_path(name), device=device, dtype=dtype)
