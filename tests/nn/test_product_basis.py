"""The reduced product basis: equivariant, linear growth with the correlation order, options checked."""

import pytest
import torch

from tensorfuse.nn import ProductBasis
from tensorfuse.testing import assert_equivariant

A_IRREPS = "1x0e+1x1o+1x2e+1x3o"


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
def test_reduced_basis_is_equivariant_under_rotations_and_reflections(basis):
    torch.manual_seed(0)
    pb = ProductBasis(A_IRREPS, "1x0e+1x1o+1x2e", 1, 5, 1, variant="reduced", basis=basis, level_copies=2,
                      dtype=torch.float64)
    species = torch.zeros(4, dtype=torch.long)

    def product(A):  # [N, dim] -> [N, dim_out], one channel
        return pb(A.unsqueeze(1), species[: A.shape[0]]).squeeze(1)

    report = assert_equivariant(product, irreps_in=[A_IRREPS], irreps_out=pb.irreps_out, basis=basis,
                                tolerance=1e-10, batch=4)
    assert report.num_improper >= 1


def test_reduced_basis_grows_linearly_with_the_correlation_order():
    """Every level after the first mixing has the same width, so each extra order adds the same
    number of parameters (the symmetric basis multiplies them by ~10 per order)."""
    widths, params = [], []
    for correlation in range(2, 8):
        pb = ProductBasis(A_IRREPS, "1x0e+1x1o+1x2e", 4, correlation, 2, variant="reduced", level_copies=2,
                          l_internal=2)
        widths.append([len(layer) for layer in pb.paths.plan.layers])
        params.append(sum(p.numel() for p in pb.parameters()))
    assert widths[-1][3:] == [widths[-1][2]] * (len(widths[-1]) - 3)
    increments = [b - a for a, b in zip(params, params[1:])]
    assert increments[2:] == [increments[2]] * len(increments[2:]) and increments[2] > 0
    symmetric = [sum(p.numel() for p in ProductBasis(A_IRREPS, "1x0e+1x1o+1x2e", 4, nu, 2, l_internal=2).parameters())
                 for nu in (3, 5)]
    assert params[3] / params[1] < symmetric[1] / symmetric[0] / 2  # correlation 5 against 3


def test_level_copies_needs_the_reduced_variant():
    with pytest.raises(ValueError, match="level_copies"):
        ProductBasis(A_IRREPS, "1x0e", 4, 3, 1, variant="symmetric", level_copies=2)
    with pytest.raises(ValueError, match="level_copies"):
        ProductBasis(A_IRREPS, "1x0e", 4, 3, 1, variant="reduced", level_copies=0)
