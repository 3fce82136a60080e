"""Species embedding and per-atom readouts."""

from __future__ import annotations

import torch

from tensorfuse.nn._radial import scaled_silu_mlp


class SpeciesEmbedding(torch.nn.Module):
    """Species index ``[N]`` -> scalar features ``[N, C, 1]`` (a linear map of the one-hot vector)."""

    def __init__(self, num_species: int, channels: int, dtype: torch.dtype | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(num_species, channels, dtype=dtype))

    def species_axes(self) -> dict[str, int]:
        """Species-indexed tensors (name -> species axis): see :mod:`tensorfuse.model._transfer`."""
        return {"weight": 0}

    def forward(self, species: torch.Tensor) -> torch.Tensor:
        return self.weight[species].unsqueeze(-1)


class ScalarReadout(torch.nn.Module):
    """Scalar channels ``[N, C]`` -> ``outputs`` numbers per atom ``[N, outputs]`` (``[N]`` for one):
    linear, or an MLP with ``hidden`` units."""

    def __init__(self, channels: int, hidden: int | None = None, dtype: torch.dtype | None = None,
                 outputs: int = 1):
        super().__init__()
        self.hidden, self.outputs = hidden, outputs
        sizes = [channels, hidden, outputs] if hidden else [channels, outputs]
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(a, b, dtype=dtype)) for a, b in zip(sizes[:-1], sizes[1:])]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = scaled_silu_mlp(x, self.weights)
        return x.squeeze(-1) if self.outputs == 1 else x
