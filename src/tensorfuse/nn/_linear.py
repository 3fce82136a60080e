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


def select_species(values: torch.Tensor, species: torch.Tensor, num_species: int) -> torch.Tensor:
    """``values[n, ..., species[n], ...]`` for ``values`` ``[N, ..., Z, F]`` via a one-hot product.

    A matrix product with the one-hot matrix is faster on CPU than advanced indexing, and so is
    its backward (a matrix product instead of an indexed scatter).
    """
    onehot = torch.nn.functional.one_hot(species, num_species).to(values.dtype)  # [N, Z]
    lead = values.shape[1:-2]
    flat = values.reshape(values.shape[0], -1, num_species, values.shape[-1])
    picked = torch.einsum("nkzf,nz->nkf", flat, onehot)
    return picked.reshape((values.shape[0],) + lead + (values.shape[-1],))


def species_rows(values: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """``values[species[n]]`` for ``values`` ``[Z, ...]``: ``[N, ...]``, as a one-hot matrix product
    (faster on CPU than indexing, forward and backward)."""
    onehot = torch.nn.functional.one_hot(species, values.shape[0]).to(values.dtype)
    return (onehot @ values.reshape(values.shape[0], -1)).view((species.shape[0],) + values.shape[1:])


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

    def __init__(self, irreps_in, irreps_out, channels_in: int, channels_out: int, num_species: int | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.irreps_in, self.irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        self.channels_in, self.channels_out, self.num_species = channels_in, channels_out, num_species
        in_copies = [ir for mul, ir in self.irreps_in for _ in range(mul)]
        out_copies = [ir for mul, ir in self.irreps_out for _ in range(mul)]
        self._in_dims = [ir.dim for ir in in_copies]
        # per output irrep type: (irrep, input copy indices, number of output copies, weight index)
        self._types: list[tuple[Irrep, list[int], int, int]] = []
        self.weights = torch.nn.ParameterList()
        for ir in dict.fromkeys(out_copies):
            ins = [k for k, x in enumerate(in_copies) if x == ir]
            n_out = out_copies.count(ir)
            k = -1
            if ins:
                fan_in, fan_out = channels_in * len(ins), channels_out * n_out
                shape = (num_species, fan_in, fan_out) if num_species else (fan_in, fan_out)
                k = len(self.weights)
                self.weights.append(torch.nn.Parameter(torch.randn(*shape, dtype=dtype)))
            self._types.append((ir, ins, n_out, k))
        # the output, copy by copy in the order of irreps_out: (type index, copy within the type)
        seen: dict[Irrep, int] = {}
        type_index = {ir: t for t, (ir, _, _, _) in enumerate(self._types)}
        self._out_order = []
        for ir in out_copies:
            self._out_order.append((type_index[ir], seen.get(ir, 0)))
            seen[ir] = seen.get(ir, 0) + 1

    def species_axes(self) -> dict[str, int]:
        """Species-indexed tensors (name -> species axis): see :mod:`tensorfuse.model._transfer`."""
        return {f"weights.{k}": 0 for k in range(len(self.weights))} if self.num_species else {}

    def forward(self, x: torch.Tensor, species: torch.Tensor | None = None) -> torch.Tensor:
        n, c_in, c_out = x.shape[0], self.channels_in, self.channels_out
        if x.dim() != 3 or x.shape[1:] != (c_in, self.irreps_in.dim):
            raise ValueError(
                f"expected input [N, {c_in}, {self.irreps_in.dim}] for irreps {self.irreps_in}, got {tuple(x.shape)}"
            )
        if self.num_species and species is None:
            raise ValueError("this linear map depends on the species: pass `species`")
        blocks = x.split(self._in_dims, dim=-1)
        per_type = []  # each: the output copies of one irrep type, [N, C_out, n_out, d]
        for ir, ins, n_out, k in self._types:
            d = ir.dim
            if k < 0:
                per_type.append(x.new_zeros(n, c_out, n_out, d))
                continue
            xs = torch.stack([blocks[i] for i in ins], dim=2) if len(ins) > 1 else blocks[ins[0]].unsqueeze(2)
            # [N d, fan_in] as one matrix: a strided [N, d, fan_in] (a slice of x) would make matmul
            # run N small products (bmm against an expanded weight) instead of one
            xs = xs.permute(0, 3, 1, 2).reshape(n * d, c_in * len(ins))
            w = self.weights[k] * (1.0 / math.sqrt(c_in * len(ins)))
            if self.num_species:
                y = xs @ w.permute(1, 0, 2).reshape(c_in * len(ins), -1)  # all species at once
                y = select_species(y.view(n, d, self.num_species, c_out * n_out), species, self.num_species)
            else:
                y = xs @ w
            per_type.append(y.view(n, d, c_out, n_out).permute(0, 2, 3, 1))
        if len(self._out_order) == 1:
            return per_type[0].reshape(n, c_out, -1)
        pieces = [per_type[t][:, :, j] for t, j in self._out_order]
        return torch.cat(pieces, dim=-1)

    def extra_repr(self) -> str:
        species = f", per species ({self.num_species})" if self.num_species else ""
        return f"{self.channels_in}x({self.irreps_in}) -> {self.channels_out}x({self.irreps_out}){species}"
