"""Fusion diagrams as data: trees of pairwise couplings, enumerated, counted, never executed here.

A fusion tree (Li, Pengmei et al., "Unifying O(3) equivariant neural networks design with
tensor-network formalism") is a binary tree whose leaves are irreps of ``n`` inputs, whose
vertices are one coupling ``l1 ⊗ l2 -> l3`` each (a Clebsch–Gordan tensor in the spherical basis,
an irreducible Cartesian product in the Cartesian basis), and whose root edge is the output irrep.
Every vertex obeys the triangle and parity rules, so every tree is an O(3)-equivariant multilinear
map of its leaves.

* A **shape** is the tree without labels: a leaf index ``k`` or a pair ``(left, right)`` of
  shapes, e.g. ``((0, 1), 2)`` (caterpillar) or ``((0, 1), (2, 3))`` (balanced).
* A :class:`FusionTree` is a shape with an irrep on every edge: the leaves, the internal edges
  (``labels``, one per non-root vertex in post-order) and the output.
* :func:`fusion_trees` enumerates every admissible labelling of a shape for given leaf irreps and
  outputs (optionally capping internal degrees); for a fixed shape and fixed leaf irreps the trees
  form a basis of the equivariant maps, so their number is the multiplicity of the output in the
  product of the leaves, which :func:`multiplicity` computes independently from characters.
* A :class:`FusionSpec` is what a fusion block computes: a set of trees (possibly of several
  shapes over a shared list of leaves, e.g. every order of a product basis) with one learnable
  weight per tree. The layers of :mod:`tensorfuse.nn` execute it in either basis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import numpy as np

from tensorfuse.o3._irreps import MAX_L, Irrep, Irreps

Shape = Union[int, tuple]
SHAPES = ("caterpillar", "balanced")


# -- shapes --------------------------------------------------------------------------------------
def caterpillar(n: int, leaves: Sequence[int] | None = None) -> Shape:
    """The left-associative shape ``((((0, 1), 2), ...), n-1)`` (over ``leaves`` if given)."""
    leaves = list(range(n)) if leaves is None else list(leaves)
    if not leaves:
        raise ValueError("a fusion tree needs at least one leaf")
    shape: Shape = leaves[0]
    for k in leaves[1:]:
        shape = (shape, k)
    return shape


def balanced(n: int, leaves: Sequence[int] | None = None) -> Shape:
    """The balanced shape, e.g. ``((0, 1), (2, 3))`` for four leaves (left side larger if odd)."""
    leaves = list(range(n)) if leaves is None else list(leaves)
    if not leaves:
        raise ValueError("a fusion tree needs at least one leaf")
    if len(leaves) == 1:
        return leaves[0]
    half = (len(leaves) + 1) // 2
    return (balanced(half, leaves[:half]), balanced(len(leaves) - half, leaves[half:]))


def make_shape(shape: str | Shape, n: int, leaves: Sequence[int] | None = None) -> Shape:
    """``"caterpillar"``, ``"balanced"`` (over ``leaves``, default ``0..n-1``) or an explicit nested tuple."""
    if isinstance(shape, str):
        if shape == "caterpillar":
            return caterpillar(n, leaves)
        if shape == "balanced":
            return balanced(n, leaves)
        raise ValueError(f"unknown fusion tree shape {shape!r}: expected one of {SHAPES} or a nested tuple")
    check_shape(shape)
    return shape


def check_shape(shape: Shape) -> tuple[int, ...]:
    """Validate a shape (a full binary tree) and return its leaf indices, left to right."""
    if isinstance(shape, bool):
        raise ValueError(f"invalid fusion tree shape {shape!r}")
    if isinstance(shape, int):
        if shape < 0:
            raise ValueError(f"invalid fusion tree shape: leaf index {shape} is negative")
        return (shape,)
    if not isinstance(shape, tuple) or len(shape) != 2:
        raise ValueError(f"invalid fusion tree shape {shape!r}: expected a leaf index or a pair (left, right)")
    leaves = check_shape(shape[0]) + check_shape(shape[1])
    if len(set(leaves)) != len(leaves):
        raise ValueError(f"invalid fusion tree shape {shape!r}: a leaf index appears twice")
    return leaves


def shape_leaves(shape: Shape) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else shape_leaves(shape[0]) + shape_leaves(shape[1])


def shape_to_str(shape: Shape) -> str:
    return str(shape) if isinstance(shape, int) else f"({shape_to_str(shape[0])},{shape_to_str(shape[1])})"


# -- trees ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionTree:
    """A labelled fusion tree: ``shape``, leaf irreps (indexed by leaf number), internal labels, output.

    ``leaves[k]`` is the irrep taken from input ``k``; inputs that the shape does not use are
    ``None``. ``labels`` are the irreps of the internal edges, one per non-root vertex in
    post-order (left subtree, right subtree, vertex). Validated on construction.
    """

    shape: Shape
    leaves: tuple
    labels: tuple[Irrep, ...]
    output: Irrep

    def __post_init__(self):
        used = check_shape(self.shape)
        object.__setattr__(self, "leaves", tuple(None if ir is None else Irrep(ir) for ir in self.leaves))
        object.__setattr__(self, "labels", tuple(Irrep(ir) for ir in self.labels))
        object.__setattr__(self, "output", Irrep(self.output))
        for k in used:
            if k >= len(self.leaves) or self.leaves[k] is None:
                raise ValueError(f"fusion tree {shape_to_str(self.shape)}: leaf {k} has no irrep")
        if len(self.labels) != max(len(used) - 2, 0):
            raise ValueError(
                f"fusion tree {shape_to_str(self.shape)} has {max(len(used) - 2, 0)} internal edges, "
                f"got {len(self.labels)} labels"
            )
        if len(used) == 1 and self.output != self.leaves[used[0]]:
            raise ValueError(f"a one-leaf fusion tree outputs its leaf {self.leaves[used[0]]}, not {self.output}")
        for left, right, out in self.vertices():
            if out not in left * right:
                raise ValueError(
                    f"fusion tree {self}: inadmissible vertex {left} x {right} -> {out} "
                    f"(needs l in {abs(left.l - right.l)}..{left.l + right.l} and parity {left.p * right.p:+d})"
                )

    @property
    def num_leaves(self) -> int:
        return len(shape_leaves(self.shape))

    def vertices(self) -> list[tuple[Irrep, Irrep, Irrep]]:
        """``(left, right, out)`` irreps of every vertex in post-order (the root last)."""
        labels = iter(self.labels)
        out: list[tuple[Irrep, Irrep, Irrep]] = []

        def walk(shape: Shape, is_root: bool) -> Irrep:
            if isinstance(shape, int):
                return self.leaves[shape]
            left, right = walk(shape[0], False), walk(shape[1], False)
            label = self.output if is_root else next(labels)
            out.append((left, right, label))
            return label

        walk(self.shape, True)
        return out

    def __str__(self) -> str:
        labels = iter(self.labels)

        def text(shape: Shape, is_root: bool) -> str:
            if isinstance(shape, int):
                return f"{self.leaves[shape]}[{shape}]"
            inner = f"({text(shape[0], False)} x {text(shape[1], False)})"
            return inner if is_root else f"{inner}->{next(labels)}"

        return f"{text(self.shape, True)}->{self.output}"


def _as_irreps_list(leaves) -> list[Irreps]:
    out = []
    for k, leaf in enumerate(leaves):
        irreps = Irreps(leaf)
        seen = [ir for _, ir in irreps]
        if any(mul != 1 for mul, _ in irreps) or len(set(seen)) != len(seen):
            raise ValueError(f"fusion leaf {k} ({irreps}) must hold each irrep once per channel")
        out.append(irreps)
    return out


def fusion_trees(leaves, outputs, shape: str | Shape = "caterpillar", l_internal: int | None = None) -> list[FusionTree]:
    """Every admissible labelling of ``shape`` for leaf irreps ``leaves`` and output ``outputs``.

    ``leaves``: one Irreps per input (each irrep at most once), e.g. ``["0e+1o", "0e+1o"]``.
    ``outputs``: the wanted output irreps. ``shape``: ``"caterpillar"``, ``"balanced"`` or a nested
    tuple over the leaf indices (it may leave some inputs out). ``l_internal`` caps the degree of
    internal edges (never above ``MAX_L``). Trees are ordered by output, then by leaf irreps and
    labels; their number for one output is the multiplicity of that output when uncapped.
    """
    leaf_irreps = _as_irreps_list(leaves)
    n = len(leaf_irreps)
    if n == 0:
        raise ValueError("fusion_trees needs at least one leaf")
    shape = make_shape(shape, n)
    used = shape_leaves(shape)
    if max(used) >= n:
        raise ValueError(f"fusion tree shape {shape_to_str(shape)} refers to leaf {max(used)}, but only {n} leaves are given")
    outs = [ir for _, ir in Irreps(outputs)]
    if not outs:
        raise ValueError("fusion_trees needs at least one output irrep")
    cap = MAX_L if l_internal is None else min(int(l_internal), MAX_L)
    if cap < 0:
        raise ValueError(f"l_internal must be >= 0, got {l_internal}")
    l_out = max(ir.l for ir in outs)
    lmax = {k: max(ir.l for _, ir in leaf_irreps[k]) for k in used}

    # labellings of a subtree: list of (output irrep, {leaf: irrep}, labels in post-order)
    def labellings(sub: Shape, is_root: bool) -> list[tuple[Irrep, dict, tuple]]:
        if isinstance(sub, int):
            return [(ir, {sub: ir}, ()) for _, ir in leaf_irreps[sub]]
        lefts, rights = labellings(sub[0], False), labellings(sub[1], False)
        # a degree above this cannot reach any output through the leaves outside the subtree
        reach = l_out + sum(lmax[k] for k in used if k not in shape_leaves(sub))
        result = []
        for ir_l, leaves_l, labels_l in lefts:
            for ir_r, leaves_r, labels_r in rights:
                for ir in ir_l * ir_r:
                    if is_root:
                        if ir not in outs:
                            continue
                        labels = labels_l + labels_r
                    else:
                        if ir.l > min(cap, reach):
                            continue
                        labels = labels_l + labels_r + (ir,)
                    result.append((ir, {**leaves_l, **leaves_r}, labels))
        return result

    trees = []
    for ir, chosen, labels in labellings(shape, True):
        if isinstance(shape, int) and ir not in outs:
            continue
        trees.append(FusionTree(shape, tuple(chosen.get(k) for k in range(n)), labels, ir))
    order = {ir: i for i, ir in enumerate(outs)}
    trees.sort(key=lambda t: (order[t.output], [(-1, 0) if ir is None else (ir.l, -ir.p) for ir in t.leaves],
                              [(ir.l, -ir.p) for ir in t.labels]))
    return trees


def multiplicity(leaves: Iterable, output) -> int:
    """How often ``output`` occurs in the tensor product of the irreps ``leaves`` (from characters).

    Independent of any tree: the SO(3) multiplicity is the average over the group of
    ``chi_out * prod(chi_k)``, computed exactly by a trapezoid rule on the class angle (the
    integrand is a cosine polynomial), and parity must match the product of the leaves' parities.
    """
    irreps = [Irrep(ir) for ir in leaves]
    output = Irrep(output)
    if math.prod(ir.p for ir in irreps) != output.p:
        return 0
    degree = sum(ir.l for ir in irreps) + output.l + 2
    theta = 2 * math.pi * np.arange(2 * degree + 1) / (2 * degree + 1)

    def character(l: int) -> np.ndarray:
        return 1 + 2 * sum(np.cos(m * theta) for m in range(1, l + 1)) if l else np.ones_like(theta)

    integrand = character(output.l) * (1 - np.cos(theta))
    for ir in irreps:
        integrand = integrand * character(ir.l)
    return int(round(float(integrand.mean())))


class FusionSpec:
    """The trees one fusion block evaluates, each with its own learnable weight.

    ``leaves``: the Irreps of each input (per channel). ``irreps_out``: the outputs (each irrep
    once). ``shapes``: one shape or a list (``"caterpillar"``/``"balanced"`` mean the full-width
    tree over all leaves); several shapes over shared leaves make one block of several orders,
    e.g. ``[0, (0, 1), ((0, 1), 2)]`` for a product basis of orders 1-3, and subtrees common to
    several shapes are evaluated once. ``l_internal`` caps internal degrees. Outputs that no tree
    reaches raise a ``ValueError``.
    """

    def __init__(self, leaves, irreps_out, shapes: str | Shape | list = "caterpillar", l_internal: int | None = None):
        self.leaves = tuple(_as_irreps_list(leaves))
        self.irreps_out = Irreps(irreps_out)
        for mul, ir in self.irreps_out:
            if mul != 1:
                raise ValueError(f"fusion outputs must hold each irrep once per channel, got {self.irreps_out}")
        if isinstance(shapes, list):
            self.shapes = tuple(make_shape(s, len(self.leaves)) for s in shapes)
        else:
            self.shapes = (make_shape(shapes, len(self.leaves)),)
        if not self.shapes:
            raise ValueError("a fusion spec needs at least one shape")
        self.l_internal = l_internal
        trees: list[FusionTree] = []
        for shape in self.shapes:
            trees += fusion_trees(self.leaves, self.irreps_out, shape, l_internal)
        self.trees: tuple[FusionTree, ...] = tuple(trees)
        missing = [ir for _, ir in self.irreps_out if not any(t.output == ir for t in self.trees)]
        if missing:
            raise ValueError(
                f"output irreps {missing} cannot be reached by fusion trees {[shape_to_str(s) for s in self.shapes]} "
                f"of leaves {[str(x) for x in self.leaves]}"
            )

    @property
    def num_paths(self) -> int:
        return len(self.trees)

    def nested_leaf_order(self) -> tuple[int, ...] | None:
        """The leaf order whose first ``k`` leaves are the leaves of every ``k``-leaf tree (e.g.
        ``(1, 2, 0)`` for trees ``(1, 2)`` and ``((1, 2), 0)``), or ``None`` where there is none. Where
        there is one, every tree is a fixed combination of the caterpillar paths over that order
        (recoupling): a :class:`~tensorfuse.o3.ManyBodySpec` with those inputs spans them."""
        order: list[int] = []
        for leaves in sorted({shape_leaves(s) for s in self.shapes}, key=len):
            if not set(order) <= set(leaves):
                return None
            order += [k for k in leaves if k not in order]
        return tuple(order)

    def paths_per_output(self) -> dict[Irrep, int]:
        out = {ir: 0 for _, ir in self.irreps_out}
        for t in self.trees:
            out[t.output] += 1
        return out

    def __repr__(self) -> str:
        shapes = ", ".join(shape_to_str(s) for s in self.shapes)
        return (f"FusionSpec(leaves={[str(x) for x in self.leaves]}, shapes=[{shapes}], "
                f"out={self.irreps_out}, {self.num_paths} paths)")

