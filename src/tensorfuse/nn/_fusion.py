"""Fusion blocks: a set of fusion trees over several inputs, with learnable per-path weights.

:class:`FusionBlock` executes a :class:`tensorfuse.o3.FusionSpec` channel-wise ("uuu": channel
``c`` of every input meets channel ``c`` of the others) in either basis:

    out[n, c, ir] = sum_{trees t -> ir} w[species_n, c, t] * T_t(x_1[n, c], ..., x_k[n, c])

Where the spec's trees are nested (every tree's leaves are the first ``k`` of one leaf order, as
in a product basis of distinct densities or the Cormorant-style level), they are fixed linear
combinations of the caterpillar paths over that order (recoupling): the block's weights are mapped
onto the paths' weights and :class:`~tensorfuse.nn._product_paths.ProductPaths` runs them — the
one product plan, with the fused CPU kernel — and the trees themselves are not evaluated.

Otherwise execution is a small compiled plan, not a loop over trees. Every distinct labelled subtree (a
"node") is evaluated once, however many trees share it, and nodes of one subtree shape ("slot")
are stored together as ``{irrep: [N, C, copies, 2l+1]}``. A slot is computed from its two child
slots with one matrix product per pair of child irrep types, which holds every output irrep and
every pair of copies at once: the number of operations grows with the number of irrep types, not
with the number of paths. The couplings are the basis' unit-norm path couplings times
``sqrt(2l+1)`` (unit-variance outputs for unit-variance inputs), the same in both bases up to the
change of basis, so the spherical and Cartesian blocks compute the same function with the same
weights.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from tensorfuse.nn._linear import species_rows
from tensorfuse.nn._product_paths import ProductPaths, weight_map
from tensorfuse.o3 import FusionSpec, Irrep, Irreps, ManyBodySpec, get_basis
from tensorfuse.o3._fusion import Shape, make_shape, shape_leaves


@dataclass(frozen=True)
class _VertexGroup:
    """The nodes of a slot whose children have irreps ``(left, right)``, computed in one product.

    ``outputs``: the output irreps of the stacked coupling, in order; ``full_outputs``: for each,
    whether it keeps every one of the ``num_pairs`` copy pairs (else a selection buffer is used);
    ``left_mode``/``right_mode``: how the children's copies enter (see :func:`_index_mode`).
    """

    index: int
    left: Irrep
    right: Irrep
    outputs: tuple
    full_outputs: tuple
    num_pairs: int
    left_mode: str
    right_mode: str


class _Slot:
    """The nodes of one subtree shape: per irrep, the node keys in storage order."""

    def __init__(self, shape: Shape):
        self.shape = shape
        self.copies: dict[Irrep, list] = {}
        self.position: dict = {}  # node key -> (irrep, copy index)

    def add(self, key, ir: Irrep):
        if key not in self.position:
            self.position[key] = (ir, len(self.copies.setdefault(ir, [])))
            self.copies[ir].append(key)


def _node_keys(tree) -> tuple:
    """The key of the root node of ``tree`` and of all its subtrees (post-order)."""
    labels = iter(tree.labels)
    keys = []

    def walk(shape: Shape, is_root: bool):
        if isinstance(shape, int):
            key = (shape, tree.leaves[shape])
            keys.append((shape, key, tree.leaves[shape]))
            return key
        left, right = walk(shape[0], False), walk(shape[1], False)
        ir = tree.output if is_root else next(labels)
        key = (left, right, ir)
        keys.append((shape, key, ir))
        return key

    root = walk(tree.shape, True)
    return root, keys


class FusionBlock(torch.nn.Module):
    """Evaluate every tree of a :class:`~tensorfuse.o3.FusionSpec` with per-path weights.

    Inputs: a list of tensors ``[N, C, leaves[k].dim]`` (one per leaf of the spec; the same tensor
    may be passed for several leaves), and ``species`` ``[N]`` when ``num_species`` is set (one
    weight per species, channel and path, as in MACE). Output ``[N, C, irreps_out.dim]``.

    ``as_paths`` (default): run nested trees on the product paths (module docstring); ``False``
    evaluates the trees themselves (the reference the map is fitted to). ``one_density``: every leaf
    is the same density (passing the same tensor for each is checked), so the trees map onto that
    density's symmetric paths, fewer than those of distinct inputs.
    """

    def __init__(self, spec: FusionSpec, channels: int, num_species: int | None = None, basis="spherical",
                 dtype: torch.dtype | None = None, as_paths: bool = True, one_density: bool = False):
        super().__init__()
        if not isinstance(spec, FusionSpec):
            raise ValueError(f"FusionBlock needs a FusionSpec, got {type(spec).__name__}")
        self.spec, self.channels, self.num_species = spec, channels, num_species
        self.basis = get_basis(basis)
        self.irreps_out = spec.irreps_out
        self._leaf_dims = [irreps.dim for irreps in spec.leaves]
        self._leaf_offsets = [{ir: s for (_, ir), s in zip(irreps, irreps.slices())} for irreps in spec.leaves]

        # slots and nodes, children before parents
        slots: dict[Shape, _Slot] = {}
        roots = []
        for tree in spec.trees:
            root, nodes = _node_keys(tree)
            for shape, key, ir in nodes:
                slots.setdefault(shape, _Slot(shape)).add(key, ir)
            roots.append((tree.shape, root, tree.output))
        order = sorted(slots, key=lambda s: len(shape_leaves(s)))
        self._slots = [slots[s] for s in order]
        self._slot_index = {s: i for i, s in enumerate(order)}

        # vertex plans: per slot, per (left irrep, right irrep) pair: which copy pairs to couple,
        # and for each output irrep which of those pairs it keeps
        dtype = dtype or torch.get_default_dtype()
        self._vertex_plans: list[list[_VertexGroup]] = []
        for i, slot in enumerate(self._slots):
            plan = []
            if not isinstance(slot.shape, int):
                left, right = slots[slot.shape[0]], slots[slot.shape[1]]
                groups: dict[tuple, dict] = {}
                for ir, keys in slot.copies.items():
                    for key in keys:
                        ir_l, a = left.position[key[0]]
                        ir_r, b = right.position[key[1]]
                        groups.setdefault((ir_l, ir_r), {}).setdefault(ir, []).append((a, b))
                for g, ((ir_l, ir_r), outs) in enumerate(groups.items()):
                    pairs = sorted({p for ps in outs.values() for p in ps})
                    pair_index = {p: k for k, p in enumerate(pairs)}
                    out_irs = sorted(outs, key=lambda x: (x.l, -x.p))
                    C = torch.cat([
                        self.basis.unit_variance_coupling(ir_l.l, ir_r.l, ir.l, dtype=dtype)
                        for ir in out_irs
                    ], dim=-1)  # [2l_l+1, 2l_r+1, sum of output dims]
                    self.register_buffer(f"coupling_{i}_{g}", C.reshape(-1, C.shape[-1]).contiguous(), persistent=False)
                    a_idx = torch.tensor([p[0] for p in pairs])
                    b_idx = torch.tensor([p[1] for p in pairs])
                    self.register_buffer(f"left_{i}_{g}", a_idx, persistent=False)
                    self.register_buffer(f"right_{i}_{g}", b_idx, persistent=False)
                    full = []
                    for ir in out_irs:
                        chosen = [pair_index[p] for p in outs[ir]]
                        self.register_buffer(f"select_{i}_{g}_{ir}", torch.tensor(chosen), persistent=False)
                        full.append(chosen == list(range(len(pairs))))
                    plan.append(_VertexGroup(
                        g, ir_l, ir_r, tuple(out_irs), tuple(full), len(pairs),
                        _index_mode(a_idx.tolist(), len(left.copies[ir_l])),
                        _index_mode(b_idx.tolist(), len(right.copies[ir_r])),
                    ))
                # the copies of each output irrep are stored in group order: reorder the slot's keys
                new_copies: dict[Irrep, list] = {}
                for group in plan:
                    for ir in group.outputs:
                        for key in (k for k in slot.copies[ir] if left.position[k[0]][0] == group.left
                                    and right.position[k[1]][0] == group.right):
                            new_copies.setdefault(ir, []).append(key)
                slot.copies = new_copies
                slot.position = {key: (ir, j) for ir, keys in new_copies.items() for j, key in enumerate(keys)}
            self._vertex_plans.append(plan)

        # the weighted sum at the roots: per (slot, output irrep), which copies are paths
        per_output = spec.paths_per_output()
        self._root_terms = []  # (slot index, irrep, number of paths, all copies?)
        scale = []
        root_keys: dict[tuple, list] = {}
        for shape, key, ir in roots:
            root_keys.setdefault((self._slot_index[shape], ir), []).append(key)
        for (s, ir), keys in root_keys.items():
            slot = self._slots[s]
            copies = sorted(slot.position[k][1] for k in keys)
            all_copies = copies == list(range(len(slot.copies[ir])))
            self.register_buffer(f"root_{s}_{ir}", torch.tensor(copies), persistent=False)
            self._root_terms.append((s, ir, len(copies), all_copies))
            scale += [1 / math.sqrt(per_output[ir])] * len(copies)
        self.num_paths = len(scale)
        shape = (num_species or 1, channels, self.num_paths)
        self.weights = torch.nn.Parameter(torch.randn(*shape, dtype=dtype))
        self.register_buffer("path_scale", torch.tensor(scale, dtype=dtype), persistent=False)

        # the product plan that runs these trees where they are nested (see the module docstring);
        # one_density: every leaf is the same input (the caller's promise, checked), whose symmetric
        # paths are fewer than those of distinct inputs
        if one_density and len({str(irreps) for irreps in spec.leaves}) != 1:
            raise ValueError(f"one_density needs equal leaves, got {[str(x) for x in spec.leaves]}")
        self.one_density = one_density
        self.paths, self._path_order = None, ()
        found = _paths_weight_map(spec.leaves, spec.irreps_out, spec.shapes, spec.l_internal, self.basis.name,
                                  one_density) if as_paths else None
        if found is not None:
            self._path_order, cap, M = found
            self.paths = _product_paths(spec.leaves, self._path_order, spec.irreps_out, cap, self.basis,
                                        one_density, dtype)
            self.register_buffer("weight_map", M.to(dtype, copy=True), persistent=False)

    def species_axes(self) -> dict[str, int]:
        """Species-indexed tensors (name -> species axis): see :mod:`tensorfuse.model._transfer`."""
        return {"weights": 0} if self.num_species else {}

    # -- execution -------------------------------------------------------------------------------
    def _leaf(self, slot: _Slot, x: torch.Tensor) -> dict[Irrep, torch.Tensor]:
        k = slot.shape
        offsets = self._leaf_offsets[k]
        out = {}
        for ir in slot.copies:
            s = offsets[ir]
            out[ir] = x[:, :, s].unsqueeze(2)  # [N, C, 1, d]
        return out

    def _vertex(self, i: int, left: dict, right: dict) -> dict[Irrep, torch.Tensor]:
        pieces: dict[Irrep, list] = {}
        for group in self._vertex_plans[i]:
            g, num_pairs = group.index, group.num_pairs
            L, R = left[group.left], right[group.right]
            if group.left_mode == "select":
                L = L.index_select(2, getattr(self, f"left_{i}_{g}"))
            if group.right_mode == "select":
                R = R.index_select(2, getattr(self, f"right_{i}_{g}"))
            n, c = L.shape[0], L.shape[1]
            outer = (L.unsqueeze(-1) * R.unsqueeze(-2)).reshape(n * c * num_pairs, -1)
            y = (outer @ getattr(self, f"coupling_{i}_{g}")).view(n, c, num_pairs, -1)
            parts = y.split([ir.dim for ir in group.outputs], dim=-1) if len(group.outputs) > 1 else [y]
            for ir, full, part in zip(group.outputs, group.full_outputs, parts):
                if not full:
                    part = part.index_select(2, getattr(self, f"select_{i}_{g}_{ir}"))
                pieces.setdefault(ir, []).append(part)
        return {ir: torch.cat(p, dim=2) if len(p) > 1 else p[0] for ir, p in pieces.items()}

    def forward(self, inputs: list[torch.Tensor], species: torch.Tensor | None = None) -> torch.Tensor:
        if len(inputs) != len(self._leaf_dims):
            raise ValueError(f"this fusion block has {len(self._leaf_dims)} leaves, got {len(inputs)} inputs")
        n = inputs[0].shape[0]
        for k, (x, d) in enumerate(zip(inputs, self._leaf_dims)):
            if x.dim() != 3 or x.shape != (n, self.channels, d):
                raise ValueError(f"fusion input {k} must have shape [{n}, {self.channels}, {d}], got {tuple(x.shape)}")
        if self.num_species and species is None:
            raise ValueError("this fusion block has per-species weights: pass `species`")
        if self.one_density and any(x is not inputs[0] for x in inputs):
            raise ValueError("this fusion block is of one density: pass the same tensor for every leaf")
        if self.paths is not None:
            W = torch.matmul(self.weights * self.path_scale, self.weight_map)  # [Z or 1, C, paths]
            if not self.num_species:
                species = torch.zeros(n, dtype=torch.long, device=inputs[0].device)
            order = self._path_order
            A = inputs[order[0]] if self.one_density or len(order) == 1 else torch.cat([inputs[k] for k in order], -1)
            return self.paths(A, species, W)
        # [N, C, P] per species, or [1, C, P] broadcast over atoms
        W = (species_rows(self.weights, species) if self.num_species else self.weights) * self.path_scale
        return self.contract(inputs, W)

    def contract(self, inputs: list[torch.Tensor], W: torch.Tensor) -> torch.Tensor:
        """The trees summed with weights ``W`` ``[N or 1, C, num_paths]`` (already scaled)."""
        chunks = iter(W.split([t[2] for t in self._root_terms], dim=-1))
        terms: dict[Irrep, torch.Tensor] = {}
        for ir, x in self._roots(inputs):
            y = torch.matmul(next(chunks).unsqueeze(-2), x).squeeze(-2)  # sum over copies: [N, C, d]
            terms[ir] = terms[ir] + y if ir in terms else y
        return torch.cat([terms[ir] for _, ir in self.irreps_out], dim=-1)

    def each_path(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """``[N, C, num_paths, irreps_out.dim]``: every tree alone (unit weight, unscaled)."""
        n, c = inputs[0].shape[:2]
        out = inputs[0].new_zeros(n, c, self.num_paths, self.irreps_out.dim)
        slices = dict(zip((ir for _, ir in self.irreps_out), self.irreps_out.slices()))
        p = 0
        for ir, x in self._roots(inputs):
            out[:, :, p : p + x.shape[2], slices[ir]] = x
            p += x.shape[2]
        return out

    def _roots(self, inputs: list[torch.Tensor]):
        """``(irrep, [N, C, paths, d])`` of every root term, in the weights' order."""
        values: list[dict[Irrep, torch.Tensor]] = []
        for i, slot in enumerate(self._slots):
            if isinstance(slot.shape, int):
                values.append(self._leaf(slot, inputs[slot.shape]))
            else:
                s = self._slot_index
                values.append(self._vertex(i, values[s[slot.shape[0]]], values[s[slot.shape[1]]]))
        for s, ir, count, all_copies in self._root_terms:
            x = values[s][ir]
            yield ir, (x if all_copies else x.index_select(2, getattr(self, f"root_{s}_{ir}")))

    def extra_repr(self) -> str:
        species = f", per species ({self.num_species})" if self.num_species else ""
        return f"{self.spec}, channels={self.channels}, basis={self.basis.name}{species}"


