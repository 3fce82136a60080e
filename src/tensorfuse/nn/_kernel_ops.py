"""The fused CPU kernels as PyTorch operators, so that traced graphs (``torch.compile``,
``torch.export``, AOTInductor packages for C++) keep them.

Eager code calls the kernels through ``autograd.Function`` s (``_product_kernel``,
``_tensor_product``), whose backward can build a graph (training on forces) by the tensor path.
A traced graph needs registered operators instead: ``tensorfuse::product_basis`` and
``tensorfuse::message_passing`` and their backward operators are defined in C++ beside the kernels
(so that C++ without Python, the LAMMPS plugin, runs them too); their fake (shape-only) versions
and autograd formulas are registered here once a kernel is loaded (:func:`register`). The backward
operators have backward operators of their own (the kernels' second derivatives, as in eager
mode; Python operators), so compiled training on forces keeps the kernels too; third derivatives
are not supported.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tensorfuse.nn._kernels import load_kernel


def product_basis(A: Tensor, W: Tensor, species: Tensor, dout: int, level_dims: list[int], level_index: list[Tensor],
                  level_coef: list[Tensor], collapse: Tensor, horner: Tensor, final_index: Tensor, final_coef: Tensor,
                  n_s: int) -> Tensor:
    """``B [N, C, dout]`` of the product basis (the C++ operator; its kernel must be loaded).

    The operator's tensor lists end in a placeholder (empty tensor) that it drops: AOTInductor's
    C++ runner reads an empty tensor list (a product of correlation 2 has no intermediate levels)
    as None."""
    placeholder = A.new_zeros(0)
    return torch.ops.tensorfuse.product_basis(A, W, species, dout, level_dims, [*level_index, placeholder],
                                              [*level_coef, placeholder], collapse, horner, final_index, final_coef,
                                              n_s)


def _product_fake(A, W, species, dout, *plan):
    return A.new_empty(A.shape[0], A.shape[1], dout)


def _product_backward_fake(grad, A, W, *rest):
    return torch.empty_like(A), torch.empty_like(W)


def _product_setup(ctx, inputs, output):
    A, W, species = inputs[:3]
    ctx.save_for_backward(A, W, species)
    ctx.rest = inputs[3:]


def _product_backward(ctx, grad):
    A, W, species = ctx.saved_tensors
    need_A, need_W = ctx.needs_input_grad[:2]
    grad_A, grad_W = torch.ops.tensorfuse.product_basis_backward(grad, A, W, species, need_W, *ctx.rest)
    nothing = tuple([None] * len(x) if isinstance(x, list) and all(isinstance(t, Tensor) for t in x) else None
                    for x in ctx.rest)  # one None per tensor of a tensor list (list[int] is one leaf)
    return (grad_A if need_A else None, grad_W if need_W else None, None) + nothing


@torch.library.custom_op("tensorfuse::product_basis_double_backward", mutates_args=())
def product_basis_double_backward(grad: Tensor, A: Tensor, W: Tensor, species: Tensor, u: Tensor, v: Tensor,
                                  dout: int, level_dims: list[int], level_index: list[Tensor],
                                  level_coef: list[Tensor], collapse: Tensor, horner: Tensor, final_index: Tensor,
                                  final_coef: Tensor, n_s: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(d grad, d A, d W)`` from upstream gradients ``u`` (of grad_A) and ``v`` (of grad_W); the
    tensor lists end in the operators' placeholder (see :func:`product_basis`)."""
    d_grad, d_A, d_Wt = load_kernel("product").double_backward(
        grad, A, W.transpose(1, 2), species, u, v.transpose(1, 2), True, True, True, dout, level_dims,
        level_index[:-1], level_coef[:-1], collapse, horner, final_index, final_coef, n_s)
    return d_grad, d_A, d_Wt.transpose(1, 2).contiguous()


@product_basis_double_backward.register_fake
def _(grad, A, W, *rest):
    return torch.empty_like(grad), torch.empty_like(A), torch.empty_like(W)


def _product_backward_setup(ctx, inputs, output):
    grad, A, W, species = inputs[:4]
    ctx.save_for_backward(grad, A, W, species)
    ctx.rest = inputs[5:]  # dout and the plan (need_W is inputs[4])


