import pytest
import torch

from tensorfuse import o3
from tensorfuse.testing import (
    apply_representation,
    assert_equivariant,
    equivariance_error,
    rotations_and_reflections,
)


def test_group_elements_include_rotations_and_reflections():
    R = rotations_and_reflections(6)
    det = torch.linalg.det(R)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(6, 3, 3), atol=1e-14)
    assert (det > 0).sum() == 3 and (det < 0).sum() == 3


def test_cross_product_is_a_pseudovector_and_the_check_sees_reflections():
    cross = lambda a, b: torch.linalg.cross(a, b)  # noqa: E731
    report = assert_equivariant(cross, irreps_in=["1o", "1o"], irreps_out="1e")
    assert report.num_improper > 0
    # declared as a true vector it passes rotations only: the check must fail on reflections
    proper = rotations_and_reflections(4)[:2]
    assert equivariance_error(cross, irreps_in=["1o", "1o"], irreps_out="1o", group_elements=proper).max_rel_error < 1e-12
    with pytest.raises(AssertionError, match="improper"):
        assert_equivariant(cross, irreps_in=["1o", "1o"], irreps_out="1o")


def test_triple_product_is_a_pseudoscalar():
    triple = lambda a, b, c: (a * torch.linalg.cross(b, c)).sum(-1, keepdim=True)  # noqa: E731
    assert_equivariant(triple, irreps_in=["1o"] * 3, irreps_out="0o")
    with pytest.raises(AssertionError):
        assert_equivariant(triple, irreps_in=["1o"] * 3, irreps_out="0e")


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
def test_detects_a_function_that_is_not_equivariant(basis):
    shift = torch.tensor([0.0, 0.0, 1.0])
    with pytest.raises(AssertionError, match=basis):
        assert_equivariant(lambda x: x + shift, irreps_in=["1o"], irreps_out="1o", basis=basis)


def test_invariant_inputs_and_several_outputs():
    def f(x, scale):
        return scale * x, (x * x).sum(-1, keepdim=True)

    x, s = torch.randn(4, 3), torch.randn(4, 1)
    assert_equivariant(f, [x, s], ["1o", None], ["1o", "0e"])


def test_apply_representation_checks_sizes():
    with pytest.raises(ValueError, match="does not match irreps"):
        apply_representation(torch.randn(2, 4), "1o", torch.eye(3))
    y = apply_representation(torch.randn(2, 9), "0e+1o+1e+0o+0e", -torch.eye(3), "cartesian")
    assert y.shape == (2, 9)


def test_works_on_float32_with_a_looser_tolerance():
    f = lambda x: o3.spherical_harmonics(3, x)  # noqa: E731
    x = torch.randn(5, 3, dtype=torch.float32)
    R = rotations_and_reflections(4, dtype=torch.float32)
    assert_equivariant(f, [x], ["1o"], "3o", group_elements=R)
