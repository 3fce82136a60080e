"""One plan for every many-body product: ProductPaths and the parametrizations mapped onto it (ICTP's
variants, MACE's contraction, fusion trees of one density, of distinct densities and of a Cormorant level)."""

import pytest
import torch

from tensorfuse.nn import FusionBlock, FusionProductBasis, SymmetricContraction
from tensorfuse.nn._product_paths import ProductPaths, weight_map
from tensorfuse.nn._symmetric_contraction import _symmetric_coupling_tensors
from tensorfuse.o3 import FusionSpec, Irreps, ManyBodySpec
from tensorfuse.o3._fusion import make_shape


@pytest.mark.parametrize("irreps_a, irreps_out, correlation", [
    ("0e+1o+2e+3o", "0e+1o", 3), ("0e+1o+2e", "0e+1o+2e", 3), ("2x0e+1o+1e", "0e+1o", 2), ("0e+1o", "0e", 1),
])
def test_mace_contraction_is_its_coupling_tensors_contracted_with_the_density(irreps_a, irreps_out, correlation):
    """Run on the product paths, MACE's contraction still computes sum_k w[z, k, c] U_k(A_c, ..., A_c)
    with its own orthonormal symmetric tensors (evaluated here directly, per atom)."""
    torch.manual_seed(0)
    module = SymmetricContraction(irreps_a, irreps_out, 3, correlation, 2, dtype=torch.float64)
    A = torch.randn(5, 3, Irreps(irreps_a).dim, dtype=torch.float64)
    species = torch.tensor([0, 1, 1, 0, 1])
    expected = []
    weights = iter(module.weights)
    for _, ir in Irreps(irreps_out):
        total = torch.zeros(5, 3, ir.dim, dtype=torch.float64)
        for nu in range(1, correlation + 1):
            U = torch.tensor(_symmetric_coupling_tensors(Irreps(irreps_a), ir, nu, Irreps(irreps_a).lmax))
            w = next(weights).detach()[species]  # [N, K, C]
            T = torch.einsum("d...k,nkc->ncd...", U, w)
            for _ in range(nu):
                T = torch.einsum("ncd...a,nca->ncd...", T, A)
            total = total + T
        expected.append(total)
    torch.testing.assert_close(module(A, species).detach(), torch.cat(expected, dim=-1), rtol=0, atol=1e-11)


