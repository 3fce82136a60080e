"""A fused CPU kernel for the many-body product paths (:class:`~tensorfuse.nn._product_paths.ProductPaths`).

Why: on CPU the tensor path of the product basis is bound by memory traffic, not arithmetic: each of
its ~100 operations streams an ``[N, C, ...]`` intermediate through memory (profile of 64 ethanols:
the product basis is ~70 % of an energy+forces call at a few percent of the matmul peak). The
kernel (``_product_kernel.cpp``) evaluates the same sums atom by atom with every intermediate in a
per-thread buffer, vectorized over channels.

The maths is not re-derived here: :func:`kernel_plan` lists the paths, copies, weights and coupling
blocks of the same :class:`~tensorfuse.o3.ManyBodyPlan` the tensor path runs, as sparse entries, so
both give the same numbers (tests to 1e-12). Building: :mod:`tensorfuse.nn._kernels`. For CUDA or
the latent variant the tensor path runs instead.
"""

from __future__ import annotations

import torch

from tensorfuse.nn._kernels import load_kernel as _load
from tensorfuse.nn._tensor_product import _is_batched, _used_gradients
from tensorfuse.o3 import Irreps, ManyBodyPlan, get_basis


def load_kernel():
    """The compiled product-basis kernel, or ``None`` (see :mod:`tensorfuse.nn._kernels`)."""
    return _load("product")


def kernel_plan(plan: ManyBodyPlan, basis) -> dict:
    """The sparse entries of a :class:`~tensorfuse.o3.ManyBodyPlan` in ``basis``, in the kernel's
    layout (see the .cpp)."""
    basis = get_basis(basis)
    level_copies = plan.spec.level_copies
    dtype = torch.float64
    a_irreps = Irreps([(1, ir) for ir in plan.a_irreps])
    a_start = [sl.start for sl in a_irreps.slices()]
    # per level: irrep -> column offset of each copy. Level 0 is A; P_1 is its first input, at its start
    offsets = [plan.layer_offsets[0]]
    level_dims = [sum(ir.dim for ir in plan.a_irreps)]
    out_offsets, start = {}, 0
    for _, ir in plan.spec.irreps_out:
        out_offsets[ir] = start
        start += ir.dim

    def block(l_q, l_a, ir_out):
        return basis.unit_variance_coupling(l_q, l_a, ir_out.l, dtype=dtype)

    def nonzero(b):
        i, j, o = torch.nonzero(b, as_tuple=True)
        return i, j, o, b[i, j, o]

    level_index, level_coef = [], []
    kernel_level = [0]  # kernel level of each of the plan's layers (mixing adds levels)
    mix_column = plan.num_paths  # the mixing weights follow the path weights in W
    for s in range(1, len(plan.layers)):
        here: dict = {}
        column = 0
        rows, coefs = [], []
        for bundle in plan.steps[s]:
            for g in bundle.groups:
                i, j, o, c = nonzero(block(g.ir_q.l, plan.a_irreps[g.a].l, g.ir_out))
                for q in g.q_copies:
                    here.setdefault(g.ir_out, []).append(column)
                    x = offsets[s - 1][g.ir_q][q]
                    rows.append(torch.stack([x + i, a_start[g.a] + j, column + o], dim=1))
                    coefs.append(c)
                    column += g.ir_out.dim
        level_dims.append(column)
        level_index.append(torch.cat(rows).to(torch.int32).contiguous())
        level_coef.append(torch.cat(coefs).contiguous())
        if plan.raw_layers[s] is not None:  # a mixing level: level_copies copies of each irrep
            mixed: dict = {}
            column, rows = 0, []
            for ir, positions in here.items():
                for k in range(level_copies):
                    mixed.setdefault(ir, []).append(column)
                    for position in positions:
                        rows += [(position + o, mix_column, column + o) for o in range(ir.dim)]
                        mix_column += 1
                    column += ir.dim
            here = mixed
            level_dims.append(column)
            level_index.append(torch.tensor(rows, dtype=torch.int32).reshape(-1, 3))
            level_coef.append(torch.zeros(0, dtype=dtype))  # no coefficients: weights (see the .cpp)
        offsets.append(here)
        kernel_level.append(len(level_dims) - 1)

    collapse, k = [], 0
    for level, entries in enumerate(plan.collapse):
        for ir, count in entries:
            for copy in range(count):
                for o in range(ir.dim):
                    collapse.append((kernel_level[level], offsets[level][ir][copy] + o, out_offsets[ir] + o, k))
                k += 1
    last = len(plan.layers) - 1
    horner, final_rows, final_coefs, s = [], [], [], 0
    for bundle in plan.final:
        copies = bundle.groups[0].q_copies
        for gi, g in enumerate(bundle.groups):
            for i_comp in range(g.ir_q.dim):
                for qi, q in enumerate(copies):
                    horner.append((s + i_comp, k + gi * len(copies) + qi, offsets[last][g.ir_q][q] + i_comp))
            i, j, o, c = nonzero(block(g.ir_q.l, plan.a_irreps[g.a].l, g.ir_out))
            final_rows.append(torch.stack([s + i, a_start[g.a] + j, out_offsets[g.ir_out] + o], dim=1))
            final_coefs.append(c)
            s += g.ir_q.dim
        k += len(copies) * len(bundle.groups)
    if k != plan.num_paths or mix_column != plan.num_paths + plan.num_mixing:
        raise RuntimeError(f"kernel plan covers {k} of {plan.num_paths} paths")

    def table(rows, width):
        return torch.tensor(rows, dtype=torch.int32).reshape(-1, width)

    return {
        "level_dims": level_dims, "level_index": level_index, "level_coef": level_coef,
        "collapse": table(collapse, 4), "horner": table(horner, 3),
        "final_index": (torch.cat(final_rows) if final_rows else torch.zeros(0, 3)).to(torch.int32).contiguous(),
        "final_coef": (torch.cat(final_coefs) if final_coefs else torch.zeros(0, dtype=dtype)).contiguous(),
        "n_s": s,
    }


