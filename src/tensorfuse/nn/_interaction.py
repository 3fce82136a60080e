"""Message passing: neighbour features times edge harmonics, weighted radially, summed per atom."""

from __future__ import annotations

import torch

from tensorfuse.nn._linear import IrrepsLinear
from tensorfuse.nn._radial import RadialMLP
from tensorfuse.nn._tensor_product import ChannelwiseTensorProduct
from tensorfuse.o3 import Irreps


class Interaction(torch.nn.Module):
    """``A_i = Linear( (1/avg_neighbors) sum_j R(r_ij) * ((W h_j) ⊗ H(r_ij)) )``.

    ``h``: node features ``[N, C, irreps_node.dim]``; ``H``: edge harmonics ``[E, irreps_edge.dim]``
    in the same basis; ``radial``: radial basis ``[E, num_radial]``. Returns the atomic density
    ``A`` ``[N, C, irreps_a.dim]``. The radial MLP gives one weight per edge, channel and path.

    With ``num_densities = K > 1`` it returns a list of ``K`` distinct densities, each with its own
    up-projection, radial weights and output linear map (the leaves of a "distinct" fusion block);
    their edge products run as one product of ``K * C`` channels.
    """

    def __init__(
        self,
        irreps_node,
        irreps_edge,
        irreps_a,
        channels: int,
        num_radial: int,
        radial_hidden: tuple[int, ...],
        avg_num_neighbors: float,
        basis,
        num_densities: int = 1,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if num_densities < 1:
            raise ValueError(f"num_densities must be >= 1, got {num_densities}")
        self.num_densities = num_densities
        self.irreps_node, self.irreps_edge, self.irreps_a = Irreps(irreps_node), Irreps(irreps_edge), Irreps(irreps_a)
        self.channels = channels
        self.avg_num_neighbors = float(avg_num_neighbors)
        wide = channels * num_densities
        self.linear_up = IrrepsLinear(self.irreps_node, self.irreps_node, channels, wide, dtype=dtype)
        self.product = ChannelwiseTensorProduct(
            self.irreps_node, self.irreps_edge, self.irreps_a, channels=wide, basis=basis, dtype=dtype
        )
        self.radial = RadialMLP([num_radial, *radial_hidden, wide * self.product.num_paths], dtype=dtype)
        if num_densities == 1:
            self.linear = IrrepsLinear(self.product.irreps_out, self.irreps_a, channels, channels, dtype=dtype)
        else:
            self.linear = torch.nn.ModuleList(
                IrrepsLinear(self.product.irreps_out, self.irreps_a, channels, channels, dtype=dtype)
                for _ in range(num_densities)
            )

    def forward(self, h: torch.Tensor, harmonics: torch.Tensor, radial: torch.Tensor, edge_index: torch.Tensor,
                receivers=None):
        """``receivers``: the densities of only the first ``receivers`` atoms (every edge's receiver
        among them; ``h`` holds the senders too)."""
        sender, receiver = edge_index
        n, e = h.shape[0], harmonics.shape[0]
        h = self.linear_up(h)
        weights = self.radial(radial).view(e, self.channels * self.num_densities, self.product.num_paths)
        density = self.product.aggregate(h, harmonics, weights, sender, receiver, n)[:receivers]
        density = density * (1.0 / self.avg_num_neighbors)
        if self.num_densities == 1:
            return self.linear(density)
        return [linear(part) for linear, part in zip(self.linear, density.split(self.channels, dim=1))]

    def extra_repr(self) -> str:
        densities = f", densities={self.num_densities}" if self.num_densities > 1 else ""
        return f"avg_num_neighbors={self.avg_num_neighbors:.3f}{densities}"
