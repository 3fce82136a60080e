"""Fusion blocks: equivariance of every tree in both bases, completeness, recoupling, fits."""

import itertools

import pytest
import torch

from tensorfuse import o3
from tensorfuse.nn import FusionBlock, FusionProductBasis, ProductBasis
from tensorfuse.testing import assert_equivariant

BASES = ["spherical", "cartesian"]


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def every_tree(spec, basis):
    """A function of the leaves whose channel ``p`` is tree ``p`` alone (weight one, others zero)."""
    block = FusionBlock(spec, channels=spec.num_paths, basis=basis)
    with torch.no_grad():
        block.weights.copy_(torch.diag(1 / block.path_scale).unsqueeze(0))

    def trees(*leaves):  # leaves [N, dim_k] -> [N, paths, out_dim]
        return block([x.unsqueeze(1).expand(-1, spec.num_paths, -1) for x in leaves])

    return block, trees


def tree_tensors(spec, basis="spherical"):
    """Each tree as a dense multilinear map, flattened: ``[paths, prod(leaf dims) * out_dim]``."""
    block, trees = every_tree(spec, basis)
    dims = [irreps.dim for irreps in spec.leaves]
    combos = list(itertools.product(*[range(d) for d in dims]))
    leaves = [torch.eye(d)[[c[k] for c in combos]] for k, d in enumerate(dims)]
    return trees(*leaves).permute(1, 0, 2).reshape(spec.num_paths, -1)


SPECS = [
    (["0e+1o+2e", "0e+1o", "0e+1o+2e+3o"], "0e+0o+1o+1e+2e", "caterpillar"),
    (["1o+2e", "0e+1o", "1e", "0e+1o"], "0e+1o+2e+2o", "balanced"),
    (["0e+1o+2e"] * 3, "0e+1o", [0, (0, 1), ((0, 1), 2)]),
]


@pytest.mark.parametrize("leaves,out,shape", SPECS)
@pytest.mark.parametrize("basis", BASES)
def test_every_tree_is_equivariant_under_rotations_and_reflections(leaves, out, shape, basis):
    spec = o3.FusionSpec(leaves, out, shape)
    _, trees = every_tree(spec, basis)
    report = assert_equivariant(trees, irreps_in=leaves, irreps_out=spec.irreps_out, basis=basis, tolerance=1e-10)
    assert report.num_improper >= 1


@pytest.mark.parametrize("leaves,out,shape", SPECS)
def test_both_bases_compute_the_same_function_with_the_same_weights(leaves, out, shape):
    spec = o3.FusionSpec(leaves, out, shape)
    sph = FusionBlock(spec, channels=3, num_species=2, basis="spherical")
    cart = FusionBlock(spec, channels=3, num_species=2, basis="cartesian")
    cart.load_state_dict(sph.state_dict())
    to_cart = lambda irreps: o3.change_of_basis_matrix(irreps, "spherical", "cartesian")  # noqa: E731
    xs = [torch.randn(6, 3, o3.Irreps(ir).dim) for ir in leaves]
    species = torch.tensor([0, 1, 1, 0, 1, 0])
    y_sph = sph(xs, species)
    y_cart = cart([x @ to_cart(ir).T for x, ir in zip(xs, leaves)], species)
    assert (y_cart - y_sph @ to_cart(spec.irreps_out).T).abs().max() < 1e-12 * y_sph.abs().max()


@pytest.mark.parametrize("leaves", [("1o", "1o", "1o"), ("2e", "1o", "2e"), ("1o", "2e", "1e", "1o"), ("2e", "2e", "2e")])
@pytest.mark.parametrize("basis", BASES)
def test_paths_are_complete_and_orthogonal(leaves, basis):
    """The stacked trees have the rank the multiplicity demands, and are mutually orthogonal."""
    for out in o3.Irrep.iterator(4):
        if o3.multiplicity(leaves, out) == 0:
            continue
        spec = o3.FusionSpec(list(leaves), str(out))
        T = tree_tensors(spec, basis)
        assert torch.linalg.matrix_rank(T).item() == o3.multiplicity(leaves, out) == spec.num_paths
        gram = T @ T.T
        assert (gram - torch.diag(torch.diag(gram))).abs().max() < 1e-12 * gram.abs().max()


