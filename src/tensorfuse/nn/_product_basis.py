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
            ]
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
    def _block(self, x: torch.Tensor, offsets: list[int], copies, d: int) -> torch.Tensor:
        """The selected copies of one irrep type: ``[N, C, len(copies), d]``."""
        n, c = x.shape[:2]
        chosen = [offsets[k] for k in copies]
        if len(chosen) == 1 or all(b - a == d for a, b in zip(chosen, chosen[1:])):
            return x[:, :, chosen[0] : chosen[-1] + d].reshape(n, c, len(chosen), d)
        index = torch.tensor([o + m for o in chosen for m in range(d)], device=x.device)
        return x[:, :, index].reshape(n, c, len(chosen), d)

    def _products(self, A: torch.Tensor) -> list[torch.Tensor]:
        """The materialized products ``P_1 = A, P_2, ..., P_(nu-1)`` ``[N, C, dim]`` each."""
        layers = [A]
        for nu in range(1, len(self._plan.layers)):
            previous, offsets = layers[-1], self._layer_copies[nu - 1]
            blocks = []
            for g in self._plan.groups[nu]:
                x = self._block(previous, offsets[g.ir_q], g.q_copies, g.ir_q.dim)
                a = A[:, :, self._a_slices[g.a]]
                C = getattr(self, self._couplings[(g.ir_q.l, self._plan.a_irreps[g.a].l, g.ir_out.l)])
                t = torch.einsum("ncj,ijo->ncio", a, C)
                y = torch.einsum("ncqi,ncio->ncqo", x, t)
                blocks.append(y.reshape(y.shape[0], y.shape[1], -1))
            layers.append(torch.cat(blocks, dim=-1))
        return layers

    def forward(self, A: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if A.dim() != 3 or A.shape[1:] != (self.channels, self.irreps_a.dim):
            raise ValueError(f"A must have shape [N, {self.channels}, {self.irreps_a.dim}], got {tuple(A.shape)}")
        if self.latent:
            A = self.down(A)
        layers = self._products(A)
        n, c = A.shape[:2]
        if self.latent:
            return self._latent_forward(A, layers, species)

        W = self.weights[species] * self.path_scale  # [N, C, paths]
        outputs: dict[Irrep, torch.Tensor] = {}
        start = 0
        for layer, entries, offsets in zip(layers, self._collapse, self._layer_copies):
            for ir, offs in entries:
                x = self._block(layer, offsets[ir], range(len(offs)), ir.dim)
                w = W[:, :, start : start + len(offs)]
                term = torch.einsum("ncqi,ncq->nci", x, w)
                outputs[ir] = outputs[ir] + term if ir in outputs else term
                start += len(offs)
        if self._plan.final_groups:
            last, offsets = layers[-1], self._layer_copies[-1]
            for g in self._plan.final_groups:
                x = self._block(last, offsets[g.ir_q], g.q_copies, g.ir_q.dim)
                s = torch.einsum("ncqi,ncq->nci", x, W[:, :, start : start + len(g.q_copies)])
                start += len(g.q_copies)
                a = A[:, :, self._a_slices[g.a]]
                C = getattr(self, self._couplings[(g.ir_q.l, self._plan.a_irreps[g.a].l, g.ir_out.l)])
                term = torch.einsum("nci,ncj,ijo->nco", s, a, C)
                outputs[g.ir_out] = outputs[g.ir_out] + term if g.ir_out in outputs else term
        return torch.cat([outputs[ir] for _, ir in self.irreps_out], dim=-1)

    def _latent_forward(self, A, layers, species):
        n, c = A.shape[:2]
        out_types = {ir for _, ir in self.irreps_out}
        pieces = []
        for layer, offsets in zip(layers, self._layer_copies):
            for ir, offs in offsets.items():
                if ir in out_types:
                    pieces.append(self._block(layer, offs, range(len(offs)), ir.dim).reshape(n, c, -1))
        last, offsets = layers[-1], self._layer_copies[-1]
        for g in self._plan.final_groups:
            x = self._block(last, offsets[g.ir_q], g.q_copies, g.ir_q.dim)
            a = A[:, :, self._a_slices[g.a]]
            C = getattr(self, self._couplings[(g.ir_q.l, self._plan.a_irreps[g.a].l, g.ir_out.l)])
            pieces.append(torch.einsum("ncqi,ncj,ijo->ncqo", x, a, C).reshape(n, c, -1))
        paths = torch.cat(pieces, dim=-1)
        return self.mix(paths, species)

    def extra_repr(self) -> str:
        return (
            f"A={self.channels}x({self.irreps_a}) -> {self.irreps_out}, correlation={self.correlation}, "
            f"variant={self.variant}, basis={self.basis.name}"
        )
