"""Data-parallel training on several processes, GPUs or nodes with PyTorch DDP and ``torchrun``.

    torchrun --nproc_per_node 2 -m spacetime_md.molecular.model.train_ddp \\
        --data samples/ --out runs/ddp --steps 20000 --batch-size 32 [--device cuda] [--resume]

Takes every option of ``spacetime-md train``, plus ``--config FILE`` (a JSON object of
:class:`~spacetime_md.molecular.model.train_config.TrainConfig` fields, or the ``config.json`` of an
earlier run) whose values apply unless the option is given on the command line, and
``--backend`` (default ``nccl`` with ``--device cuda``, ``gloo`` on CPU). With
``--device cuda`` each process uses ``cuda:LOCAL_RANK``. Multi-node: the usual ``torchrun
--nnodes N --node_rank R --rdzv_endpoint HOST:PORT`` (``OUT`` and ``--data`` must be
readable at the same path on every node; only rank 0 writes ``OUT``).

How the processes share the work (see :func:`~spacetime_md.molecular.model.training.train` with
``distributed=True``): ``--batch-size`` is per process. Every process draws the same global
batch of ``world_size * batch_size`` indices, noise levels and noises from the run's seeded
random stream and trains on its own contiguous slice; DDP averages the gradients. So a run
with ``P`` processes follows the same trajectory as one process with a ``P`` times larger
batch (up to floating-point summation order), and ``training_state.pt`` / ``model.pt`` have
the same format as single-process ones: either run resumes or loads the other's files.

Single-process CPU training (``spacetime-md train``) does not use this module and is unchanged.
The hooks the training loop calls live in :mod:`spacetime_md.molecular.model.ddp`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Sequence

import torch

__all__ = ["build_config", "main"]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# --------------------------------------------------------------------------- torchrun entry point


def _parser() -> argparse.ArgumentParser:
    from spacetime_md.commands import train as train_command

    p = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node N -m spacetime_md.molecular.model.train_ddp",
        description="Data-parallel training with PyTorch DDP under torchrun (gloo on CPU, nccl on GPU); "
        "--batch-size is per process. Options as for 'spacetime-md train'.",
    )
    train_command.add_arguments(p)
    p.add_argument("--config", dest="config_file",
                   help="JSON file of TrainConfig fields (or an earlier run's config.json); options given on "
                   "the command line override it")
    p.add_argument("--backend", choices=("gloo", "nccl"), help="process-group backend (default: nccl on cuda, else gloo)")
    return p


def build_config(argv: Sequence[str]):
    """The :class:`TrainConfig` and parsed arguments of a ``train_ddp`` command line."""
    from spacetime_md.commands import train as train_command
    from spacetime_md.molecular.model.train_config import TrainConfig

    parser = _parser()
    args = parser.parse_args(list(argv))
    explicit_parser = _parser()
    explicit_parser.set_defaults(**{a.dest: None for a in explicit_parser._actions if a.dest != "help"})
    explicit = {k for k, v in vars(explicit_parser.parse_args(list(argv))).items() if v is not None}
    config = train_command.build_config(args)
    if args.config_file:
        from spacetime_md._config import read_config_fields

        data = read_config_fields(args.config_file, TrainConfig, "--config", "train_config")
        from_file = {k: v for k, v in data.items() if k not in explicit and k not in ("data", "out")}
        config = dataclasses.replace(config, **from_file)
    return config, args


def _torchrun_env() -> dict[str, int]:
    missing = [k for k in _TORCHRUN_VARS if k not in os.environ]
    if missing:
        raise ValueError(
            f"environment: expected the torchrun variables {list(_TORCHRUN_VARS)}, got {missing} unset; launch with "
            "'torchrun --nproc_per_node N -m spacetime_md.molecular.model.train_ddp ...' (or use 'spacetime-md train' "
            "for one process)"
        )
    return {k: int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``torchrun ... -m spacetime_md.molecular.model.train_ddp``; returns the exit code."""
    import logging

    from spacetime_md.cli import USER_ERRORS, _message

    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch.distributed as dist

    rank = os.environ.get("RANK", "?")
    try:
        config, args = build_config(argv)
        env = _torchrun_env()
        device = config.device
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError(f"device: expected an available CUDA device, got {device!r} (no CUDA device is available)")
            device = f"cuda:{env['LOCAL_RANK']}"
            torch.cuda.set_device(env["LOCAL_RANK"])
            config = dataclasses.replace(config, device=device)
        backend = args.backend or ("nccl" if device.startswith("cuda") else "gloo")
        if args.dry_run:
            if env["RANK"] == 0:
                print(json.dumps({**config.to_dict(), "backend": backend, "world_size": env["WORLD_SIZE"]},
                                 indent=2, sort_keys=True))
            return 0
        dist.init_process_group(backend)
        try:
            from spacetime_md.molecular.model.training import train

            result = train(config, resume=args.resume, progress=args.progress and env["RANK"] == 0, distributed=True)
        finally:
            dist.destroy_process_group()
        if env["RANK"] == 0:
            print(
                f"trained {result.step} steps on {env['WORLD_SIZE']} processes ({backend}) in "
                f"{result.wall_time / 60:.1f} min; final loss {result.final_loss:.4f}; model: {result.out / 'model.pt'}"
            )
        return 0
    except USER_ERRORS as exc:
        print(f"train_ddp (rank {rank}): error: {_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
