"""Data-parallel training with torch.distributed (``torchrun``): nccl on GPUs, gloo on CPUs.

Every rank holds the whole model; a global batch is split across the ranks, gradients and
metric sums are summed with ``all_reduce``, and only rank 0 writes files or prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str = "auto") -> "Distributed":
        """Read torchrun's variables; initialize the process group when there are several ranks.
        ``device``: ``"auto"`` (CUDA when available), or a device name, checked here (a one-line
        error for a device this build or machine lacks); ranks use their local GPU."""
        from tensorfuse.utils._device import resolve_device

        requested = None if device == "auto" else resolve_device(device)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            if requested is not None:
                return cls(device=requested)
            return cls(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if requested is not None and requested.type not in ("cpu", "cuda"):
            raise ValueError(f"device {device!r}: distributed training runs on cpu or cuda")
        if requested is not None and requested.type == "cuda" and requested.index is not None:
            raise ValueError(f"device {device!r}: under torchrun every rank uses its local GPU; give cuda or auto")
        use_cuda = torch.cuda.is_available() if requested is None else requested.type == "cuda"
        if use_cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(rank, world, local, torch.device(f"cuda:{local}" if use_cuda else "cpu"))

    def shard(self, batch: list[int]) -> list[int]:
        """This rank's part of a global batch (round robin; may be empty for tiny batches)."""
        return batch[self.rank :: self.world_size]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def main_value(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (wall-clock decisions must agree between ranks)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value if self.is_main else 0.0], dtype=torch.float64, device=self.device)
        return float(self.sum_(tensor)[0])

    def sum_gradients(self, parameters) -> None:
        if not self.enabled:
            return
        parameters = [p for p in parameters if p.requires_grad]
        for p in parameters:  # a rank whose share of the batch was empty still takes part
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in parameters]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
