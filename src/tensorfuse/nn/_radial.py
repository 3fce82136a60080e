"""Radial functions of the edge length: Bessel basis, smooth cutoff, radial MLP."""

from __future__ import annotations

import math

import torch


class BesselBasis(torch.nn.Module):
    """``sqrt(2/r_c) sin(n pi r / r_c) / r`` for ``n = 1..num_basis`` (fixed frequencies)."""

    def __init__(self, r_max: float, num_basis: int = 8, dtype: torch.dtype | None = None):
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.r_max, self.num_basis = float(r_max), num_basis
        frequencies = math.pi / self.r_max * torch.arange(1, num_basis + 1, dtype=torch.float64)
        self.register_buffer("frequencies", frequencies.to(dtype or torch.get_default_dtype()))
        self.prefactor = math.sqrt(2.0 / self.r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # [E] -> [E, num_basis]
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * r) / r

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, num_basis={self.num_basis}"


class PolynomialCutoff(torch.nn.Module):
    """Smooth envelope ``1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, ``x = r/r_c``.

    It and its first two derivatives vanish at ``r_c`` (zero beyond), so energies and forces are
    continuous when a neighbour crosses the cutoff.
    """

    def __init__(self, r_max: float, p: int = 5):
        super().__init__()
        if p < 2:
            raise ValueError(f"the polynomial cutoff exponent p must be >= 2, got {p}")
        self.r_max, self.p = float(r_max), int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p, x = self.p, r / self.r_max
        envelope = 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        return envelope * (x < 1.0)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, p={self.p}"


class ScaledSiLU(torch.nn.Module):
    """SiLU scaled to unit second moment on standard-normal inputs (as e3nn's normalize2mom)."""

    SCALE = 1.6765324703310907

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x) * self.SCALE


def scaled_silu_mlp(x: torch.Tensor, weights) -> torch.Tensor:
    """``x @ W_1 -> ScaledSiLU -> @ W_2 -> ...`` (no bias, no activation after the last layer), each
    ``W`` divided by ``sqrt(fan_in)``; the activation's scale is folded into the next weight's (one
    operation fewer per layer, each way, on an edge-sized tensor)."""
    scale = 1.0
    for k, w in enumerate(weights):
        if k:
            x = torch.nn.functional.silu(x)
        x = x @ (w * (scale / math.sqrt(w.shape[0])))
        scale = ScaledSiLU.SCALE
    return x


class RadialMLP(torch.nn.Module):
    """Bias-free MLP with scaled SiLU: radial basis -> per-edge weights of a tensor product.

    Weights are drawn from N(0, 1) and divided by ``sqrt(fan_in)`` in the forward pass, so that
    activations keep unit scale at initialization whatever the widths. The activation's scale is
    applied with the next layer's weight scale (to the small weight matrix, not to every edge).
    """

    def __init__(self, sizes: list[int], dtype: torch.dtype | None = None):
        super().__init__()
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"radial MLP sizes must be >= 2 positive integers, got {sizes}")
        self.sizes = list(sizes)
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(a, b, dtype=dtype)) for a, b in zip(sizes[:-1], sizes[1:])]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_silu_mlp(x, self.weights)

    def extra_repr(self) -> str:
        return "sizes=" + "-".join(str(s) for s in self.sizes)
