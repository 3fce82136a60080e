"""Many-body product basis: weighted sums of products of the atomic density ``A`` with itself.

For correlation order ``nu``, every variant spans equivariant polynomials of degree ``1..nu`` in
``A`` (body order ``nu + 1``). Products are built by iterated two-factor products
``P_nu = P_(nu-1) ⊗ A`` (ICTP's scheme, or equivalently caterpillar fusion trees), one coupling
per irrep triple, so nothing of size ``dim(A)**nu`` is ever formed and correlation 4-5 stay cheap
to build. Variants (ICTP, Zaverkin et al. 2024):

* ``"full"``: every ordered path kept, one weight per species, channel and path;
* ``"symmetric"``: as full, but the first product ``A ⊗ A`` keeps one of each pair of swapped
  paths and drops those that vanish for identical factors (odd couplings of an irrep with itself);
* ``"latent"``: symmetric products in a smaller latent channel space (``A`` projected down), then
  weights that couple latent channels, paths and species to the output channels.

The last product is evaluated Horner-style: the weighted sum over paths of ``P_(nu-1)`` is taken
*before* the final coupling with ``A``, so the largest set of paths is never materialized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tensorfuse.nn._linear import IrrepsLinear, irrep_offsets
from tensorfuse.o3 import Irrep, Irreps, get_basis

VARIANTS = ("full", "symmetric", "latent")


@dataclass(frozen=True)
class _Group:
    """All paths ``(q, a) -> ir_out`` sharing the irrep of ``q``, the factor ``a`` and ``ir_out``."""

    ir_q: Irrep
    a: int  # index of the irrep of A
    ir_out: Irrep
    q_copies: tuple[int, ...]  # which copies of ir_q in the previous product take part


def _total(terms: list[torch.Tensor]) -> torch.Tensor:
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _a_irreps(irreps_a: Irreps) -> list[Irrep]:
    return [ir for mul, ir in irreps_a for _ in range(mul)]


class _ProductPlan:
    """Which paths each ``P_nu`` has, and how its storage is laid out (pure bookkeeping)."""

    def __init__(self, irreps_a: Irreps, irreps_out: Irreps, correlation: int, symmetric: bool, l_internal: int):
        self.a_irreps = _a_irreps(irreps_a)
        out_types = {ir for _, ir in irreps_out}
        # layers[nu] = list of (irrep of each stored path) for the materialized products nu = 1..nu_max-1
        self.layers: list[list[Irrep]] = [list(self.a_irreps)]
        self.groups: list[list[_Group]] = [[]]  # groups that produced each materialized layer
        for nu in range(2, correlation + 1):
            previous = self.layers[-1]
            last = nu == correlation
            keep = (lambda ir: ir in out_types) if last else (lambda ir: ir.l <= l_internal)
            groups = []
            copies_by_type = irrep_offsets(Irreps([(1, ir) for ir in previous]))
            for ir_q in copies_by_type:
                q_indices = [i for i, ir in enumerate(previous) if ir == ir_q]
                for a, ir_a in enumerate(self.a_irreps):
                    for ir_out in ir_q * ir_a:
                        if not keep(ir_out):
                            continue
                        if symmetric and nu == 2:
                            # q indexes the irreps of A too: keep q <= a, and for q == a only the
                            # couplings that survive identical factors (even l1 + l2 - l3).
                            copies = tuple(
                                k for k, q in enumerate(q_indices)
                                if q < a or (q == a and (2 * ir_a.l - ir_out.l) % 2 == 0)
                            )
                        else:
                            copies = tuple(range(len(q_indices)))
                        if copies:
                            groups.append(_Group(ir_q, a, ir_out, copies))
            self.groups.append(groups)
            if not last:
                self.layers.append([g.ir_out for g in groups for _ in g.q_copies])
        self.final_groups = self.groups[-1] if correlation >= 2 else []


class ProductBasis(torch.nn.Module):
    """``B = sum_nu sum_paths w[species, channel, path] P_nu``, then nothing else (no linear).

    Input ``A``: ``[N, C, irreps_a.dim]``, species ``[N]``. Output ``[N, C, irreps_out.dim]`` with
    ``irreps_out`` per channel (each irrep once). ``l_internal`` caps the degree of intermediate
    products (default: the largest degree of ``A``).
    """

    def __init__(
        self,
        irreps_a,
        irreps_out,
        channels: int,
        correlation: int,
        num_species: int,
        variant: str = "symmetric",
        basis="spherical",
        l_internal: int | None = None,
        latent_channels: int | None = None,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"product basis variant must be one of {VARIANTS}, got {variant!r}")
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        self.irreps_a, self.irreps_out = Irreps(irreps_a), Irreps(irreps_out)
        for mul, ir in self.irreps_out:
            if mul != 1:
                raise ValueError(f"irreps_out must hold each irrep once per channel, got {self.irreps_out}")
        self.basis, self.variant, self.correlation = get_basis(basis), variant, correlation
        self.channels, self.num_species = channels, num_species
        l_internal = self.irreps_a.lmax if l_internal is None else l_internal
        self.latent = variant == "latent"
        self.work_channels = (latent_channels or max(channels // 4, 1)) if self.latent else channels
        plan = _ProductPlan(self.irreps_a, self.irreps_out, correlation, variant != "full", l_internal)
        self._plan = plan
        if self.latent:
            self.down = IrrepsLinear(self.irreps_a, self.irreps_a, channels, self.work_channels)

        # couplings for every group, normalized to unit-variance outputs
        dtype = torch.get_default_dtype()
        self._couplings: dict[tuple[int, int, int], str] = {}
        for groups in plan.groups[1:]:
            for g in groups:
                key = (g.ir_q.l, plan.a_irreps[g.a].l, g.ir_out.l)
                if key not in self._couplings:
                    name = f"coupling_{key[0]}_{key[1]}_{key[2]}"
                    C = self.basis.path_coupling(*key, dtype=dtype) * math.sqrt(2 * key[2] + 1)
                    self.register_buffer(name, C.clone(), persistent=False)
                    self._couplings[key] = name

        # storage offsets of the materialized products
        a_offsets = Irreps([(1, ir) for ir in plan.a_irreps]).slices()
        self._a_slices = a_offsets
        self._layer_copies = [irrep_offsets(Irreps([(1, ir) for ir in layer])) for layer in plan.layers]

        out_types = [ir for _, ir in self.irreps_out]
        if self.latent:
            # every materialized path that is an output irrep, then a species-dependent linear map;
            # the order is the one _latent_forward concatenates them in
            terms = [
                (len(offs), ir)
                for offsets in self._layer_copies
                for ir, offs in offsets.items()
                if ir in out_types
            ]  # the order of _latent_forward: layer by layer, irrep types in order of appearance
            terms += [(len(g.q_copies), g.ir_out) for g in plan.final_groups]
            path_irreps = Irreps(terms)
            self._latent_irreps = path_irreps
            self.mix = IrrepsLinear(path_irreps, self.irreps_out, self.work_channels, channels, num_species)
        else:
            # weights of the intermediate products (paths that are outputs), then of the Horner step
            self._collapse: list[list[tuple[Irrep, list[int]]]] = []
            counts = []
            for layer in plan.layers:
                entries = []
                offsets = irrep_offsets(Irreps([(1, ir) for ir in layer]))
                for ir in out_types:
                    if ir in offsets:
                        entries.append((ir, offsets[ir]))
                self._collapse.append(entries)
                counts.append(sum(len(o) for _, o in entries))
            final_count = sum(len(g.q_copies) for g in plan.final_groups)
            paths_per_output = {ir: 0 for ir in out_types}
            for entries in self._collapse:
                for ir, offs in entries:
                    paths_per_output[ir] += len(offs)
            for g in plan.final_groups:
                paths_per_output[g.ir_out] += len(g.q_copies)
            self.num_paths = sum(counts) + final_count
            self._paths_per_output = paths_per_output
            self.weights = torch.nn.Parameter(torch.randn(num_species, channels, self.num_paths))
            # scale so that each output sums unit-variance terms to unit variance at initialization
            scale = torch.ones(self.num_paths)
            start = 0
            for entries in self._collapse:
                for ir, offs in entries:
                    scale[start : start + len(offs)] = 1 / math.sqrt(paths_per_output[ir])
                    start += len(offs)
            for g in plan.final_groups:
                scale[start : start + len(g.q_copies)] = 1 / math.sqrt(paths_per_output[g.ir_out])
                start += len(g.q_copies)
            self.register_buffer("path_scale", scale, persistent=False)
            self._weight_chunks = [len(offs) for entries in self._collapse for _, offs in entries]
            self._weight_chunks += [len(g.q_copies) for g in plan.final_groups]
        missing = [ir for ir in out_types if not self._reachable(ir)]
        if missing:
            raise ValueError(
                f"output irreps {missing} cannot be reached from A = {self.irreps_a} with correlation {correlation}"
            )

    def _reachable(self, ir: Irrep) -> bool:
        plan = self._plan
        if any(ir in layer for layer in plan.layers):
            return True
        return any(g.ir_out == ir for g in plan.final_groups)

    # -- execution -----------------------------------------------------------------------------
    # Products are kept as {irrep type: [N, C, copies, d]}; A as a list of [N, C, d] blocks. Inputs
    # are split once rather than sliced per group: the backward of a slice fills a zero tensor of
    # the full size, which with dozens of groups dominated the cost.
    def _couple(self, x: torch.Tensor, a: torch.Tensor, key) -> torch.Tensor:
        """``x`` ``[N, C, q, i]`` coupled with ``a`` ``[N, C, j]``: ``[N, C, q, o]`` in one GEMM."""
        C = getattr(self, self._couplings[key])
        n, c, q, i = x.shape
        j, o = a.shape[-1], C.shape[-1]
        outer = (x.unsqueeze(-1) * a.view(n, c, 1, 1, j)).reshape(n * c * q, i * j)
        return (outer @ C.reshape(i * j, o)).view(n, c, q, o)

    def _products(self, A_blocks: list[torch.Tensor]) -> list[dict[Irrep, torch.Tensor]]:
        """The materialized products ``P_1 = A, ..., P_(nu-1)`` as {irrep: [N, C, copies, d]}."""
        first: dict[Irrep, list[torch.Tensor]] = {}
        for ir, block in zip(self._plan.a_irreps, A_blocks):
            first.setdefault(ir, []).append(block.unsqueeze(2))
        layers = [{ir: torch.cat(b, dim=2) if len(b) > 1 else b[0] for ir, b in first.items()}]
        for nu in range(1, len(self._plan.layers)):
            previous, grown = layers[-1], {}
            for g in self._plan.groups[nu]:
                x = self._select(previous[g.ir_q], g.q_copies)
                key = (g.ir_q.l, self._plan.a_irreps[g.a].l, g.ir_out.l)
                grown.setdefault(g.ir_out, []).append(self._couple(x, A_blocks[g.a], key))
            layers.append({ir: torch.cat(b, dim=2) if len(b) > 1 else b[0] for ir, b in grown.items()})
        return layers

    @staticmethod
    def _select(x: torch.Tensor, copies) -> torch.Tensor:
        if len(copies) == x.shape[2]:
            return x
        return x.index_select(2, torch.tensor(copies, device=x.device))

    def forward(self, A: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if A.dim() != 3 or A.shape[1:] != (self.channels, self.irreps_a.dim):
            raise ValueError(f"A must have shape [N, {self.channels}, {self.irreps_a.dim}], got {tuple(A.shape)}")
        if self.latent:
            A = self.down(A)
        A_blocks = list(A.split([ir.dim for ir in self._plan.a_irreps], dim=-1))
        layers = self._products(A_blocks)
        if self.latent:
            return self._latent_forward(A_blocks, layers, species)

        n, c = A.shape[:2]
        onehot = torch.nn.functional.one_hot(species, self.num_species).to(A.dtype)
        W = (onehot @ self.weights.view(self.num_species, -1)).view(n, c, -1) * self.path_scale
        W_chunks = iter(W.split(self._weight_chunks, dim=-1))
        terms: dict[Irrep, list[torch.Tensor]] = {}
        for layer, entries in zip(layers, self._collapse):
            for ir, offs in entries:
                w = next(W_chunks)
                terms.setdefault(ir, []).append((layer[ir] * w.unsqueeze(-1)).sum(2))
        if self._plan.final_groups:
            last = layers[-1]
            for g in self._plan.final_groups:
                w = next(W_chunks)
                s = (self._select(last[g.ir_q], g.q_copies) * w.unsqueeze(-1)).sum(2, keepdim=True)
                key = (g.ir_q.l, self._plan.a_irreps[g.a].l, g.ir_out.l)
                terms.setdefault(g.ir_out, []).append(self._couple(s, A_blocks[g.a], key).squeeze(2))
        return torch.cat([_total(terms[ir]) for _, ir in self.irreps_out], dim=-1)

    def _latent_forward(self, A_blocks, layers, species):
        n, c = A_blocks[0].shape[:2]
        out_types = {ir for _, ir in self.irreps_out}
        pieces = []
        for layer in layers:
            for ir, x in layer.items():
                if ir in out_types:
                    pieces.append(x.reshape(n, c, -1))
        last = layers[-1]
        for g in self._plan.final_groups:
            key = (g.ir_q.l, self._plan.a_irreps[g.a].l, g.ir_out.l)
            pieces.append(self._couple(self._select(last[g.ir_q], g.q_copies), A_blocks[g.a], key).reshape(n, c, -1))
        return self.mix(torch.cat(pieces, dim=-1), species)

    def extra_repr(self) -> str:
        return (
            f"A={self.channels}x({self.irreps_a}) -> {self.irreps_out}, correlation={self.correlation}, "
            f"variant={self.variant}, basis={self.basis.name}"
        )
