"""Equivariant linear maps: channel (and copy) mixing within each irrep, optionally per species."""

from __future__ import annotations

import math

import torch

from tensorfuse.o3 import Irrep, Irreps


def irrep_offsets(irreps) -> dict[Irrep, list[int]]:
    """For each irrep type (in order of first appearance), the offsets of its copies in one channel."""
    out: dict[Irrep, list[int]] = {}
    offset = 0
    for mul, ir in Irreps(irreps):
        for _ in range(mul):
            out.setdefault(ir, []).append(offset)
            offset += ir.dim
    return out


class IrrepsLinear(torch.nn.Module):
    """``[N, C_in, irreps_in.dim] -> [N, C_out, irreps_out.dim]``, mixing channels and copies.

    For every irrep type in ``irreps_out`` its output copies are learnable linear combinations of
    all ``C_in x (copies in irreps_in)`` input vectors of that irrep; the ``2l+1`` components are
    never mixed, so the map is equivariant in either basis. Output irreps the input lacks are zero.
    With ``num_species`` the weights depend on each node's species (``species`` ``[N]`` in
    ``forward``), as MACE's self-connection does.

    Weights are N(0, 1), scaled by ``1/sqrt(fan_in)`` in the forward pass: unit-variance inputs give
    unit-variance outputs at initialization.
    """

    def __init__(self, irreps_in, irreps_out, channels_in: int, channels_out: int, num_species: int | None = None):
        super().__init__()
        self.irreps_in, self.irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        self.channels_in, self.channels_out, self.num_species = channels_in, channels_out, num_species
        offsets_in, offsets_out = irrep_offsets(self.irreps_in), irrep_offsets(self.irreps_out)
        # The output is produced irrep type by irrep type ("blocks"); remember each type's plan.
        self._blocks: list[tuple[Irrep, int, int, int]] = []  # (irrep, copies in, copies out, weight index)
        self.weights = torch.nn.ParameterList()
        for ir, outs in offsets_out.items():
            ins = offsets_in.get(ir, [])
            weight_index = -1
            if ins:
                fan_in, fan_out = channels_in * len(ins), channels_out * len(outs)
                shape = (num_species, fan_in, fan_out) if num_species else (fan_in, fan_out)
                weight_index = len(self.weights)
                self.weights.append(torch.nn.Parameter(torch.randn(*shape)))
                index = torch.tensor([o + m for o in ins for m in range(ir.dim)])
                self.register_buffer(f"index_{weight_index}", index, persistent=False)
            self._blocks.append((ir, len(ins), len(outs), weight_index))
        # Permutation from the block order back to the order of irreps_out.
        block_start, start = {}, 0
        for ir, outs in offsets_out.items():
            block_start[ir] = start
            start += len(outs) * ir.dim
        seen: dict[Irrep, int] = {}
        order = []
        for mul, ir in self.irreps_out:
            for _ in range(mul):
                k = seen.get(ir, 0)
                seen[ir] = k + 1
                order.extend(block_start[ir] + k * ir.dim + m for m in range(ir.dim))
        order_tensor = torch.tensor(order, dtype=torch.long)
        self._reorder = not torch.equal(order_tensor, torch.arange(len(order)))
        self.register_buffer("output_order", order_tensor, persistent=False)

    def forward(self, x: torch.Tensor, species: torch.Tensor | None = None) -> torch.Tensor:
        n, c_in = x.shape[0], self.channels_in
        if x.dim() != 3 or x.shape[1:] != (c_in, self.irreps_in.dim):
            raise ValueError(
                f"expected input [N, {c_in}, {self.irreps_in.dim}] for irreps {self.irreps_in}, got {tuple(x.shape)}"
            )
        if self.num_species and species is None:
            raise ValueError("this linear map depends on the species: pass `species`")
        pieces = []
        for ir, n_in, n_out, k in self._blocks:
            d = ir.dim
            if k < 0:
                pieces.append(x.new_zeros(n, self.channels_out, n_out * d))
                continue
            xs = x[:, :, getattr(self, f"index_{k}")].reshape(n, c_in, n_in, d)
            xs = xs.permute(0, 3, 1, 2).reshape(n, d, c_in * n_in)
            w = self.weights[k] * (1.0 / math.sqrt(c_in * n_in))
            if self.num_species:
                y = xs @ w.permute(1, 0, 2).reshape(c_in * n_in, -1)  # all species at once
                y = y.view(n, d, self.num_species, -1)[torch.arange(n, device=x.device), :, species]
            else:
                y = xs @ w
            y = y.reshape(n, d, self.channels_out, n_out).permute(0, 2, 3, 1)  # [N, C_out, copies, d]
            pieces.append(y.reshape(n, self.channels_out, n_out * d))
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
        return out[:, :, self.output_order] if self._reorder else out

    def extra_repr(self) -> str:
        species = f", per species ({self.num_species})" if self.num_species else ""
        return f"{self.channels_in}x({self.irreps_in}) -> {self.channels_out}x({self.irreps_out}){species}"
