"""Execution of channel-wise tensor products: every path in one batched contraction."""

from __future__ import annotations

import torch

from tensorfuse.o3 import Irreps, TensorProductSpec, get_basis

_WEIGHT_MODES = ("external", "internal", "none")


def _scale_paths(y: torch.Tensor, w: torch.Tensor, blocks, out: torch.Tensor | None = None) -> torch.Tensor:
    """``y[..., o] * w[..., path(o)]`` by broadcasting over each degree's ``[paths, 2l+1]`` block.

    With ``out`` (which may be ``y`` itself) the result is written there without autograd; without
    it the result is a new, differentiable tensor.
    """
    lead = y.shape[:-1]

    def view(t, l, paths, outputs):
        return t[..., outputs].view(lead + (paths.stop - paths.start, 2 * l + 1))

    if out is not None:
        for l, paths, outputs in blocks:
            torch.mul(view(y, l, paths, outputs), w[..., paths].unsqueeze(-1), out=view(out, l, paths, outputs))
        return out
    return torch.cat(
        [(view(y, *b) * w[..., b[1]].unsqueeze(-1)).reshape(lead + (-1,)) for b in blocks], dim=-1
    )


def _sum_paths(y: torch.Tensor, blocks, num_paths: int) -> torch.Tensor:
    """``sum_{o in path} y[..., o]``: the adjoint of :func:`_scale_paths` with respect to ``w``."""
    lead = y.shape[:-1]
    return torch.cat(
        [y[..., outputs].reshape(lead + (paths.stop - paths.start, 2 * l + 1)).sum(-1) for l, paths, outputs in blocks],
        dim=-1,
    )


class _WeightedSharedProduct(torch.autograd.Function):
    """``out = (x1 @ (x2 @ U)) * w[..., path]``, saving only the inputs for the backward pass.

    The ``[N, C, D_out]`` product is the largest tensor of the layer: it is neither kept for the
    backward pass (which recomputes it) nor copied for the weights (which are broadcast over each
    degree's block in place). The backward is written with differentiable operations, so second
    derivatives (forces in a training loss) work; it works in place only when no graph is built.
    """

    @staticmethod
    def forward(ctx, x1, x2, w, coupling, blocks):
        n, _, d1 = x1.shape
        y = torch.bmm(x1, (x2 @ coupling).reshape(n, d1, coupling.shape[1] // d1))
        ctx.save_for_backward(x1, x2, w, coupling)
        ctx.blocks = blocks
        return _scale_paths(y, w, blocks, out=y)

    @staticmethod
    def backward(ctx, grad):
        x1, x2, w, coupling = ctx.saved_tensors
        blocks, in_place = ctx.blocks, not torch.is_grad_enabled()
        n, _, d1 = x1.shape
        M = (x2 @ coupling).reshape(n, d1, coupling.shape[1] // d1)
        grad_x1 = grad_x2 = grad_w = None
        if ctx.needs_input_grad[2]:  # first, while nothing else of the output's size is alive
            y = torch.bmm(x1, M)
            y = y.mul_(grad) if in_place else y * grad
            grad_w = _sum_paths(y, blocks, w.shape[-1])
            del y
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_y = _scale_paths(grad, w, blocks, out=torch.empty_like(grad) if in_place else None)
            if ctx.needs_input_grad[0]:
                grad_x1 = torch.bmm(grad_y, M.transpose(1, 2))
            del M
            if ctx.needs_input_grad[1]:
                grad_x2 = torch.bmm(x1.transpose(1, 2), grad_y).reshape(n, coupling.shape[1]) @ coupling.T
        return grad_x1, grad_x2, grad_w, None, None


class ChannelwiseTensorProduct(torch.nn.Module):
    """Channel-wise product of features ``x1`` with ``x2``, one weight per channel and path.

    ``x1`` is ``[N, C, irreps1.dim]``. ``x2`` is ``[N, irreps2.dim]``, shared by all channels (the
    message of an edge: neighbour features times edge harmonics, e3nn's "uvu"), or
    ``[N, C, irreps2.dim]`` when ``x2_has_channels`` (channel by channel, "uuu"). The output is
    ``[N, C, irreps_out.dim]`` with one block per path (see :class:`~tensorfuse.o3.TensorProductSpec`).

    Weights: ``"external"`` (``[N, C, num_paths]`` passed to ``forward``, e.g. from a radial MLP),
    ``"internal"`` (a learnable ``[C, num_paths]`` parameter) or ``"none"``.

    Execution: all paths are stacked in one coupling tensor ``U[D1, D2, D_out]``. With a shared
    ``x2`` the layer computes ``M = x2 @ U`` (``[N, D1, D_out]``, no channels) and one batched
    product ``x1 @ M``; then one in-place multiplication by the weights, and the backward pass
    recomputes the product rather than keeping it (only inputs are saved). Zero blocks of ``U``
    (pairs of irreps a path does not connect) are multiplied too: on CPU the cost of a layer like
    this is dominated by passes over the ``[N, C, D_out]`` output, and grouping paths by input
    irrep to skip the zeros measured slower (more passes) at every ``l_max`` from 1 to 4
    (``benchmarks/tensor_products.py``). The basis only changes ``U``.
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
        if x2_has_channels:  # rows (i, j): contracted with the outer product x1 ⊗ x2
            coupling = U.reshape(d1 * d2, dout)
        else:  # rows j: contracted with x2 first, then with x1
            coupling = U.permute(1, 0, 2).reshape(d2, d1 * dout)
        self.register_buffer("coupling", coupling.clone(), persistent=False)
        self.register_buffer("path_index", self.spec.output_path_index(), persistent=False)
        self._blocks = self.spec.degree_blocks()
        if weights == "internal":
            self.weight = torch.nn.Parameter(torch.randn(channels, self.spec.num_paths))

    @property
    def num_paths(self) -> int:
        return self.spec.num_paths

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        d1, d2, channels, num_paths = self.irreps_in1.dim, self.irreps_in2.dim, self.channels, self.num_paths
        if x1.dim() != 3 or x1.shape[1:] != (channels, d1):
            raise ValueError(f"x1 must have shape [N, {channels}, {d1}], got {tuple(x1.shape)}")
        n = x1.shape[0]
        x2_shape = (n, channels, d2) if self.x2_has_channels else (n, d2)
        if x2.shape != x2_shape:
            raise ValueError(f"x2 must have shape {list(x2_shape)}, got {tuple(x2.shape)}")
        if self.weight_mode == "external":
            if weights is None or weights.shape != (n, channels, num_paths):
                got = None if weights is None else tuple(weights.shape)
                raise ValueError(f"weights must have shape {[n, channels, num_paths]}, got {got}")
        elif self.weight_mode == "internal":
            weights = self.weight.expand(n, channels, num_paths)

        if self.x2_has_channels:
            outer = (x1.unsqueeze(-1) * x2.unsqueeze(-2)).reshape(n * channels, d1 * d2)
            out = (outer @ self.coupling).reshape(n, channels, self.irreps_out.dim)
            return out if weights is None else _scale_paths(out, weights, self._blocks)
        if weights is None:
            return torch.bmm(x1, (x2 @ self.coupling).reshape(n, d1, self.irreps_out.dim))
        return _WeightedSharedProduct.apply(x1, x2, weights, self.coupling, self._blocks)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out.simplify()}, "
            f"channels={self.channels}, paths={self.num_paths}, basis={self.basis.name}, weights={self.weight_mode}"
        )
