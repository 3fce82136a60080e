"""Device names from users, checked once."""

from __future__ import annotations

import torch


def resolve_device(name) -> torch.device:
    """``torch.device(name)``, with a one-line error for unknown names and for devices this torch
    build or machine does not have (``cuda`` on a CPU build, ``mps`` off Apple silicon)."""
    if isinstance(name, torch.device):
        device = name
    else:
        try:
            device = torch.device(str(name))
        except RuntimeError:
            raise ValueError(f"unknown device {name!r}: expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"device {name!r}: no CUDA GPU is available (torch {torch.__version__}, {build})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}: expected cpu, cuda, cuda:N or mps")
    return device