@pytest.mark.parametrize("leaves", [("1o", "1o", "1o", "1o"), ("1o", "2e", "1e", "2e"), ("0e+1o", "1o", "0e+1o", "1o")])
def test_caterpillar_and_balanced_trees_span_the_same_space(leaves):
    for out in ("0e", "1o", "1e", "2e", "2o"):
        if not o3.fusion_trees(list(leaves), out):
            continue
        cat = tree_tensors(o3.FusionSpec(list(leaves), out, "caterpillar"))
        bal = tree_tensors(o3.FusionSpec(list(leaves), out, "balanced"))
        other_order = tree_tensors(o3.FusionSpec(list(leaves), out, ((0, 2), (3, 1))))
        rank = torch.linalg.matrix_rank(cat).item()
        assert rank == torch.linalg.matrix_rank(bal).item() == torch.linalg.matrix_rank(other_order).item()
        assert torch.linalg.matrix_rank(torch.cat([cat, bal, other_order])).item() == rank
        # an exact change of tree shape (the 6j "F-move"): bal = X cat
        X = torch.linalg.lstsq(cat.T, bal.T).solution
        assert (cat.T @ X - bal.T).abs().max() < 1e-10


def test_density_mode_spans_the_standard_product_basis():
    """All leaves = A with the caterpillar shape: the span of ICTP's full product basis."""
    irreps_a = "0e+1o+2e+3o"
    full = ProductBasis(irreps_a, "0e+1o", 1, 3, 1, variant="full")
    fusion = FusionProductBasis(irreps_a, "0e+1o", 1, 3, 1, mode="density")
    A = torch.randn(100, o3.Irreps(irreps_a).dim)
    species = torch.zeros(100, dtype=torch.long)

    def per_path(cls, **kwargs):
        """Channel p of the module computes path p alone: ``[rows, paths]``."""
        module = cls(irreps_a, "0e+1o", full.num_paths, 3, 1, **kwargs)
        weights = module.weights if cls is ProductBasis else module.block.weights
        scale = module.path_scale if cls is ProductBasis else module.block.path_scale
        with torch.no_grad():
            weights.copy_(torch.diag(1 / scale).unsqueeze(0))
        out = module(A.unsqueeze(1).expand(-1, full.num_paths, -1), species)
        return out.permute(0, 2, 1).reshape(-1, full.num_paths).detach()

    P, F = per_path(ProductBasis, variant="full"), per_path(FusionProductBasis, mode="density")
    assert full.num_paths == fusion.num_paths
    rank = torch.linalg.matrix_rank(P).item()
    assert rank == torch.linalg.matrix_rank(F).item() == torch.linalg.matrix_rank(torch.cat([P, F], 1)).item()
    fit = F @ (torch.linalg.pinv(F) @ P)
    assert (fit - P).abs().max() < 1e-10 * P.abs().max()


def test_blocks_commute_with_permutations_of_atoms_and_of_identical_leaves():
    spec = o3.FusionSpec(["0e+1o+2e"] * 3, "0e+1o+2e", [0, (0, 1), ((0, 1), 2)])
    block = FusionBlock(spec, channels=4, num_species=3)
    xs = [torch.randn(7, 4, 9) for _ in range(3)]
    species = torch.randint(0, 3, (7,))
    perm = torch.randperm(7)
    assert torch.allclose(block([x[perm] for x in xs], species[perm]), block(xs, species)[perm], atol=1e-12)
    # a product basis of one density sums over neighbours first: the order of neighbours cannot matter
    neighbours = torch.randn(5, 4, 9)
    A1, A2 = neighbours.sum(0, keepdim=True), neighbours[torch.randperm(5)].sum(0, keepdim=True)
    one = species[:1]
    assert torch.allclose(block([A1] * 3, one), block([A2] * 3, one), atol=1e-12)


# -- least-squares fits of equivariant polynomials of neighbour vectors --------------------------
def _vectors_as_leaves(r, basis):
    """Each vector as a leaf 0e+1o+2e of its (unnormalized, polynomial) harmonics."""
    return o3.get_basis(basis).harmonics([0, 1, 2], r, normalize=False)


