"""Equivariant linear maps: channel (and copy) mixing within each irrep, optionally per species."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from tensorfuse.nn._kernels import load_kernel
from tensorfuse.nn._tensor_product import _is_batched, _used_gradients
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
        self._scales = [1.0 / math.sqrt(channels_in * max(len(ins), 1)) for _, ins, _, _ in self._types]
        # the output, copy by copy in the order of irreps_out: (type index, copy within the type)
        seen: dict[Irrep, int] = {}
        type_index = {ir: t for t, (ir, _, _, _) in enumerate(self._types)}
        self._out_order = []
        for ir in out_copies:
            self._out_order.append((type_index[ir], seen.get(ir, 0)))
            seen[ir] = seen.get(ir, 0) + 1
        self.fused = True  # eager CPU calls by the fused kernel (False: the tensor path only)
        self._kernel_tables = None

    def species_axes(self) -> dict[str, int]:
        """Species-indexed tensors (name -> species axis): see :mod:`tensorfuse.model._transfer`."""
        return {f"weights.{k}": 0 for k in range(len(self.weights))} if self.num_species else {}

    def forward(self, x: torch.Tensor, species: torch.Tensor | None = None) -> torch.Tensor:
        c_in = self.channels_in
        if x.dim() != 3 or x.shape[1:] != (c_in, self.irreps_in.dim):
            raise ValueError(
                f"expected input [N, {c_in}, {self.irreps_in.dim}] for irreps {self.irreps_in}, got {tuple(x.shape)}"
            )
        if self.num_species and species is None:
            raise ValueError("this linear map depends on the species: pass `species`")
        matrices = self._matrices()
        tables = self._kernel(x)
        if tables is not None:
            species = species.long().contiguous() if self.num_species else x.new_zeros(0, dtype=torch.long)
            if torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in matrices)):
                return _KernelLinear.apply(tables, False, x, species, self._tensor_map, *matrices)
            return _run(tables, False, x, species, matrices)
        return self._tensor_map(x, species, *matrices)

    def _matrices(self) -> list[torch.Tensor]:
        """Each weight as one matrix ``[C_in copies_in, Z C_out copies_out]`` (rows ``(c, s)``,
        columns ``(z, o, q)``): what both execution paths multiply by."""
        if not self.num_species:
            return list(self.weights)
        return [w.permute(1, 0, 2).reshape(w.shape[1], -1) for w in self.weights]

    def _tensor_map(self, x: torch.Tensor, species: torch.Tensor | None, *matrices: torch.Tensor) -> torch.Tensor:
        """The map by tensor operations (any device, traced graphs, batches of cotangents)."""
        n, c_in, c_out = x.shape[0], self.channels_in, self.channels_out
        blocks = x.split(self._in_dims, dim=-1)
        per_type = []  # each: the output copies of one irrep type, [N, C_out, n_out, d]
        for (ir, ins, n_out, k), scale in zip(self._types, self._scales):
            d = ir.dim
            if k < 0:
                per_type.append(x.new_zeros(n, c_out, n_out, d))
                continue
            xs = torch.stack([blocks[i] for i in ins], dim=2) if len(ins) > 1 else blocks[ins[0]].unsqueeze(2)
            # [N d, fan_in] as one matrix: a strided [N, d, fan_in] (a slice of x) would make matmul
            # run N small products (bmm against an expanded weight) instead of one
            xs = xs.permute(0, 3, 1, 2).reshape(n * d, c_in * len(ins))
            y = xs @ (matrices[k] * scale)  # all species at once
            if self.num_species:
                y = select_species(y.view(n, d, self.num_species, c_out * n_out), species, self.num_species)
            per_type.append(y.view(n, d, c_out, n_out).permute(0, 2, 3, 1))
        if len(self._out_order) == 1:
            return per_type[0].reshape(n, c_out, -1)
        pieces = [per_type[t][:, :, j] for t, j in self._out_order]
        return torch.cat(pieces, dim=-1)

    def _kernel(self, x: torch.Tensor):
        """The fused CPU kernel and its tables where it applies (eager calls), else ``None``."""
        if not self.fused or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return None
        if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling() or _is_batched(x):
            return None  # traced graphs keep the tensor path (the compiler fuses it)
        module = load_kernel("linear")
        if module is None:
            return None
        if self._kernel_tables is None:
            in_offsets = [sum(self._in_dims[:i]) for i in range(len(self._in_dims))]
            out_offsets: dict[int, list[int]] = {}
            column = 0
            for t, _ in self._out_order:
                out_offsets.setdefault(t, []).append(column)
                column += self._types[t][0].dim
            rows, a_off, b_off = [], [], []
            for t, (ir, ins, n_out, k) in enumerate(self._types):
                rows.append([ir.dim, len(ins), n_out, k, len(a_off), len(b_off)])
                a_off += [in_offsets[i] for i in ins]
                b_off += out_offsets[t]
            long = dict(dtype=torch.long)
            self._kernel_tables = _LinearTables(
                torch.tensor(rows, **long).view(-1, 6), torch.tensor(a_off, **long), torch.tensor(b_off, **long),
                self._scales, self.channels_in, self.irreps_in.dim, self.channels_out, self.irreps_out.dim,
                self.num_species or 1, bool(self.num_species))
        return self._kernel_tables

    def extra_repr(self) -> str:
        species = f", per species ({self.num_species})" if self.num_species else ""
        return f"{self.channels_in}x({self.irreps_in}) -> {self.channels_out}x({self.irreps_out}){species}"


class _LinearTables(NamedTuple):
    """The plan of one map in the kernel's (``_linear_kernel.cpp``) layout: per irrep type
    ``(d, copies in, copies out, weight index, start in a_off, start in b_off)``. Plain data (the
    module is deep-copied with it, as the EMA of training does)."""

    types: torch.Tensor
    a_off: torch.Tensor
    b_off: torch.Tensor
    scales: list[float]
    c_a: int
    d_a: int
    c_b: int
    d_b: int
    num_species: int  # 1 without species
    per_species: bool

    @property
    def module(self):
        return load_kernel("linear")


class _KernelLinear(torch.autograd.Function):
    """``y = L(x; W)`` (``transposed`` False: side A ``[N, C_in, D_in]`` to side B) or ``L^T(x; W)``
    (side B to side A), by the kernel; ``W``: the matrices of :meth:`IrrepsLinear._matrices`.

    ``L`` is bilinear in ``(x, W)``, so its derivatives are the same three kernels again: in ``x``
    the transposed map, in ``W`` :class:`_KernelWeightGrad`, whose own derivatives are ``L`` and
    ``L^T``. Any order of derivative therefore stays on the kernels (forces, training on forces).
    A batch of cotangents (vmap) differentiates the tensor path ``tensor_map`` instead.
    """

    @staticmethod
    def forward(ctx, tables, transposed, x, species, tensor_map, *matrices):
        ctx.save_for_backward(x, species, *matrices)
        ctx.tables, ctx.transposed, ctx.tensor_map = tables, transposed, tensor_map
        return _run(tables, transposed, x, species, matrices)

    @staticmethod
    def backward(ctx, grad):
        x, species, *matrices = ctx.saved_tensors
        tables, transposed = ctx.tables, ctx.transposed
        used = _used_gradients(ctx, None, None, x, None, None, *matrices)
        need_x, need_w = used[2], any(used[5:])
        if _is_batched(grad):
            if transposed:
                raise RuntimeError("tensorfuse: batched cotangents of the linear map's second derivatives are "
                                   "not supported")
            with torch.enable_grad():  # vmap batches the tensor path, not the kernel
                out = ctx.tensor_map(x, species if tables.per_species else None, *matrices)
                inputs = [t for t, need in zip((x, *matrices), used[2:3] + used[5:]) if need]
                grads = iter(torch.autograd.grad(out, inputs, grad, create_graph=torch.is_grad_enabled())
                             if inputs else ())
            grad_x = next(grads) if need_x else None
            return (None, None, grad_x, None, None) + tuple(next(grads) if u else None for u in used[5:])
        graph = torch.is_grad_enabled()  # a graph of this backward is wanted (forces in a loss)
        grad_x = grad_w = None
        if need_x:
            grad_x = (_KernelLinear.apply(tables, not transposed, grad, species, ctx.tensor_map, *matrices) if graph
                      else _run(tables, not transposed, grad, species, matrices))
        if need_w:
            side_a, side_b = (grad, x) if transposed else (x, grad)
            grad_w = (_KernelWeightGrad.apply(tables, side_a, side_b, species, ctx.tensor_map, len(matrices)) if graph
                      else _weight_grad(tables, side_a, side_b, species, len(matrices)))
        grad_w = tuple(g if u else None for g, u in zip(grad_w, used[5:])) if need_w else (None,) * len(matrices)
        return (None, None, grad_x, None, None, *grad_w)


class _KernelWeightGrad(torch.autograd.Function):
    """``dW_t = scale_t X_t(a)^T G_t(b)`` (``a`` on side A, ``b`` on side B): ``L``'s derivative in
    its weights; its own derivatives are ``L^T(b; V)`` (in ``a``) and ``L(a; V)`` (in ``b``)."""

    @staticmethod
    def forward(ctx, tables, a, b, species, tensor_map, num_weights):
        ctx.save_for_backward(a, b, species)
        ctx.tables, ctx.tensor_map = tables, tensor_map
        return _weight_grad(tables, a, b, species, num_weights)

    @staticmethod
    def backward(ctx, *upstream):
        a, b, species = ctx.saved_tensors
        if any(_is_batched(u) for u in upstream):
            raise RuntimeError("tensorfuse: batched cotangents of the linear map's second derivatives are "
                               "not supported")
        need_a, need_b = _used_gradients(ctx, None, a, b)[1:3]
        grad_a = _KernelLinear.apply(ctx.tables, True, b, species, ctx.tensor_map, *upstream) if need_a else None
        grad_b = _KernelLinear.apply(ctx.tables, False, a, species, ctx.tensor_map, *upstream) if need_b else None
        return None, grad_a, grad_b, None, None, None


def _run(tables: _LinearTables, transposed: bool, x: torch.Tensor, species: torch.Tensor, matrices) -> torch.Tensor:
    t = tables
    if transposed:
        return t.module.transpose(x, list(matrices), species, t.types, t.a_off, t.b_off, t.scales, t.c_a, t.d_a,
                                  t.num_species)
    return t.module.apply(x, list(matrices), species, t.types, t.a_off, t.b_off, t.scales, t.c_b, t.d_b,
                          t.num_species)


def _weight_grad(tables: _LinearTables, a: torch.Tensor, b: torch.Tensor, species: torch.Tensor,
                 num_weights: int) -> tuple[torch.Tensor, ...]:
    t = tables
    return tuple(t.module.weight_grad(a, b, species, t.types, t.a_off, t.b_off, t.scales, num_weights, t.num_species))
