"""Execution of channel-wise tensor products: all paths in one batched contraction."""

from __future__ import annotations

import torch

from tensorfuse.o3 import Irreps, TensorProductSpec, get_basis

_WEIGHT_MODES = ("external", "internal", "none")


class ChannelwiseTensorProduct(torch.nn.Module):
    """Channel-wise product of features ``x1`` with ``x2``, one weight per channel and path.

    ``x1`` is ``[N, C, irreps1.dim]``. ``x2`` is ``[N, irreps2.dim]``, shared by all channels (the
    message of an edge: neighbour features times edge harmonics, e3nn's "uvu"), or
    ``[N, C, irreps2.dim]`` when ``x2_has_channels`` (channel by channel, "uuu"). The output is
    ``[N, C, irreps_out.dim]`` with one block per path (see :class:`~tensorfuse.o3.TensorProductSpec`).

    Weights: ``"external"`` (``[N, C, num_paths]`` passed to ``forward``, e.g. from a radial MLP),
    ``"internal"`` (a learnable ``[C, num_paths]`` parameter) or ``"none"``.

    All paths share one stacked coupling tensor, so the forward pass is two large contractions
    whatever the number of paths; the basis only changes that tensor.
    """

    def __init__(
        self,
        irreps1,
        irreps2,
        filter_out=None,
        *,
        channels: int,
        basis="spherical",
        weights: str = "external",
        x2_has_channels: bool = False,
        paths=None,
    ):
        super().__init__()
        if weights not in _WEIGHT_MODES:
            raise ValueError(f"weights must be one of {_WEIGHT_MODES}, got {weights!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.basis = get_basis(basis)
        self.spec = TensorProductSpec(irreps1, irreps2, filter_out, paths)
        self.irreps_in1, self.irreps_in2 = Irreps(irreps1), Irreps(irreps2)
        self.irreps_out = self.spec.irreps_out
        self.channels, self.weight_mode, self.x2_has_channels = channels, weights, x2_has_channels
        U = self.spec.coupling(self.basis, dtype=torch.get_default_dtype())
        d1, d2, dout = U.shape
        if x2_has_channels:  # contract the outer product x1 ⊗ x2 with U in one matrix product
            self.register_buffer("coupling", U.reshape(d1 * d2, dout).clone(), persistent=False)
        else:  # first x2 with U per row, then a batched product with x1
            self.register_buffer("coupling", U.permute(1, 0, 2).reshape(d2, d1 * dout).clone(), persistent=False)
        self.register_buffer("path_index", self.spec.output_path_index(), persistent=False)
        if weights == "internal":
            self.weight = torch.nn.Parameter(torch.randn(channels, self.spec.num_paths))

    @property
    def num_paths(self) -> int:
        return self.spec.num_paths

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        d1, d2 = self.irreps_in1.dim, self.irreps_in2.dim
        if x1.dim() != 3 or x1.shape[1:] != (self.channels, d1):
            raise ValueError(f"x1 must have shape [N, {self.channels}, {d1}], got {tuple(x1.shape)}")
        n = x1.shape[0]
        if self.x2_has_channels:
            if x2.shape != (n, self.channels, d2):
                raise ValueError(f"x2 must have shape [{n}, {self.channels}, {d2}], got {tuple(x2.shape)}")
            outer = (x1.unsqueeze(-1) * x2.unsqueeze(-2)).reshape(n * self.channels, d1 * d2)
            out = (outer @ self.coupling).reshape(n, self.channels, -1)
        else:
            if x2.shape != (n, d2):
                raise ValueError(f"x2 must have shape [{n}, {d2}], got {tuple(x2.shape)}")
            M = (x2 @ self.coupling).reshape(n, d1, -1)
            out = torch.bmm(x1, M)
        if self.weight_mode == "external":
            expected = (n, self.channels, self.num_paths)
            if weights is None or weights.shape != expected:
                got = None if weights is None else tuple(weights.shape)
                raise ValueError(f"weights must have shape {list(expected)}, got {got}")
            out = out * weights[..., self.path_index]
        elif self.weight_mode == "internal":
            out = out * self.weight[:, self.path_index]
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out.simplify()}, "
            f"channels={self.channels}, paths={self.num_paths}, basis={self.basis.name}, weights={self.weight_mode}"
        )
