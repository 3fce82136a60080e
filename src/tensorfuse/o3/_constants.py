"""Precomputed constants (coupling tensors, harmonic coefficients) as cached torch tensors."""

from __future__ import annotations

from typing import Callable, Hashable

import numpy as np
import torch

_CACHE: dict = {}


def cached_tensor(key: Hashable, build: Callable[[], np.ndarray], dtype: torch.dtype, device) -> torch.Tensor:
    """A float64 numpy constant, converted once per ``(key, dtype, device)``. Do not modify it."""
    full_key = (key, dtype, str(device))
    value = _CACHE.get(full_key)
    if value is None and torch.compiler.is_compiling():
        # being traced (export/compile): a constant made now may be a fake tensor, so embed it in
        # the traced graph without caching it for later eager calls
        return torch.tensor(build(), dtype=dtype, device=device)
    if value is None:
        # Constants must stay usable by autograd even when first built under inference_mode.
        with torch.inference_mode(False):
            value = torch.tensor(build(), dtype=dtype, device=device)
        _CACHE[full_key] = value
    return value