def _fit(spec, basis, inputs, target):
    _, trees = every_tree(spec, basis)
    features = trees(*inputs)  # [S, paths, out_dim]
    offset = spec.irreps_out.slices()[0]
    F = features[:, :, offset].permute(0, 2, 1).reshape(-1, spec.num_paths).detach()
    y = target.reshape(-1)
    w = torch.linalg.lstsq(F, y, driver="gelsd").solution  # SVD-based: some paths coincide here
    return float((F @ w - y).norm() / y.norm())


@pytest.mark.parametrize("basis", BASES)
def test_triple_product_needs_an_odd_output_and_body_order_four(basis):
    r = torch.randn(3, 200, 3)
    target = torch.linalg.det(r.permute(1, 0, 2)).unsqueeze(-1)  # r1 . (r2 x r3), a pseudoscalar
    leaves = [_vectors_as_leaves(r[k], basis) for k in range(3)]
    spec = o3.FusionSpec(["0e+1o+2e"] * 3, "0o", "caterpillar")
    assert _fit(spec, basis, leaves, target) < 1e-10
    # one body order lower (pairs of neighbours): no tree can even produce a pseudoscalar
    with pytest.raises(ValueError, match="cannot be reached"):
        o3.FusionSpec(["0e+1o+2e"] * 3, "0o", [0, 1, 2, (0, 1), (0, 2), (1, 2)])


@pytest.mark.parametrize("basis", BASES)
def test_vector_fits_exactly_at_the_right_body_order_and_fails_below(basis):
    r = torch.randn(3, 200, 3)
    dot = (r[0] * r[1]).sum(-1, keepdim=True)
    target = _as_1o(dot * r[2], basis)  # (r1 . r2) r3, a vector
    leaves = [_vectors_as_leaves(r[k], basis) for k in range(3)]
    spec = o3.FusionSpec(["0e+1o+2e"] * 3, "1o", [0, 1, 2, (0, 1), (0, 2), (1, 2), ((0, 1), 2)])
    assert _fit(spec, basis, leaves, target) < 1e-10
    too_low = o3.FusionSpec(["0e+1o+2e"] * 3, "1o", [0, 1, 2, (0, 1), (0, 2), (1, 2)])
    assert _fit(too_low, basis, leaves, target) > 0.3


@pytest.mark.parametrize("basis", BASES)
def test_traceless_part_of_an_outer_product_needs_two_leaves(basis):
    r = torch.randn(2, 200, 3)
    outer = r[0].unsqueeze(-1) * r[1].unsqueeze(-2)
    sym = 0.5 * (outer + outer.transpose(-1, -2))
    stf = sym - torch.eye(3) * sym.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None] / 3
    target = o3.from_dense(stf, 2) if basis == "cartesian" else o3.from_dense(stf, 2) @ o3.change_of_basis(2).T
    leaves = [_vectors_as_leaves(r[k], basis) for k in range(2)]
    assert _fit(o3.FusionSpec(["0e+1o+2e"] * 2, "2e", [0, 1, (0, 1)]), basis, leaves, target) < 1e-10
    assert _fit(o3.FusionSpec(["0e+1o+2e"] * 2, "2e", [0, 1]), basis, leaves, target) > 0.3


def _as_1o(v, basis):
    """Coordinates of the vector ``v`` as a 1o irrep in ``basis``."""
    if basis == "cartesian":
        return o3.from_dense(v, 1)
    return o3.from_dense(v, 1) @ o3.change_of_basis(1).T


# -- parameter-count snapshots: later refactors must not silently change capacity ----------------
def test_parameter_count_snapshots():
    from tensorfuse import ModelConfig

    base = dict(species=(1, 6, 8), channels=16, l_max=1, l_max_edge=2)
    counts = {
        name: ModelConfig(**base, **kw).num_parameters()
        for name, kw in {
            "symmetric": {},
            "fusion-density": dict(mace=dict(product_basis="fusion")),
            "fusion-distinct": dict(mace=dict(product_basis="fusion", fusion_leaves="distinct")),
            "fusion-capped": dict(mace=dict(product_basis="fusion", l_internal=1)),
            "cormorant": dict(architecture="cormorant"),
            "cormorant-fusion": dict(architecture="cormorant", cormorant=dict(fusion=True, second_message="distinct")),
        }.items()
    }
    assert counts == SNAPSHOT, counts


SNAPSHOT = {"symmetric": 34720, "fusion-density": 35536, "fusion-distinct": 62672, "fusion-capped": 34768,
            "cormorant": 32112, "cormorant-fusion": 43280}
