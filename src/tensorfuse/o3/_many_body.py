"""The many-body product as data: a descriptor (:class:`ManyBodySpec`) and its plan (:class:`ManyBodyPlan`).

Every many-body product in tensorfuse is a weighted sum of caterpillar paths
``P_1 = X_0``, ``P_nu = P_(nu-1) ⊗ X_(nu-1)``, where every ``X`` is one atomic density ``A`` or, for
distinct inputs, ``X_k`` is input ``k``: ICTP's full/symmetric/reduced/latent product basis directly,
MACE's symmetric contraction and fusion trees (of one density of any shape, of distinct densities, the
Cormorant-style level's ``M ⊗ M'`` and ``(M ⊗ M') ⊗ F``) through a fixed map of their weights onto the
paths' (:func:`tensorfuse.nn._product_paths.weight_map`).

:class:`ManyBodySpec` says which product (plain data, frozen, checked once); :meth:`ManyBodySpec.plan`
compiles it into a :class:`ManyBodyPlan`: which paths exist, grouped how, and which weight column
each path takes. Two lowerings read the plan: the tensor path (:class:`tensorfuse.nn.ProductPaths`,
bundled matrix products) and the fused CPU kernel's sparse tables
(:func:`tensorfuse.nn._product_kernel.kernel_plan`). Nothing here touches torch.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass

from tensorfuse.o3._irreps import MAX_L, Irrep, Irreps


@dataclass(frozen=True)
class ManyBodySpec:
    """A many-body product of one density or of distinct inputs.

    ``inputs``: one Irreps (every step multiplies by that density) or ``correlation`` of them (step
    ``nu`` multiplies by input ``nu - 1``; ``A`` is their concatenation). ``irreps_out``: each irrep
    once. ``symmetric`` keeps one of each pair of swapped paths of the first product (the same span
    for one density; not for distinct inputs). ``l_internal`` caps the degrees of the intermediate
    products; ``level_copies`` mixes every intermediate product's copies down to that many per irrep
    (ICTP's reduced variant; the mixing weights follow the path weights).
    """

    inputs: tuple[Irreps, ...]
    irreps_out: Irreps
    correlation: int
    symmetric: bool = True
    l_internal: int | None = None
    level_copies: int | None = None

    def __post_init__(self):
        inputs = (self.inputs,) if isinstance(self.inputs, (str, Irreps)) else self.inputs
        object.__setattr__(self, "inputs", tuple(Irreps(x) for x in inputs))
        object.__setattr__(self, "irreps_out", Irreps(self.irreps_out))
        if self.correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {self.correlation}")
        for mul, ir in self.irreps_out:
            if mul != 1:
                raise ValueError(f"irreps_out must hold each irrep once per channel, got {self.irreps_out}")
        if len(self.inputs) not in (1, self.correlation):
            raise ValueError(f"one input, or one per order ({self.correlation}), got {len(self.inputs)}")
        if self.distinct and self.symmetric:
            raise ValueError("distinct inputs have no swapped paths to drop: symmetric must be False")
        if self.level_copies is not None and self.level_copies < 1:
            raise ValueError(f"level_copies must be >= 1, got {self.level_copies}")

    @property
    def distinct(self) -> bool:
        """Whether each step multiplies by its own input."""
        return len(self.inputs) > 1

    @property
    def irreps_a(self) -> Irreps:
        """The irreps of ``A``: the inputs concatenated."""
        return Irreps([(mul, ir) for irreps in self.inputs for mul, ir in irreps])

    def plan(self) -> "ManyBodyPlan":
        return _plan(self)


@functools.lru_cache(maxsize=256)
def _plan(spec: ManyBodySpec) -> "ManyBodyPlan":
    return ManyBodyPlan(spec)


@dataclass(frozen=True)
class PathGroup:
    """All paths ``(q, a) -> ir_out`` sharing the irrep of ``q``, the factor ``a`` and ``ir_out``."""

    ir_q: Irrep
    a: int  # index into the irreps of A (all inputs, concatenated)
    ir_out: Irrep
    q_copies: tuple[int, ...]  # which copies of ir_q in the previous product take part


@dataclass(frozen=True)
class PathBundle:
    """The groups of one step that share the irrep of their first factor (sorted by output)."""

    ir_q: Irrep
    groups: tuple[PathGroup, ...]


def _copies(irreps: Irreps) -> list[Irrep]:
    return [ir for mul, ir in irreps for _ in range(mul)]


def copy_offsets(irreps: list[Irrep]) -> dict[Irrep, list[int]]:
    """For each irrep type (in order of first appearance), the column offsets of its copies."""
    out: dict[Irrep, list[int]] = {}
    offset = 0
    for ir in irreps:
        out.setdefault(ir, []).append(offset)
        offset += ir.dim
    return out


class ManyBodyPlan:
    """The paths of a :class:`ManyBodySpec`, grouped for execution, and the weights' layout.

    * ``a_irreps`` / ``a_input``: every irrep copy of ``A`` and the input it belongs to;
      ``step_input[s]``: the input that step ``s`` (making ``P_(s+1)``) multiplies by.
    * ``layers[k]``: the irreps of the stored paths of ``P_(k+1)`` (the materialized products, all but
      the last order); ``layer_offsets[k]``: each irrep's copies' column offsets in that layer;
      ``raw_layers[k]``: before the reduced variant's mixing (``None``: unmixed).
    * ``steps[s]``: the bundles of step ``s``; ``final``: those of the last product, evaluated
      Horner-style (the weighted sum over its paths before the last coupling).
    * The weights' columns: ``collapse[k]`` lists ``(output irrep, copies)`` of layer ``k`` that are
      outputs, then one column per path of ``final``; ``labels``: ``(output irrep, order)`` of every
      column; ``path_scale``: ``1/sqrt(paths into the output irrep)`` (unit-variance outputs for
      unit-variance weights); ``mix_chunks``: ``(step, irrep, raw copies)`` of the mixing weights.
    """

    def __init__(self, spec: ManyBodySpec):
        self.spec = spec
        inputs, irreps_out, correlation = spec.inputs, spec.irreps_out, spec.correlation
        l_internal, level_copies = spec.l_internal, spec.level_copies
        self.a_irreps = [ir for irreps in inputs for ir in _copies(irreps)]
        self.a_input = [k for k, irreps in enumerate(inputs) for _ in _copies(irreps)]
        self.step_input = [s if spec.distinct else 0 for s in range(correlation)]
        self.raw_layers: list[list[Irrep] | None] = [None]
        out_types = [ir for _, ir in irreps_out]
        l_a = max(ir.l for ir in self.a_irreps)
        l_out = max(ir.l for ir in out_types)
        self.layers: list[list[Irrep]] = [[ir for ir, k in zip(self.a_irreps, self.a_input) if k == 0]]
        self.steps: list[list[PathBundle]] = [[]]
        for nu in range(2, correlation + 1):
            previous = self.layers[-1]
            last = nu == correlation
            # a degree above this cannot reach an output (nor be coupled beyond MAX_L)
            reach = min((correlation - nu) * l_a + l_out, MAX_L)

            def keep(ir: Irrep) -> bool:
                if last:
                    return ir in out_types
                return ir.l <= reach and (l_internal is None or ir.l <= l_internal)

            bundles = []
            for ir_q in dict.fromkeys(previous):
                q_indices = [i for i, ir in enumerate(previous) if ir == ir_q]
                groups = []
                for a, ir_a in enumerate(self.a_irreps):
                    if self.a_input[a] != self.step_input[nu - 1]:
                        continue
                    for ir_out in ir_q * ir_a:
                        if not keep(ir_out):
                            continue
                        if spec.symmetric and nu == 2:
                            # q indexes the irreps of A too: keep q <= a, and for q == a only the
                            # couplings that survive identical factors (even l1 + l2 - l3).
                            copies = tuple(
                                k for k, q in enumerate(q_indices)
                                if q < a or (q == a and (2 * ir_a.l - ir_out.l) % 2 == 0)
                            )
                        else:
                            copies = tuple(range(len(q_indices)))
                        if copies:
                            groups.append(PathGroup(ir_q, a, ir_out, copies))
                order = {ir: k for k, ir in enumerate(out_types)} if last else {}
                groups.sort(key=lambda g: (order.get(g.ir_out, 0), g.ir_out.l, -g.ir_out.p, g.a))
                if groups:
                    bundles.append(PathBundle(ir_q, tuple(groups)))
            self.steps.append(bundles)
            if not last:
                raw = [g.ir_out for b in bundles for g in b.groups for _ in g.q_copies]
                if level_copies is None:
                    self.raw_layers.append(None)
                    self.layers.append(raw)
                else:
                    self.raw_layers.append(raw)
                    self.layers.append([ir for ir in dict.fromkeys(raw) for _ in range(level_copies)])
        self.final: list[PathBundle] = self.steps[-1] if correlation >= 2 else []
        missing = [ir for ir in out_types if not (any(ir in layer for layer in self.layers)
                                                   or any(g.ir_out == ir for g in self.final_groups()))]
        if missing:
            raise ValueError(f"output irreps {missing} cannot be reached from A = {spec.irreps_a} "
                             f"with correlation {correlation}")
        for b in self.final:
            if len({len(g.q_copies) for g in b.groups}) != 1:
                raise RuntimeError("all groups of a bundle must use the same copies")

        # the weights' columns: the output paths of each materialized product, then the final step
        self.layer_offsets = [copy_offsets(layer) for layer in self.layers]
        self.collapse = [[(ir, len(offsets[ir])) for ir in out_types if ir in offsets]
                         for offsets in self.layer_offsets]
        self.weight_chunks = [count for entries in self.collapse for _, count in entries]
        self.weight_chunks += [len(b.groups[0].q_copies) * len(b.groups) for b in self.final]
        self.labels = [(ir, level + 1) for level, entries in enumerate(self.collapse) for ir, count in entries
                       for _ in range(count)]
        self.labels += [(g.ir_out, correlation) for b in self.final for g in b.groups for _ in g.q_copies]
        paths_into = collections.Counter(ir for ir, _ in self.labels)
        self.path_scale = [1 / math.sqrt(paths_into[ir]) for ir, _ in self.labels]
        self.num_paths = len(self.labels)
        # reduced variant: mixing weights per step and irrep, [C, copies_out * copies_in] each
        self.mix_chunks: list[tuple[int, Irrep, int]] = []
        for step, raw in enumerate(self.raw_layers):
            if raw is not None:
                self.mix_chunks += [(step, ir, raw.count(ir)) for ir in dict.fromkeys(raw)]
        self.num_mixing = sum((level_copies or 0) * j for *_, j in self.mix_chunks)
        starts = [0]
        for irreps in inputs:
            starts.append(starts[-1] + irreps.dim)
        self._step_columns = [(starts[k], starts[k + 1]) if spec.distinct else None for k in self.step_input]

    def final_groups(self) -> list[PathGroup]:
        return [g for b in self.final for g in b.groups]

    def step_columns(self, step: int) -> tuple[int, int] | None:
        """The columns of ``A`` that step ``step`` reads (``None``: all of ``A``, one density)."""
        return self._step_columns[step]