def _index_mode(index: list[int], copies: int) -> str:
    """How a child's copies enter a vertex: ``"all"`` in order, ``"broadcast"`` (one copy), or ``"select"``."""
    if index == list(range(copies)):
        return "all"
    if copies == 1:
        return "broadcast"
    return "select"


def _product_paths(leaves: tuple, order: tuple, irreps_out: Irreps, l_internal: int | None, basis,
                   one_density: bool, dtype) -> ProductPaths:
    """The caterpillar paths over ``order``: of one density (its symmetric paths) or of distinct inputs."""
    inputs = leaves[0] if one_density else tuple(leaves[k] for k in order)
    return ProductPaths(ManyBodySpec(inputs, irreps_out, len(order), one_density, l_internal), basis, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _paths_weight_map(leaves: tuple, irreps_out: Irreps, shapes: tuple, l_internal: int | None, basis: str,
                      one_density: bool):
    """``(leaf order, the paths' l_internal, M [trees, paths])``: the trees of a spec as fixed
    combinations of the caterpillar paths over its nested leaf order (float64), or ``None`` where the
    trees are not nested. The paths take the trees' cap on internal degrees where that spans them,
    else none (uncapped paths span every tree of their leaves; e.g. a capped balanced tree).
    Cached per spec."""
    spec = FusionSpec(list(leaves), irreps_out, list(shapes), l_internal)
    order = spec.nested_leaf_order()
    if order is None:
        return None
    each_tree = FusionBlock(spec, 1, None, basis, dtype=torch.float64, as_paths=False)
    dims = [leaves[k].dim for k in order]

    def columns(A: torch.Tensor) -> torch.Tensor:
        if one_density:
            return each_tree.each_path([A.unsqueeze(1)] * len(leaves)).squeeze(1)
        inputs = [A.new_zeros(A.shape[0], 1, irreps.dim) for irreps in leaves]  # leaves no tree uses
        for k, part in zip(order, A.split(dims, dim=-1)):
            inputs[k] = part.unsqueeze(1)
        return each_tree.each_path(inputs).squeeze(1)

    for cap in dict.fromkeys([l_internal, None]):
        paths = _product_paths(leaves, order, irreps_out, cap, basis, one_density, torch.float64)
        M = weight_map(paths, columns, each_tree.num_paths)
        if M is not None:
            return order, cap, M
    return None


FUSION_MODES = ("density", "distinct")


class FusionProductBasis(torch.nn.Module):
    """A product basis made of fusion trees: ``B = sum_{k=1..nu} sum_{trees of k leaves} w T``.

    A drop-in alternative to :class:`~tensorfuse.nn.ProductBasis` (same inputs and outputs) whose
    leaves are chosen by ``mode``:

    * ``"density"``: every leaf is the atomic density ``A``. With the caterpillar shape the trees
      are exactly the ordered paths of ICTP's ``"full"`` product basis (and MACE's generalized
      Clebsch–Gordan tensors before symmetrization), so the span is that of the standard product
      basis (tested).
    * ``"distinct"``: leaf ``k`` is its own density ``A_k`` (own radial weights and linear maps,
      see :class:`~tensorfuse.nn.Interaction` ``num_densities``), so ``A_1 ⊗ A_2 ⊗ A_3`` is a
      genuinely multi-input map rather than a power of one density.

    Orders ``1..nu`` share their common subtrees (with the caterpillar shape the order-``k`` tree
    is the left subtree of the order-``k+1`` tree). ``shape`` is ``"caterpillar"`` or
    ``"balanced"``; both span the same space (recoupling), only the cost and the labels differ.
    ``l_internal`` caps internal degrees: fewer paths and parameters, a smaller space.

    Either way the trees' weights are mapped onto the product paths' weights (recoupling; with
    ``l_internal`` and the balanced shape, onto uncapped paths, which span every tree) and the paths
    run (:class:`FusionBlock`; the fused kernel on CPU).
    """

    def __init__(self, irreps_a, irreps_out, channels: int, correlation: int, num_species: int,
                 mode: str = "density", shape: str = "caterpillar", basis="spherical",
                 l_internal: int | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        self.irreps_a, self.irreps_out = Irreps(irreps_a), Irreps(irreps_out)
        self.mode, self.correlation, self.channels = mode, correlation, channels
        shapes = [make_shape(shape, k) for k in range(1, correlation + 1)]
        spec = FusionSpec([self.irreps_a] * correlation, self.irreps_out, shapes, l_internal)
        # one density: its symmetric paths (fewer than distinct inputs'); see FusionBlock
        self.block = FusionBlock(spec, channels, num_species, basis, dtype=dtype, one_density=mode == "density")
        self.num_paths = self.block.num_paths

    @property
    def num_inputs(self) -> int:
        """How many densities ``forward`` takes: 1 (density mode) or ``correlation`` (distinct)."""
        return 1 if self.mode == "density" else self.correlation

    def forward(self, A, species: torch.Tensor) -> torch.Tensor:
        if self.mode == "density":
            if isinstance(A, (list, tuple)):
                raise ValueError("the density-mode fusion product basis takes one density A, not a list")
            leaves = [A] * self.correlation
        else:
            if not isinstance(A, (list, tuple)) or len(A) != self.correlation:
                raise ValueError(f"the distinct-mode fusion product basis takes a list of {self.correlation} densities")
            leaves = list(A)
        return self.block(leaves, species)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, correlation={self.correlation}, paths={self.num_paths}"
