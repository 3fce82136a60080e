"""Execution of channel-wise tensor products: every path in one batched contraction."""

from __future__ import annotations

import torch

from tensorfuse.nn._kernel_ops import message_passing
from tensorfuse.nn._kernels import is_loaded, load_kernel
from tensorfuse.o3 import Irreps, TensorProductSpec, get_basis

_WEIGHT_MODES = ("external", "internal", "none")


def _scale_paths(y: torch.Tensor, w: torch.Tensor, expand: torch.Tensor, out: torch.Tensor | None = None):
    """``y[..., o] * w[..., path(o)]``, with ``expand[path, o] = 1`` where ``o`` belongs to ``path``.

    Expanding the weights by a matrix product and multiplying contiguously is several times faster
    on CPU than gathering along the last axis or scaling strided per-degree views. With ``out``
    (which may be ``y``) the result is written there without autograd.
    """
    scale = w @ expand
    return torch.mul(y, scale, out=out) if out is not None else y * scale


def _sum_paths(y: torch.Tensor, expand: torch.Tensor) -> torch.Tensor:
    """``sum_{o in path} y[..., o]``: the adjoint of :func:`_scale_paths` in ``w``."""
    return y @ expand.T


class _WeightedSharedProduct(torch.autograd.Function):
    """``out = (x1 @ (x2 @ U)) * w[..., path]``, saving only the inputs for the backward pass.

    The ``[N, C, D_out]`` product is the largest tensor of the layer: it is neither kept for the
    backward pass (which recomputes it) nor copied for the weights (which are broadcast over each
    degree's block in place). The backward is written with differentiable operations, so second
    derivatives (forces in a training loss) work; it works in place only when no graph is built.
    """

    @staticmethod
    def forward(ctx, x1, x2, w, coupling, expand):
        n, _, d1 = x1.shape
        y = torch.bmm(x1, (x2 @ coupling).reshape(n, d1, coupling.shape[1] // d1))
        ctx.save_for_backward(x1, x2, w, coupling, expand)
        return _scale_paths(y, w, expand, out=y)

    @staticmethod
    def backward(ctx, grad):
        x1, x2, w, coupling, expand = ctx.saved_tensors
        in_place = not torch.is_grad_enabled() and not _is_batched(grad)
        n, _, d1 = x1.shape
        M = (x2 @ coupling).reshape(n, d1, coupling.shape[1] // d1)
        grad_x1 = grad_x2 = grad_w = None
        if ctx.needs_input_grad[2]:  # first, while nothing else of the output's size is alive
            y = torch.bmm(x1, M)
            y = y.mul_(grad) if in_place else y * grad
            grad_w = _sum_paths(y, expand)
            del y
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_y = _scale_paths(grad, w, expand, out=torch.empty_like(grad) if in_place else None)
            if ctx.needs_input_grad[0]:
                grad_x1 = torch.bmm(grad_y, M.transpose(1, 2))
            del M
            if ctx.needs_input_grad[1]:
                grad_x2 = torch.bmm(x1.transpose(1, 2), grad_y).reshape(n, coupling.shape[1]) @ coupling.T
        return grad_x1, grad_x2, grad_w, None, None


def _is_batched(t: torch.Tensor | None) -> bool:
    """Whether ``t`` is vmapped (a batch of cotangents, ``is_grads_batched``): in-place writes of it
    into plain tensors are then impossible, and the backward passes below work out of place."""
    try:
        functorch = torch._C._functorch
        return t is not None and (functorch.is_batchedtensor(t) or functorch.is_legacy_batchedtensor(t))
    except AttributeError:  # an older torch without functorch: no vmap either
        return False


def _used_gradients(ctx, *inputs: torch.Tensor | None) -> tuple[bool, ...]:
    """``ctx.needs_input_grad`` narrowed to the inputs whose gradient this backward pass goes on
    with: forces (``autograd.grad(energy, positions)``) never use the weights' gradients, and a
    loss's ``backward(inputs=parameters)`` never the positions'. Outside the autograd engine
    (tracing), every input that needs a gradient."""
    candidates = sum(bool(need) and x is not None for need, x in zip(ctx.needs_input_grad, inputs))
    used = []
    for need, x in zip(ctx.needs_input_grad, inputs):
        if need and x is not None and candidates > 1:  # a lone candidate is what the engine came here for
            try:
                need = torch._C._will_engine_execute_node(torch.autograd.graph.get_gradient_edge(x).node)
            except (RuntimeError, AttributeError):
                pass
        used.append(bool(need))
    return tuple(used)


def _chunks(num_edges: int, chunk: int):
    for start in range(0, num_edges, chunk):
        yield slice(start, min(start + chunk, num_edges))


class _FusedMessagePassing(torch.autograd.Function):
    """``A[n] = sum_{e: receiver(e) = n} w[e] * (h[sender(e)] @ (x2[e] @ U))``, edge chunk by chunk.

    The per-edge messages (``[E, C, D_out]``, the largest tensors of a message-passing layer) are
    never stored: each chunk of edges is computed, weighted and added to its receivers while it is
    in cache, in the forward and again in the backward. Second derivatives (training on forces)
    go through a differentiable re-computation of the same function.
    """

    @staticmethod
    def forward(ctx, h, x2, w, sender, receiver, coupling, expand, num_nodes, chunk):
        ctx.save_for_backward(h, x2, w, sender, receiver, coupling, expand)
        ctx.chunk = chunk
        channels, d1 = h.shape[1], h.shape[2]
        d_out = coupling.shape[1] // d1
        A = h.new_zeros(num_nodes, channels, d_out)
        for sl in _chunks(x2.shape[0], chunk):
            M = (x2[sl] @ coupling).view(-1, d1, d_out)
            y = torch.bmm(h[sender[sl]], M)
            A.index_add_(0, receiver[sl], _scale_paths(y, w[sl], expand, out=y))
        return A

    @staticmethod
    def backward(ctx, grad_A):
        h, x2, w, sender, receiver, coupling, expand = ctx.saved_tensors
        need = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            # a graph of the backward is being built (forces in a training loss): the backward is
            # itself a fused, differentiable operation
            grads = _FusedMessagePassingBackward.apply(grad_A, h, x2, w, sender, receiver, coupling, expand,
                                                       ctx.chunk, need)
        else:
            grads = _message_passing_vjp(grad_A, h, x2, w, sender, receiver, coupling, expand, ctx.chunk, need)
        return (*grads, None, None, None, None, None, None)


def _message_passing_vjp(grad_A, h, x2, w, sender, receiver, coupling, expand, chunk, need):
    """``(grad_h, grad_x2, grad_w)`` of :class:`_FusedMessagePassing`, edge chunk by edge chunk."""
    if _is_batched(grad_A):
        return _message_passing_vjp_out_of_place(grad_A, h, x2, w, sender, receiver, coupling, expand, chunk, need)
    need_h, need_x2, need_w = need
    d1 = h.shape[2]
    d_out = coupling.shape[1] // d1
    grad_h = torch.zeros_like(h) if need_h else None
    grad_x2 = torch.empty_like(x2) if need_x2 else None
    grad_w = torch.empty_like(w) if need_w else None
    for sl in _chunks(x2.shape[0], chunk):
        g = grad_A[receiver[sl]]  # [e, C, D_out], a fresh tensor
        M = (x2[sl] @ coupling).view(-1, d1, d_out)
        x1 = h[sender[sl]]
        if need_w:
            grad_w[sl] = _sum_paths(torch.bmm(x1, M).mul_(g), expand)
        if need_h or need_x2:
            g = _scale_paths(g, w[sl], expand, out=g)
            if need_h:
                grad_h.index_add_(0, sender[sl], torch.bmm(g, M.transpose(1, 2)))
            if need_x2:
                grad_x2[sl] = torch.bmm(x1.transpose(1, 2), g).view(-1, d1 * d_out) @ coupling.T
    return grad_h, grad_x2, grad_w


def _message_passing_vjp_out_of_place(grad_A, h, x2, w, sender, receiver, coupling, expand, chunk, need):
    """:func:`_message_passing_vjp` for a batch of cotangents (under vmap): per-edge results are
    concatenated and summed into the atoms once, nothing is written in place."""
    need_h, need_x2, need_w = need
    d1 = h.shape[2]
    d_out = coupling.shape[1] // d1
    to_h, to_x2, to_w = [], [], []
    for sl in _chunks(x2.shape[0], chunk):
        g = grad_A[receiver[sl]]
        M = (x2[sl] @ coupling).view(-1, d1, d_out)
        x1 = h[sender[sl]]
        if need_w:
            to_w.append(_sum_paths(torch.bmm(x1, M) * g, expand))
        if need_h or need_x2:
            g = _scale_paths(g, w[sl], expand)
            if need_h:
                to_h.append(torch.bmm(g, M.transpose(1, 2)))
            if need_x2:
                to_x2.append(torch.bmm(x1.transpose(1, 2), g).reshape(-1, d1 * d_out) @ coupling.T)
    if x2.shape[0] == 0:  # no edges (isolated atoms)
        return (torch.zeros_like(h) if need_h else None, torch.zeros_like(x2) if need_x2 else None,
                torch.zeros_like(w) if need_w else None)
    grad_h = torch.zeros_like(h).index_add(0, sender, torch.cat(to_h)) if need_h else None
    grad_x2 = torch.cat(to_x2) if need_x2 else None
    grad_w = torch.cat(to_w) if need_w else None
    return grad_h, grad_x2, grad_w


class _FusedMessagePassingBackward(torch.autograd.Function):
    """The backward of :class:`_FusedMessagePassing` as an operation with its own fused backward.

    Per edge ``e`` (sender ``s``, receiver ``r``), with ``M = x2 @ U``, ``S = w @ P`` (weights
    expanded to components) and ``g = grad_A[r]``, the forward returns

        grad_h[s] += (g * S) M^T,    grad_w = ((h_s M) * g) P^T,    grad_x2 = vec(h_s^T (g * S)) U^T.

    For upstream gradients ``a`` (of grad_h), ``b`` (of grad_w), ``c`` (of grad_x2), with
    ``N = c @ U`` and ``Q = (a_s M + h_s N) * S + (b P) * (h_s M)``, the backward is

        d grad_A[r] += Q,    d h[s] += ((b P) * g) M^T + (g * S) N^T,
        d w = (g * (a_s M + h_s N)) P^T,    d x2 = vec(a_s^T (g * S) + h_s^T ((b P) * g)) U^T,

    again chunk by chunk, so training on forces never stores the ``[E, C, D_out]`` messages. Third
    derivatives are not supported (nothing in training needs them).
    """

    @staticmethod
    def forward(ctx, grad_A, h, x2, w, sender, receiver, coupling, expand, chunk, need):
        ctx.save_for_backward(grad_A, h, x2, w, sender, receiver, coupling, expand)
        ctx.chunk = chunk
        ctx.set_materialize_grads(False)  # unused outputs give None, not zeros to multiply
        return _message_passing_vjp(grad_A, h, x2, w, sender, receiver, coupling, expand, chunk, need)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, a_all, c_all, b_all):
        grad_A, h, x2, w, sender, receiver, coupling, expand = ctx.saved_tensors
        need_gA, need_h, need_x2, need_w = ctx.needs_input_grad[:4]
        d1 = h.shape[2]
        d_out = coupling.shape[1] // d1
        d_gA = torch.zeros_like(grad_A) if need_gA else None
        d_h = torch.zeros_like(h) if need_h else None
        d_x2 = torch.empty_like(x2) if need_x2 else None
        d_w = torch.empty_like(w) if need_w else None
        for sl in _chunks(x2.shape[0], ctx.chunk):
            snd, rcv = sender[sl], receiver[sl]
            M = (x2[sl] @ coupling).view(-1, d1, d_out)
            S = w[sl] @ expand  # [e, C, D_out]
            g = grad_A[rcv]
            h_s = h[snd]
            # the parts of Q: "left" multiplies S, "right" multiplies g
            left = torch.bmm(a_all[snd], M) if a_all is not None else None
            N = (c_all[sl] @ coupling).view(-1, d1, d_out) if c_all is not None else None
            if N is not None:
                hN = torch.bmm(h_s, N)
                left = hN if left is None else left + hN
            bP = b_all[sl] @ expand if b_all is not None else None
            hM = torch.bmm(h_s, M) if bP is not None else None
            if need_gA:
                Q = left * S if left is not None else torch.zeros_like(g)
                if bP is not None:
                    Q = Q + bP * hM
                d_gA.index_add_(0, rcv, Q)
            if need_w:
                d_w[sl] = _sum_paths(g * left, expand) if left is not None else 0.0
            gS = g * S
            if need_h:
                dh = torch.zeros_like(h_s)
                if bP is not None:
                    dh = dh + torch.bmm(bP * g, M.transpose(1, 2))
                if N is not None:
                    dh = dh + torch.bmm(gS, N.transpose(1, 2))
                d_h.index_add_(0, snd, dh)
            if need_x2:
                dM = torch.zeros_like(M)
                if a_all is not None:
                    dM = dM + torch.bmm(a_all[snd].transpose(1, 2), gS)
                if bP is not None:
                    dM = dM + torch.bmm(h_s.transpose(1, 2), bP * g)
                d_x2[sl] = dM.view(-1, d1 * d_out) @ coupling.T
        return d_gA, d_h, d_x2, d_w, None, None, None, None, None, None


class _KernelMessagePassing(torch.autograd.Function):
    """:class:`_FusedMessagePassing` by the C++ kernel (``_message_kernel.cpp``), from ``M = x2 @ U``
    (``[E, pairs]``, only the (i, o) pairs the coupling can fill; computed outside, so its derivative
    is an ordinary matrix product). Node tensors are transposed to the kernel's ``[N, D, C]``.

    The function is trilinear in ``(h, M, w)``, so every derivative of it, the second ones of
    training on forces included (:class:`_KernelMessagePassingBackward`), is again a sum of the
    kernel's forward and backward with some arguments replaced by upstream gradients.
    """

    @staticmethod
    def forward(ctx, h, M, w, sender, receiver, tables):
        ctx.save_for_backward(h, M, w, sender, receiver)
        ctx.tables = tables
        return _kernel_forward(tables, h, M, w, sender, receiver)

    @staticmethod
    def backward(ctx, grad_A):
        h, M, w, sender, receiver = ctx.saved_tensors
        need = _used_gradients(ctx, h, M, w)
        if _is_batched(grad_A):  # a batch of cotangents (vmap): the tensor path, with U = the pair selection
            module, _, pairs, path, d_out = ctx.tables
            select = torch.zeros(pairs.shape[0], h.shape[2] * d_out, dtype=M.dtype)
            select[torch.arange(pairs.shape[0]), pairs[:, 0].long() * d_out + pairs[:, 1].long()] = 1.0
            expand = torch.zeros(w.shape[2], d_out, dtype=w.dtype)
            expand[path.long(), torch.arange(d_out)] = 1.0
            grads = _message_passing_vjp_out_of_place(grad_A, h, M, w, sender, receiver, select, expand,
                                                      max(16, M.shape[0]), need)
        elif torch.is_grad_enabled():  # a graph of the backward (forces in a training loss)
            grads = _KernelMessagePassingBackward.apply(grad_A, h, M, w, sender, receiver, ctx.tables, need)
        else:
            grads = _kernel_backward(ctx.tables, grad_A, h, M, w, sender, receiver, need)
        return (*grads, None, None, None)


class _KernelMessagePassingBackward(torch.autograd.Function):
    """``(grad_h, grad_M, grad_w)`` of :class:`_KernelMessagePassing`, with a kernel backward.

    With ``f(h, M, w)`` the trilinear forward and upstream gradients ``a`` (of grad_h), ``c`` (of
    grad_M), ``b`` (of grad_w), the scalar being differentiated is
    ``<G, f(a, M, w) + f(h, c, w) + f(h, M, b)>``, so

        d G = f(a, M, w) + f(h, c, w) + f(h, M, b),
        d h = f_h'(G; c, w) + f_h'(G; M, b),   d M = f_M'(G; a, w) + f_M'(G; h, b),
        d w = f_w'(G; a, M) + f_w'(G; h, c),

    where ``f_x'(G; ...)`` is the kernel's backward for ``x``; the kernel evaluates all terms in one
    pass over the edges per scatter target (``double_backward``). Third derivatives are not
    supported (nothing in training needs them).
    """

    @staticmethod
    def forward(ctx, grad_A, h, M, w, sender, receiver, tables, need):
        ctx.save_for_backward(grad_A, h, M, w, sender, receiver)
        ctx.tables = tables
        ctx.set_materialize_grads(False)
        return _kernel_backward(tables, grad_A, h, M, w, sender, receiver, need)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, a, c, b):
        G, h, M, w, sender, receiver = ctx.saved_tensors
        grads = _kernel_second_derivatives(ctx.tables, G, h, M, w, sender, receiver, a, c, b,
                                           _used_gradients(ctx, G, h, M, w))
        return (*grads, None, None, None, None)


def _kernel_second_derivatives(tables, G, h, M, w, sender, receiver, a, c, b, need):
    """``(d G, d h, d M, d w)`` of ``<a, grad_h> + <c, grad_M> + <b, grad_w>`` (the identities of
    :class:`_KernelMessagePassingBackward`) by the kernel in one pass per scatter target; ``None``
    where not needed or nothing flows in."""
    module, _, pairs, path, d_out = tables
    need_G, need_h, need_M, need_w = need
    need = (need_G and (a is not None or c is not None or b is not None), need_h and (c is not None or b is not None),
            need_M and (a is not None or b is not None), need_w and (a is not None or c is not None))
    absent = h.new_empty(0)
    d_G, d_h, d_M, d_w = module.double_backward(
        G.transpose(1, 2), h.transpose(1, 2), M, w, sender, receiver,
        absent if a is None else a.transpose(1, 2), absent if c is None else c, absent if b is None else b,
        pairs, path, d_out, *need)
    return (d_G.transpose(1, 2).contiguous() if need[0] else None, d_h.transpose(1, 2).contiguous() if need[1] else None,
            d_M if need[2] else None, d_w if need[3] else None)


def _kernel_forward(tables, h, M, w, sender, receiver):
    module, _, pairs, path, d_out = tables
    A = module.forward(h.transpose(1, 2), M, w, sender, receiver, pairs, path, d_out)
    return A.transpose(1, 2).contiguous()


def _kernel_backward(tables, grad_A, h, M, w, sender, receiver, need):
    module, _, pairs, path, d_out = tables
    grad_h, grad_M, grad_w = module.backward(grad_A.transpose(1, 2), h.transpose(1, 2), M, w, sender, receiver,
                                             pairs, path, d_out, *need)
    return (grad_h.transpose(1, 2) if need[0] else None, grad_M if need[1] else None,
            grad_w if need[2] else None)


def _message_passing_reference(h, x2, w, sender, receiver, coupling, expand, num_nodes):
    """The same function as :class:`_FusedMessagePassing` with plain differentiable operations."""
    d1 = h.shape[2]
    M = (x2 @ coupling).view(-1, d1, coupling.shape[1] // d1)
    messages = _scale_paths(torch.bmm(h[sender], M), w, expand)
    return messages.new_zeros((num_nodes,) + messages.shape[1:]).index_add(0, receiver, messages)


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
        dtype: torch.dtype | None = None,
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
        U = self.spec.coupling(self.basis, dtype=dtype or torch.get_default_dtype())
        d1, d2, dout = U.shape
        if x2_has_channels:  # rows (i, j): contracted with the outer product x1 ⊗ x2
            coupling = U.reshape(d1 * d2, dout)
        else:  # rows j: contracted with x2 first, then with x1
            coupling = U.permute(1, 0, 2).reshape(d2, d1 * dout)
        self.register_buffer("coupling", coupling.clone(), persistent=False)
        path_index = self.spec.output_path_index()
        expand = torch.zeros(self.spec.num_paths, len(path_index), dtype=coupling.dtype)
        expand[path_index, torch.arange(len(path_index))] = 1.0
        self.register_buffer("path_expansion", expand, persistent=False)
        if weights == "internal":
            self.weight = torch.nn.Parameter(torch.randn(channels, self.spec.num_paths, dtype=dtype))
        self.fused = True  # aggregate() with the fused CPU kernel where it applies (False: tensor path only)
        self._kernel_tables = None

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
            return out if weights is None else _scale_paths(out, weights, self.path_expansion)
        if weights is None:
            return torch.bmm(x1, (x2 @ self.coupling).reshape(n, d1, self.irreps_out.dim))
        return _WeightedSharedProduct.apply(x1, x2, weights, self.coupling, self.path_expansion)

    def aggregate(
        self,
        h: torch.Tensor,
        x2: torch.Tensor,
        weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        num_nodes: int,
    ) -> torch.Tensor:
        """``sum over edges e into node n of forward(h[sender[e]], x2[e], weights[e])``: ``[N, C, D_out]``.

        Same result as gathering, calling the layer and summing per receiver, without storing the
        per-edge products (see :class:`_FusedMessagePassing`). Needs a shared ``x2`` and external
        weights (the message-passing case).
        """
        if self.x2_has_channels or self.weight_mode != "external":
            raise ValueError("aggregate() needs x2 shared by the channels and external weights")
        e, d_out = x2.shape[0], self.irreps_out.dim
        if x2.shape != (e, self.irreps_in2.dim) or weights.shape != (e, self.channels, self.num_paths):
            raise ValueError(
                f"expected x2 [E, {self.irreps_in2.dim}] and weights [E, {self.channels}, {self.num_paths}], "
                f"got {tuple(x2.shape)} and {tuple(weights.shape)}"
            )
        if h.dim() != 3 or h.shape[1:] != (self.channels, self.irreps_in1.dim):
            raise ValueError(f"h must have shape [N, {self.channels}, {self.irreps_in1.dim}], got {tuple(h.shape)}")
        if torch.compiler.is_compiling():  # traced (export, compile): the kernel as an operator, where it is
            tables = self._kernel_tables     # ready, else the plain, shape-generic form
            if (self.fused and tables is not None and is_loaded("message") and h.device.type == "cpu"
                    and h.shape[0] == num_nodes and tables[0].dtype == h.dtype):
                return message_passing(h, x2, weights, sender, receiver, *tables, d_out)
            return _message_passing_reference(h, x2, weights, sender, receiver, self.coupling,
                                              self.path_expansion, num_nodes)
        kernel = self._kernel(h) if h.shape[0] == num_nodes else None
        if kernel is not None:
            module, U, pairs, path = kernel  # U: the couplings of the used pairs, [d2, pairs]
            return _KernelMessagePassing.apply(h, x2 @ U, weights, sender, receiver, (module, U, pairs, path, d_out))
        chunk = max(16, (1 << 19) // (self.channels * d_out))  # about 4 MB of float64 messages per chunk
        return _FusedMessagePassing.apply(
            h, x2, weights, sender, receiver, self.coupling, self.path_expansion, num_nodes, chunk
        )

    def _kernel(self, h: torch.Tensor):
        """The fused CPU message-passing kernel and its tables where it applies, else ``None``."""
        if not self.fused or h.device.type != "cpu" or h.dtype not in (torch.float32, torch.float64):
            return None
        if torch.jit.is_scripting() or _is_batched(h):
            return None
        module = load_kernel("message")
        if module is None:
            return None
        if self._kernel_tables is not None and self._kernel_tables[0].dtype != h.dtype:  # converted since
            self._kernel_tables = None
        if self._kernel_tables is None:
            d1, d_out = self.irreps_in1.dim, self.irreps_out.dim
            U = self.coupling.detach().view(-1, d1, d_out)  # [d2, i, o]
            pairs = torch.nonzero(U.abs().amax(0) > 0)
            used = U[:, pairs[:, 0], pairs[:, 1]].contiguous()  # [d2, pairs]
            path = self.path_expansion.argmax(0).to(torch.int32).contiguous()
            self._kernel_tables = (used, pairs.to(torch.int32).contiguous(), path)
        return (module, *self._kernel_tables)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out.simplify()}, "
            f"channels={self.channels}, paths={self.num_paths}, basis={self.basis.name}, weights={self.weight_mode}"
        )