class FusedProductBasis(torch.autograd.Function):
    """``B = ProductPaths(A, species, W)`` by the kernel; ``W`` are the scaled weights ``[Z, C, P]``.

    First derivatives (forces; weight gradients) come from the kernel. Where a graph of the
    backward is built (training on forces) the backward is :class:`_FusedProductBasisBackward`,
    whose own backward is the kernel's forward-over-reverse pass. A batch of cotangents (vmap)
    re-runs the tensor path inside the backward instead.
    """

    @staticmethod
    def forward(ctx, A, W, species, module, plan, kernel):
        ctx.save_for_backward(A, W, species)
        ctx.module, ctx.plan, ctx.kernel = module, plan, kernel
        return kernel.forward(A, W.transpose(1, 2), species, module.irreps_out.dim, *_args(plan))

    @staticmethod
    def backward(ctx, grad):
        A, W, species = ctx.saved_tensors
        need_A, need_W = _used_gradients(ctx, A, W)
        if _is_batched(grad):
            # a batch of cotangents (vmap): the tensor path, which vmap can batch
            with torch.enable_grad():
                out = ctx.module._tensor_forward(A, species, W)
                inputs = [t for t, need in ((A, need_A), (W, need_W)) if need]
                grads = iter(torch.autograd.grad(out, inputs, grad, create_graph=torch.is_grad_enabled())
                             if inputs else ())
            return (next(grads) if need_A else None, next(grads) if need_W else None, None, None, None, None)
        if torch.is_grad_enabled():  # a graph of this backward is wanted (forces in a training loss)
            grad_A, grad_W = _FusedProductBasisBackward.apply(grad, A, W, species, ctx.module, ctx.plan, ctx.kernel,
                                                             need_W)
            return (grad_A if need_A else None, grad_W, None, None, None, None)
        grad_A, grad_Wt = ctx.kernel.backward(grad, A, W.transpose(1, 2), species, need_W,
                                               ctx.module.irreps_out.dim, *_args(ctx.plan))
        return (grad_A if need_A else None, grad_Wt.transpose(1, 2) if need_W else None, None, None, None, None)


class _FusedProductBasisBackward(torch.autograd.Function):
    """``(dB/dA, dB/dW)`` contracted with ``grad``, as an operation with a kernel backward.

    Its backward (upstream gradients ``u`` of ``grad_A``, ``v`` of ``grad_W``) is forward-over-reverse
    in the kernel: the backward pass run on dual numbers ``A + eps u``, ``W + eps v``. Third
    derivatives are not supported (nothing in training needs them).
    """

    @staticmethod
    def forward(ctx, grad, A, W, species, module, plan, kernel, need_W):
        ctx.save_for_backward(grad, A, W, species)
        ctx.module, ctx.plan, ctx.kernel = module, plan, kernel
        ctx.set_materialize_grads(False)
        grad_A, grad_Wt = kernel.backward(grad, A, W.transpose(1, 2), species, need_W, module.irreps_out.dim,
                                          *_args(plan))
        return grad_A, (grad_Wt.transpose(1, 2) if need_W else None)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, u, v):
        grad, A, W, species = ctx.saved_tensors
        need_grad, need_A, need_W = _used_gradients(ctx, grad, A, W)
        if u is None and v is None:
            return (None,) * 8
        empty = A.new_empty(0)
        d_grad, d_A, d_Wt = ctx.kernel.double_backward(
            grad, A, W.transpose(1, 2), species, empty if u is None else u,
            empty if v is None else v.transpose(1, 2), need_grad, need_A, need_W, ctx.module.irreps_out.dim,
            *_args(ctx.plan))
        return (d_grad if need_grad else None, d_A if need_A else None, d_Wt.transpose(1, 2) if need_W else None,
                None, None, None, None, None)


def _args(plan: dict) -> tuple:
    return (plan["level_dims"], plan["level_index"], plan["level_coef"], plan["collapse"], plan["horner"],
            plan["final_index"], plan["final_coef"], plan["n_s"])
