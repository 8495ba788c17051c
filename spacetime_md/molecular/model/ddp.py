"""Data parallelism for :func:`~spacetime_md.molecular.model.training.train`: the process-group hooks.

:class:`ProcessGroupContext` is what the training loop asks about its processes: rank, world
size, the DDP-wrapped module, and the few collectives it needs (all-finite check, mean of the
logged loss, stop together). ``ProcessGroupContext.single()`` makes each of them the
identity, so single-process training runs exactly as without it. The ``torchrun`` entry point
is :mod:`spacetime_md.molecular.model.train_ddp`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ProcessGroupContext"]


class _DenoiserDDP(torch.nn.parallel.DistributedDataParallel):
    """DDP wrapper that still offers the denoiser's ``preconditioning`` (used by the loss)."""

    def preconditioning(self, log_snr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.module.preconditioning(log_snr)


class ProcessGroupContext:
    """What :func:`~spacetime_md.molecular.model.training.train` needs to know about its processes.

    ``ProcessGroupContext.single()`` is one process (every operation is the identity);
    ``ProcessGroupContext.from_default_group()`` uses the initialised default
    ``torch.distributed`` process group.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, distributed: bool = False) -> None:
        self.rank = rank
        self.world_size = world_size
        self.distributed = distributed

    @classmethod
    def single(cls) -> "ProcessGroupContext":
        return cls()

    @classmethod
    def from_default_group(cls) -> "ProcessGroupContext":
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise ValueError(
                "distributed: expected an initialised torch.distributed process group (launch with torchrun, see "
                "spacetime_md.molecular.model.train_ddp), got none"
            )
        return cls(dist.get_rank(), dist.get_world_size(), True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_slice(self, batch_size: int) -> slice:
        """This process's rows of a global batch of ``world_size * batch_size``."""
        return slice(self.rank * batch_size, (self.rank + 1) * batch_size)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to call in the training forward pass (DDP-wrapped when distributed)."""
        if not self.distributed:
            return model
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
        # static_graph: the last layer's node update feeds no output (its parameters get no gradient),
        # the same set every step.
        return _DenoiserDDP(model, device_ids=device_ids, static_graph=True)

    def _all_reduce(self, tensor: Tensor, op) -> Tensor:
        import torch.distributed as dist

        backend_device = tensor.device
        if dist.get_backend() == "nccl" and backend_device.type != "cuda":
            moved = tensor.to(f"cuda:{torch.cuda.current_device()}")
            dist.all_reduce(moved, op=op)
            tensor.copy_(moved.to(backend_device))
        else:
            dist.all_reduce(tensor, op=op)
        return tensor

    def all_finite(self, value: Tensor) -> bool:
        """``True`` when ``value`` is finite on every process (one collective when distributed)."""
        finite = bool(torch.isfinite(value.detach()).all())
        if not self.distributed:
            return finite
        import torch.distributed as dist

        flag = torch.tensor([1.0 if finite else 0.0], dtype=torch.float64)
        return bool(self._all_reduce(flag, dist.ReduceOp.MIN).item() > 0)

    def mean(self, value: float) -> float:
        """Mean of a number over processes."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        total = self._all_reduce(torch.tensor([float(value)], dtype=torch.float64), dist.ReduceOp.SUM)
        return float(total.item()) / self.world_size

    def sum_(self, tensor: Tensor) -> Tensor:
        """In-place sum over processes."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        return self._all_reduce(tensor, dist.ReduceOp.SUM)

    def any(self, flag: bool) -> bool:
        """``True`` if ``flag`` is true on any process (so all processes stop together)."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        value = self._all_reduce(torch.tensor([1.0 if flag else 0.0], dtype=torch.float64), dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()
