"""The many-body product descriptor and its plan: plain data, checked once, counted independently."""

import collections
import itertools

import pytest

from tensorfuse.o3 import Irreps, ManyBodyPlan, ManyBodySpec, multiplicity


def _expected_paths(inputs, irreps_out, order):
    """Paths into each output of order ``order`` with no cap and no symmetry: the multiplicity of the
    output in ``X_0 ⊗ ... ⊗ X_(order-1)`` (from characters, not from any tree), summed over the
    inputs' irrep copies."""
    copies = [[ir for mul, ir in Irreps(x) for _ in range(mul)] for x in inputs[:order]]
    return {ir: sum(multiplicity(choice, ir) for choice in itertools.product(*copies)) for _, ir in Irreps(irreps_out)}


@pytest.mark.parametrize("inputs, irreps_out", [
    (("0e+1o+2e",) * 3, "0e+1o+2e"),
    (("0e+1o", "2x0e+1o+2e", "1o", "0e+1e"), "0e+1o+1e"),
    (("1o+2e",), "0e+1o+2e"),
])
def test_the_plan_has_every_path_of_every_order_and_no_other(inputs, irreps_out):
    correlation = max(len(inputs), 3)
    spec = ManyBodySpec(inputs, irreps_out, correlation, symmetric=False)
    plan = spec.plan()
    inputs = inputs * correlation if len(inputs) == 1 else inputs
    counted = collections.Counter(plan.labels)
    for order in range(1, correlation + 1):
        for ir, count in _expected_paths(inputs, irreps_out, order).items():
            assert counted[(ir, order)] == count, (ir, order)
    assert plan.num_paths == len(plan.labels) == len(plan.path_scale) == sum(plan.weight_chunks)


def test_symmetric_paths_of_one_density_are_fewer_and_reach_every_output():
    full = ManyBodySpec("0e+1o+2e", "0e+1o", 3, symmetric=False).plan()
    symmetric = ManyBodySpec("0e+1o+2e", "0e+1o", 3).plan()
    assert symmetric.num_paths < full.num_paths
    assert {ir for ir, _ in symmetric.labels} == {ir for ir, _ in full.labels}


def test_a_cap_on_internal_degrees_and_the_reduced_variant_shape_the_layers():
    capped = ManyBodySpec("0e+1o+2e", "0e+1o", 4, l_internal=1).plan()
    assert max(ir.l for layer in capped.layers[1:] for ir in layer) == 1
    reduced = ManyBodySpec("0e+1o+2e", "0e+1o", 3, level_copies=2).plan()
    assert all(len(copies) == 2 for copies in reduced.layer_offsets[1].values())
    assert reduced.num_mixing == sum(2 * j for *_, j in reduced.mix_chunks) > 0


def test_distinct_steps_read_their_own_columns_of_a():
    spec = ManyBodySpec(("0e+1o", "0e+1o+2e", "1o"), "0e", 3, symmetric=False)
    plan = spec.plan()
    assert spec.distinct and spec.irreps_a.dim == 4 + 9 + 3
    assert [plan.step_columns(s) for s in range(3)] == [(0, 4), (4, 13), (13, 16)]
    assert ManyBodySpec("0e+1o", "0e", 3).plan().step_columns(2) is None
    assert all(plan.a_input[g.a] == s for s, bundles in enumerate(plan.steps) for b in bundles for g in b.groups)


def test_a_spec_is_plain_frozen_data_with_one_cached_plan():
    spec = ManyBodySpec("0e+1o", "0e+1o", 2)
    assert spec == ManyBodySpec(Irreps("0e+1o"), "0e+1o", 2) and hash(spec) == hash(ManyBodySpec("0e+1o", "0e+1o", 2))
    assert isinstance(spec.plan(), ManyBodyPlan) and spec.plan() is spec.plan()
    with pytest.raises(AttributeError):
        spec.correlation = 3


@pytest.mark.parametrize("arguments, message", [
    ((("0e+1o", "0e"), "0e", 3), "one input, or one per order"),
    ((("0e+1o", "0e+1o"), "0e", 2), "symmetric must be False"),
    (("0e+1o", "2x0e", 2), "each irrep once"),
    (("0e+1o", "0e", 0), "correlation must be >= 1"),
    (("0e", "1o", 2), "cannot be reached"),
])
def test_bad_specs_are_refused_in_one_line(arguments, message):
    with pytest.raises(ValueError, match=message):
        ManyBodySpec(*arguments).plan()
