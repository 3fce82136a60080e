"""One plan for every product of one density: ProductPaths and the parametrizations mapped onto it."""

import pytest
import torch

from tensorfuse.nn import FusionBlock, FusionProductBasis, SymmetricContraction
from tensorfuse.nn._product_paths import ProductPaths, weight_map
from tensorfuse.nn._symmetric_contraction import _symmetric_coupling_tensors
from tensorfuse.o3 import FusionSpec, Irreps


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


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
@pytest.mark.parametrize("shape, l_internal, lowered", [
    ("caterpillar", None, True), ("balanced", None, True), ("caterpillar", 1, True), ("balanced", 1, False),
])
def test_density_fusion_runs_on_the_paths_where_exact_and_equals_its_trees(basis, shape, l_internal, lowered):
    """Trees of one density map onto the product paths (recoupling) unless a cap on internal degrees
    makes their span another; either way the output is the trees' own."""
    torch.manual_seed(1)
    irreps_a, out, correlation = "0e+1o+2e", "0e+1o", 4
    module = FusionProductBasis(irreps_a, out, 3, correlation, 2, "density", shape, basis, l_internal,
                                dtype=torch.float64)
    assert (module.paths is not None) == lowered
    A = torch.randn(6, 3, Irreps(irreps_a).dim, dtype=torch.float64)
    species = torch.tensor([0, 1, 1, 0, 1, 0])
    trees = module.block([A] * correlation, species)  # the block evaluates its own trees
    torch.testing.assert_close(module(A, species), trees, rtol=0, atol=1e-11)


def test_weight_map_refuses_what_the_paths_cannot_span():
    """A quartic function is not a combination of paths of at most three densities."""
    paths = ProductPaths("0e+1o", "0e", 3, dtype=torch.float64)
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
