"""A many-body product plan, executed: ``B = sum_paths W[species, c, path] P_path(A)``.

The plan is data (:class:`~tensorfuse.o3.ManyBodySpec` compiled into a
:class:`~tensorfuse.o3.ManyBodyPlan`: which caterpillar paths ``P_nu = P_(nu-1) ⊗ X_(nu-1)``, grouped
how); :class:`ProductPaths` runs it for weights the caller passes — by the fused CPU kernel
(:mod:`tensorfuse.nn._product_kernel`, whose tables :func:`~tensorfuse.nn._product_kernel.kernel_plan`
reads from the same plan) or by the tensor path below. Every parametrization of a many-body product
runs here: ICTP's variants (:class:`~tensorfuse.nn.ProductBasis`) directly, MACE's symmetric
contraction and fusion trees (one density of any shape, distinct densities, the Cormorant-style
level's trees) through :func:`weight_map`, the fixed map from their weights to the paths' weights,
checked exact.

The last product is evaluated Horner-style: the weighted sum over the paths of ``P_(nu-1)`` is taken
before the final coupling, so the largest set of paths is never materialized. The paths are grouped
by the irrep of their first factor ("bundles"): for a bundle, the step's input is contracted with
the stacked couplings of all its paths in one matrix product, and the first factor in one
multiply-and-sum, so the number of operations grows with the number of irrep types, not of paths.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from tensorfuse.nn._kernel_ops import product_basis
from tensorfuse.nn._kernels import is_loaded
from tensorfuse.nn._linear import species_rows
from tensorfuse.nn._product_kernel import FusedProductBasis, kernel_plan, load_kernel
from tensorfuse.nn._tensor_product import _is_batched
from tensorfuse.o3 import Irrep, Irreps, ManyBodySpec, get_basis
from tensorfuse.o3._many_body import PathBundle


class ProductPaths(torch.nn.Module):
    """The paths of a many-body product (:class:`~tensorfuse.o3.ManyBodySpec`), run for given weights
    (no parameters).

    ``forward(A, species, W)``: ``A`` ``[N, C, spec.irreps_a.dim]`` (for distinct inputs, the inputs
    concatenated), ``species`` ``[N]`` indexing the first axis of ``W`` ``[Z, C, num_paths (+ num_mixing)]``,
    the weights times their scales (then, for the reduced variant, the mixing weights, the same for
    every species). Output ``[N, C, irreps_out.dim]``. ``path_scale``: ``1/sqrt(paths into the output
    irrep)`` per path, the scale that keeps unit-variance outputs for unit-variance weights. The
    plan (``self.plan``, :class:`~tensorfuse.o3.ManyBodyPlan`) is plain data; this module holds
    the coupling blocks it needs and runs it, by the fused CPU kernel or by tensor operations.
    """

    def __init__(self, spec: ManyBodySpec, basis="spherical", dtype: torch.dtype | None = None):
        super().__init__()
        if not isinstance(spec, ManyBodySpec):
            raise ValueError(f"ProductPaths needs a ManyBodySpec, got {type(spec).__name__}")
        self.spec, self.plan = spec, spec.plan()
        plan = self.plan
        self.inputs, self.irreps_a, self.irreps_out = spec.inputs, spec.irreps_a, spec.irreps_out
        self.basis, self.correlation, self.level_copies = get_basis(basis), spec.correlation, spec.level_copies

        # one stacked coupling per bundle: X [.., D_X] @ C -> [.., i, sum of output dims], where X is
        # the step's input (A itself for one density)
        dtype = dtype or torch.get_default_dtype()
        a_slices = Irreps([(1, ir) for ir in plan.a_irreps]).slices()
        self._a_dims = [ir.dim for ir in plan.a_irreps]
        for s, bundles in enumerate(plan.steps):
            columns = plan.step_columns(s)
            first, d_x = (0, self.irreps_a.dim) if columns is None else (columns[0], columns[1] - columns[0])
            for b, bundle in enumerate(bundles):
                d_q = bundle.ir_q.dim
                cols = sum(g.ir_out.dim for g in bundle.groups)
                C = torch.zeros(d_x, d_q, cols, dtype=dtype)
                start = 0
                for g in bundle.groups:
                    l_a = plan.a_irreps[g.a].l
                    block = self.basis.unit_variance_coupling(g.ir_q.l, l_a, g.ir_out.l, dtype=dtype)
                    rows = slice(a_slices[g.a].start - first, a_slices[g.a].stop - first)
                    C[rows, :, start : start + g.ir_out.dim] = block.permute(1, 0, 2)
                    start += g.ir_out.dim
                self.register_buffer(f"coupling_{s}_{b}", C.reshape(d_x, d_q * cols), persistent=False)
                # rows (i, j) for the outer-product form: (x ⊗ X) @ C_outer
                outer = C.permute(1, 0, 2).reshape(d_q * d_x, cols)
                self.register_buffer(f"coupling_outer_{s}_{b}", outer.contiguous(), persistent=False)
        self.num_paths, self.num_mixing = plan.num_paths, plan.num_mixing
        self.register_buffer("path_scale", torch.tensor(plan.path_scale, dtype=dtype), persistent=False)
        self.fused = True  # use the fused CPU kernel where it applies (same numbers; False: tensor path only)
        self._kernel_plan = None

    def path_labels(self) -> list[tuple[Irrep, int]]:
        """``(output irrep, order)`` of every path, in the weights' column order."""
        return list(self.plan.labels)

    # -- execution -----------------------------------------------------------------------------
    def forward(self, A: torch.Tensor, species: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # the kernel as an operator of the graph, where it is ready
            plan = self._kernel_plan
            if self.fused and plan is not None and is_loaded("product") and A.device.type == "cpu":
                return product_basis(A, W, species, self.irreps_out.dim, plan["level_dims"], plan["level_index"],
                                     plan["level_coef"], plan["collapse"], plan["horner"], plan["final_index"],
                                     plan["final_coef"], plan["n_s"])
            return self._tensor_forward(A, species, W)
        kernel = self._kernel(A)
        if kernel is not None:
            if self._kernel_plan is None:
                self._kernel_plan = kernel_plan(self.plan, self.basis)
            return FusedProductBasis.apply(A, W, species, self, self._kernel_plan, kernel)
        return self._tensor_forward(A, species, W)

    def _kernel(self, A: torch.Tensor):
        """The fused CPU kernel where it applies (see ``_product_kernel``), else ``None``."""
        if not self.fused or A.device.type != "cpu" or A.dtype not in (torch.float32, torch.float64):
            return None
        if torch.jit.is_scripting() or _is_batched(A):
            return None
        return load_kernel()

    # Products are kept as {irrep type: [N, C, copies, d]} and inputs are split once rather than
    # sliced per path: the backward of every slice fills a zero tensor of the full size.
    def _step_input(self, A: torch.Tensor, step: int) -> torch.Tensor:
        """The input that ``step`` multiplies by: ``A`` itself, or its slice for distinct inputs."""
        columns = self.plan.step_columns(step)
        return A if columns is None else A[..., columns[0] : columns[1]]

    def _contract_a(self, A: torch.Tensor, step: int, bundle: int, d_q: int) -> torch.Tensor:
        """``T[n, c, i, (g, o)] = sum_j X[n, c, j] C_g[i, j, o]`` for every group of a bundle (X: the step's input)."""
        C = getattr(self, f"coupling_{step}_{bundle}")
        X = self._step_input(A, step)
        n, c, d = X.shape
        return (X.reshape(n * c, d) @ C).view(n, c, d_q, -1)

    def _split_groups(self, y: torch.Tensor, groups) -> list[torch.Tensor]:
        return list(y.split([g.ir_out.dim for g in groups], dim=-1)) if len(groups) > 1 else [y]

    @staticmethod
    def _select(x: torch.Tensor, copies) -> torch.Tensor:
        if len(copies) == x.shape[2]:
            return x
        return x.index_select(2, torch.tensor(copies, device=x.device))

    def products(self, A: torch.Tensor, mixing: torch.Tensor | None = None) -> list[dict[Irrep, torch.Tensor]]:
        """The materialized products ``P_1 = A, ..., P_(nu-1)`` as {irrep: [N, C, copies, d]}; with
        ``mixing`` (``[C, num_mixing]``, scaled; the reduced variant) each step's copies are mixed down."""
        mixes = iter(mixing.split([self.level_copies * j for *_, j in self.plan.mix_chunks], dim=-1)) \
            if mixing is not None else None
        first: dict[Irrep, list[torch.Tensor]] = {}
        for ir, block, k in zip(self.plan.a_irreps, A.split(self._a_dims, dim=-1), self.plan.a_input):
            if k == 0:
                first.setdefault(ir, []).append(block.unsqueeze(2))
        layers = [{ir: torch.cat(b, dim=2) if len(b) > 1 else b[0] for ir, b in first.items()}]
        for step in range(1, len(self.plan.layers)):
            grown: dict[Irrep, list[torch.Tensor]] = {}
            for k, bundle in enumerate(self.plan.steps[step]):
                outputs = self.bundle_products(layers[-1][bundle.ir_q], A, step, k, bundle)
                for g, y in zip(bundle.groups, outputs):
                    grown.setdefault(g.ir_out, []).append(y)
            layer = {ir: torch.cat(b, dim=2) if len(b) > 1 else b[0] for ir, b in grown.items()}
            if mixes is not None and self.plan.raw_layers[step] is not None:
                c = A.shape[1]
                layer = {ir: torch.matmul(next(mixes).view(c, self.level_copies, x.shape[2]), x)
                         for ir, x in layer.items()}
            layers.append(layer)
        return layers

    def bundle_products(self, x: torch.Tensor, A: torch.Tensor, step: int, k: int, bundle: PathBundle):
        """Every group's products ``[N, C, copies, o]`` of ``x`` ``[N, C, q, i]`` with ``A``.

        Two exact forms; the cheaper one is used: the outer product ``x ⊗ A`` times the stacked
        couplings (one large matrix product, best for few copies), or ``A`` times the couplings
        first and then a small batched product with ``x`` (best for many copies).
        """
        X = self._step_input(A, step)
        n, c, d = X.shape
        outputs = []
        copies_sets = {g.q_copies for g in bundle.groups}
        for copies in sorted(copies_sets):
            groups = [g for g in bundle.groups if g.q_copies == copies] if len(copies_sets) > 1 else bundle.groups
            xs = self._select(x, copies)
            q, i = xs.shape[2], xs.shape[3]
            width = sum(g.ir_out.dim for g in bundle.groups)
            if 8 * q <= width:
                outer = (xs.unsqueeze(-1) * X.reshape(n, c, 1, 1, d)).reshape(n * c * q, i * d)
                y = (outer @ getattr(self, f"coupling_outer_{step}_{k}")).view(n, c, q, width)
            else:
                y = torch.matmul(xs, self._contract_a(A, step, k, i))
            parts = self._split_groups(y, bundle.groups)
            outputs.extend(p for g, p in zip(bundle.groups, parts) if g in groups)
        return outputs

    def _tensor_forward(self, A: torch.Tensor, species: torch.Tensor, W_scaled: torch.Tensor) -> torch.Tensor:
        """The product basis with tensor operations (the reference the kernel is tested against)."""
        mixing = W_scaled[0, :, self.num_paths:] if self.plan.mix_chunks else None
        W_scaled = W_scaled[..., : self.num_paths]
        layers = self.products(A, mixing)
        n, c = A.shape[:2]
        W = species_rows(W_scaled, species)
        W_chunks = iter(W.split(self.plan.weight_chunks, dim=-1))
        terms: dict[Irrep, list[torch.Tensor]] = {}
        for layer, entries in zip(layers, self.plan.collapse):
            for ir, count in entries:
                terms.setdefault(ir, []).append((layer[ir] * next(W_chunks).unsqueeze(-1)).sum(2))
        last_step = len(self.plan.steps) - 1
        for k, bundle in enumerate(self.plan.final):
            groups = bundle.groups
            x = self._select(layers[-1][bundle.ir_q], groups[0].q_copies)  # [N, C, q, i]
            q, i = x.shape[2], x.shape[3]
            w = next(W_chunks).view(n, c, len(groups), q)
            # Horner: the weighted sum over the copies comes before the last coupling
            S = (x.unsqueeze(2) * w.unsqueeze(-1)).sum(3) if q > 1 else x * w  # [N, C, G, i]
            T = self._contract_a(A, last_step, k, i)  # [N, C, i, (g, o)]: A with every coupling
            # per output irrep: sum over its groups g and over i of S[g, i] T[i, (g, o)]
            runs = _runs([g.ir_out for g in groups])
            S_parts = S.split([count for _, count in runs], dim=2) if len(runs) > 1 else [S]
            T_parts = T.split([count * ir.dim for ir, count in runs], dim=-1) if len(runs) > 1 else [T]
            for (ir, count), s, t in zip(runs, S_parts, T_parts):
                term = torch.matmul(s.transpose(2, 3).reshape(n, c, 1, i * count),
                                    t.reshape(n, c, i * count, ir.dim)).squeeze(2)
                terms.setdefault(ir, []).append(term)
        return torch.cat([_total(terms[ir]) for _, ir in self.irreps_out], dim=-1)

    def extra_repr(self) -> str:
        a = " ⊗ ".join(str(x) for x in self.inputs) if len(self.inputs) > 1 else str(self.irreps_a)
        return (f"A={a} -> {self.irreps_out}, correlation={self.correlation}, paths={self.num_paths}, "
                f"basis={self.basis.name}" + (f", level_copies={self.level_copies}" if self.level_copies else ""))


def weight_map(paths: ProductPaths, columns: Callable[[torch.Tensor], torch.Tensor], num_columns: int,
               tolerance: float = 1e-9) -> torch.Tensor | None:
    """``M`` ``[num_columns, paths.num_paths]`` with ``columns(A) = sum_p M[:, p] P_p(A)`` exactly, or
    ``None`` where some column is not in the paths' span.

    ``columns(A)``: for a batch ``A`` ``[S, D]`` (float64, one channel), the value of each of
    another parametrization's weights alone, ``[S, num_columns, irreps_out.dim]``. Found by least
    squares on random densities, per output irrep and polynomial order (an order is read from
    ``f(2A) = 2^order f(A)``), and accepted only if the fit is exact to ``tolerance`` (relative).
    """
    if paths.num_mixing:
        raise ValueError("weight_map needs paths without mixing (not the reduced variant)")
    generator = torch.Generator().manual_seed(0)
    labels = paths.path_labels()
    largest = max(sum(1 for x in labels if x == label) for label in set(labels))
    samples = largest + 16
    A = torch.randn(samples, paths.irreps_a.dim, dtype=torch.float64, generator=generator)
    slices = dict(zip((ir for _, ir in paths.irreps_out), paths.irreps_out.slices()))
    with torch.no_grad():
        P = torch.cat([_each_path(paths, a) for a in A.split(16)])  # [S, paths, dim]
        F, F2 = columns(A), columns(2 * A)
    groups: dict[tuple, list[int]] = {}
    for k in range(num_columns):
        norms = {ir: F[:, k, sl].norm().item() for ir, sl in slices.items()}
        ir = max(norms, key=norms.get)
        if norms[ir] == 0:
            continue  # a column that is zero everywhere maps to nothing
        order = round(math.log2(F2[:, k, slices[ir]].norm().item() / norms[ir]))
        groups.setdefault((ir, order), []).append(k)
    M = torch.zeros(num_columns, paths.num_paths, dtype=torch.float64)
    for (ir, order), cols in groups.items():
        path_cols = [p for p, label in enumerate(labels) if label == (ir, order)]
        if not path_cols:
            return None
        sl = slices[ir]
        lhs = P[:, path_cols, sl].transpose(1, 2).reshape(-1, len(path_cols))
        rhs = F[:, cols, sl].transpose(1, 2).reshape(-1, len(cols))
        X = torch.linalg.lstsq(lhs, rhs, driver="gelsd").solution  # [paths, columns]
        if (lhs @ X - rhs).abs().max() > tolerance * rhs.abs().max():
            return None
        M[torch.tensor(cols).unsqueeze(1), torch.tensor(path_cols)] = X.T
    return M


def _each_path(paths: ProductPaths, A: torch.Tensor) -> torch.Tensor:
    """``[S, paths, dim]``: every path alone (unit weight) at ``A`` ``[S, D]`` (channel p runs path p)."""
    s, p = A.shape[0], paths.num_paths
    W = torch.eye(p, dtype=A.dtype).unsqueeze(0)
    dense = A.unsqueeze(1).expand(s, p, A.shape[1]).contiguous()
    return paths._tensor_forward(dense, torch.zeros(s, dtype=torch.long), W)

def _runs(items: list) -> list[tuple]:
    """Consecutive runs ``(item, count)`` of equal items."""
    out: list[list] = []
    for item in items:
        if out and out[-1][0] == item:
            out[-1][1] += 1
        else:
            out.append([item, 1])
    return [tuple(r) for r in out]


def _total(terms: list[torch.Tensor]) -> torch.Tensor:
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out