def _product_double_backward(ctx, u, v):
    grad, A, W, species = ctx.saved_tensors
    u = torch.zeros_like(A) if u is None else u
    v = torch.zeros_like(W) if v is None else v
    d_grad, d_A, d_W = product_basis_double_backward(grad, A, W, species, u, v, *ctx.rest)
    need = ctx.needs_input_grad
    nothing = tuple([None] * len(x) if isinstance(x, list) and all(isinstance(t, Tensor) for t in x) else None
                    for x in ctx.rest)
    return (d_grad if need[0] else None, d_A if need[1] else None, d_W if need[2] else None, None, None) + nothing




def message_passing(h: Tensor, x2: Tensor, w: Tensor, sender: Tensor, receiver: Tensor, U: Tensor, pairs: Tensor,
                    path: Tensor, dout: int) -> Tensor:
    """``A [N, C, dout]`` of fused message passing (the C++ operator; its kernel must be loaded)."""
    return torch.ops.tensorfuse.message_passing(h, x2, w, sender, receiver, U, pairs, path, dout)


def message_passing_backward(grad, h, x2, w, sender, receiver, U, pairs, path, need_h, need_x2, need_w):
    return torch.ops.tensorfuse.message_passing_backward(grad, h, x2, w, sender, receiver, U, pairs, path, need_h,
                                                         need_x2, need_w)


def _message_fake(h, x2, w, sender, receiver, U, pairs, path, dout):
    return h.new_empty(h.shape[0], h.shape[1], dout)


def _message_backward_fake(grad, h, x2, w, *rest):
    return torch.empty_like(h), torch.empty_like(x2), torch.empty_like(w)


def _message_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:8])


def _message_backward(ctx, grad):
    h, x2, w, sender, receiver, U, pairs, path = ctx.saved_tensors
    need = ctx.needs_input_grad[:3]
    grads = message_passing_backward(grad, h, x2, w, sender, receiver, U, pairs, path, *need)
    return tuple(g if n else None for g, n in zip(grads, need)) + (None,) * 6




@torch.library.custom_op("tensorfuse::message_passing_double_backward", mutates_args=())
def message_passing_double_backward(grad: Tensor, h: Tensor, x2: Tensor, w: Tensor, sender: Tensor, receiver: Tensor,
                                    U: Tensor, pairs: Tensor, path: Tensor, a: Tensor, c: Tensor,
                                    b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(d grad, d h, d x2, d w)`` from upstream gradients ``a``, ``c``, ``b`` of (grad_h, grad_x2,
    grad_w): the eager kernels' second derivatives, with ``M = x2 @ U``."""
    from tensorfuse.nn._tensor_product import _kernel_second_derivatives

    tables = (load_kernel("message"), U, pairs, path, grad.shape[2])
    d_grad, d_h, d_M, d_w = _kernel_second_derivatives(tables, grad, h, x2 @ U, w, sender, receiver, a, c @ U, b,
                                                       (True, True, True, True))
    return d_grad, d_h.contiguous(), d_M @ U.T, d_w


@message_passing_double_backward.register_fake
def _(grad, h, x2, w, *rest):
    return torch.empty_like(grad), torch.empty_like(h), torch.empty_like(x2), torch.empty_like(w)


def _message_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:9])


def _message_double_backward(ctx, a, c, b):
    grad, h, x2, w, sender, receiver, U, pairs, path = ctx.saved_tensors
    a = torch.zeros_like(h) if a is None else a
    c = torch.zeros_like(x2) if c is None else c
    b = torch.zeros_like(w) if b is None else b
    grads = message_passing_double_backward(grad, h, x2, w, sender, receiver, U, pairs, path, a, c, b)
    need = ctx.needs_input_grad[:4]
    return tuple(g if n else None for g, n in zip(grads, need)) + (None,) * 8


_registered: set[str] = set()


# per kernel: its C++ operators with their fake function, backward formula and context setup
_FORMULAS = {
    "product": [("product_basis", _product_fake, _product_backward, _product_setup),
                ("product_basis_backward", _product_backward_fake, _product_double_backward, _product_backward_setup)],
    "message": [("message_passing", _message_fake, _message_backward, _message_setup),
                ("message_passing_backward", _message_backward_fake, _message_double_backward, _message_backward_setup)],
}


def register(name: str) -> None:
    """Fake functions and autograd formulas of kernel ``name``'s C++ operators (once it is loaded)."""
    if name in _registered:
        return
    _registered.add(name)
    for op, fake, backward, setup in _FORMULAS.get(name, ()):  # eager-only kernels (linear) have none
        torch.library.register_fake(f"tensorfuse::{op}")(fake)
        torch.library.register_autograd(f"tensorfuse::{op}", backward, setup_context=setup)