def _tree_reference(block: FusionBlock) -> FusionBlock:
    """The same spec and weights, evaluated tree by tree (the slot planner, not the paths)."""
    reference = FusionBlock(block.spec, block.channels, block.num_species, block.basis, dtype=torch.float64,
                            as_paths=False)
    with torch.no_grad():
        reference.weights.copy_(block.weights)
    return reference


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
@pytest.mark.parametrize("mode", ["density", "distinct"])
@pytest.mark.parametrize("shape, l_internal, capped", [
    ("caterpillar", None, False), ("balanced", None, False), ("caterpillar", 1, True), ("balanced", 1, False),
])
def test_fusion_product_bases_run_on_the_paths_and_equal_their_trees(basis, mode, shape, l_internal, capped):
    """Trees of one density or of distinct densities, of any shape, map onto the product paths
    (recoupling); a cap on internal degrees goes to the paths too where it spans the trees (the
    caterpillar), else the paths are uncapped. The output and its gradients are the trees' own."""
    torch.manual_seed(1)
    irreps_a, out, correlation = "0e+1o+2e", "0e+1o", 4
    module = FusionProductBasis(irreps_a, out, 3, correlation, 2, mode, shape, basis, l_internal,
                                dtype=torch.float64)
    paths = module.block.paths
    assert paths is not None and module.block.weight_map.shape == (module.num_paths, paths.num_paths)
    assert (max(ir.l for layer in paths.plan.layers[1:] for ir in layer) <= 1) == capped
    dims = Irreps(irreps_a).dim
    densities = [torch.randn(6, 3, dims, dtype=torch.float64, requires_grad=True)
                 for _ in range(1 if mode == "density" else correlation)]
    leaves = densities * correlation if mode == "density" else densities
    species = torch.tensor([0, 1, 1, 0, 1, 0])
    cotangent = torch.randn(6, 3, Irreps(out).dim, dtype=torch.float64)
    results = []
    for block, call in ((module.block, lambda: module(densities[0] if mode == "density" else densities, species)),
                        (reference := _tree_reference(module.block), lambda: reference(leaves, species))):
        value = call()
        results.append((value, *torch.autograd.grad(value, [*densities, block.weights], cotangent)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
@pytest.mark.parametrize("shape", ["caterpillar", "balanced"])
def test_a_cormorant_levels_trees_run_on_the_paths_of_their_nested_leaf_order(basis, shape):
    """``M ⊗ M'`` and ``(M ⊗ M') ⊗ F`` (leaves 1, 2 and 0): the paths over the order (1, 2, 0)."""
    torch.manual_seed(2)
    leaves = [Irreps("0e+1o+2e"), Irreps("0e+1o+2e+3o"), Irreps("0e+1o+2e+3o")]
    spec = FusionSpec(leaves, "0e+1o+2e", [(1, 2), make_shape(shape, 3, leaves=[1, 2, 0])], 2)
    block = FusionBlock(spec, 4, 3, basis, dtype=torch.float64)
    assert spec.nested_leaf_order() == (1, 2, 0) and block.paths is not None
    inputs = [torch.randn(5, 4, x.dim, dtype=torch.float64) for x in leaves]
    species = torch.tensor([0, 2, 1, 1, 0])
    torch.testing.assert_close(block(inputs, species), _tree_reference(block)(inputs, species), rtol=0, atol=1e-12)


def test_trees_that_are_not_nested_are_evaluated_as_trees():
    """Trees over leaves (0, 1) and (1, 2): no one order has both as its first leaves."""
    spec = FusionSpec(["0e+1o"] * 3, "0e+1o", [(0, 1), (1, 2)])
    assert spec.nested_leaf_order() is None
    block = FusionBlock(spec, 2, dtype=torch.float64)
    assert block.paths is None
    x = [torch.randn(3, 2, 4, dtype=torch.float64) for _ in range(3)]
    torch.testing.assert_close(block(x), _tree_reference(block)(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="same tensor"):
        FusionBlock(FusionSpec(["0e+1o"] * 2, "0e", "caterpillar"), 2, dtype=torch.float64, one_density=True)(x[:2])


def test_weight_map_refuses_what_the_paths_cannot_span():
    """A quartic function is not a combination of paths of at most three densities."""
    paths = ProductPaths(ManyBodySpec("0e+1o", "0e", 3), dtype=torch.float64)
    quartic = FusionBlock(FusionSpec(["0e+1o"] * 4, "0e", "caterpillar"), 1, dtype=torch.float64)
    cubic = FusionBlock(FusionSpec(["0e+1o"] * 3, "0e", "balanced"), 1, dtype=torch.float64)

    def columns(block, n):
        return lambda A: block.each_path([A.unsqueeze(1)] * n).squeeze(1)

    assert weight_map(paths, columns(quartic, 4), quartic.num_paths) is None
    M = weight_map(paths, columns(cubic, 3), cubic.num_paths)
    assert M is not None and M.shape == (cubic.num_paths, paths.num_paths)
    A = torch.randn(7, 4, dtype=torch.float64)  # points the fit never saw: tree k = paths weighted by M[k]
    W = M.unsqueeze(0)  # [1, trees, paths]: channel k runs tree k's weights
    on_paths = paths(A.unsqueeze(1).expand(7, cubic.num_paths, 4).contiguous(), torch.zeros(7, dtype=torch.long), W)
    torch.testing.assert_close(on_paths, columns(cubic, 3)(A), rtol=0, atol=1e-12)
