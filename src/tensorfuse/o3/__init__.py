"""The algebra of O(3): irreps, rotations, and the spherical and irreducible Cartesian bases.

Spherical basis: :func:`spherical_harmonics`, :func:`wigner_3j`, :func:`wigner_D` (e3nn's
conventions). Irreducible Cartesian basis: :func:`cartesian_harmonics`, :func:`cartesian_coupling`
(even and odd products of any admissible triple), :func:`to_dense` / :func:`from_dense`. The bridge:
:func:`change_of_basis` and the :class:`Basis` objects :data:`SPHERICAL` and :data:`CARTESIAN`.
Fusion diagrams (trees of pairwise couplings) as data: :class:`FusionTree`, :func:`fusion_trees`,
:class:`FusionSpec`, with :func:`multiplicity` as their independent count.
"""

from tensorfuse.o3._basis import (
    BASES,
    CARTESIAN,
    SPHERICAL,
    Basis,
    change_of_basis,
    change_of_basis_matrix,
    coupling_in_spherical,
    get_basis,
)
from tensorfuse.o3._cartesian import (
    cartesian_coupling,
    cartesian_harmonics,
    cartesian_representation,
    dense_product,
    from_dense,
    harmonic_prefactor,
    ictp_even_normalization,
    product_kind,
    product_normalization,
    stf_basis,
    stf_part,
    to_dense,
)
from tensorfuse.o3._fusion import (
    SHAPES,
    FusionSpec,
    FusionTree,
    balanced,
    caterpillar,
    fusion_trees,
    multiplicity,
)
from tensorfuse.o3._irreps import MAX_L, Irrep, Irreps, MulIrrep, check_l
from tensorfuse.o3._many_body import ManyBodyPlan, ManyBodySpec
from tensorfuse.o3._rotation import (
    axis_angle_to_matrix,
    quaternion_to_matrix,
    rand_o3,
    rand_rotation,
    reflection,
)
from tensorfuse.o3._spherical import check_triple, spherical_harmonics, wigner_3j, wigner_D
from tensorfuse.o3._tensor_product import ProductPath, TensorProductSpec

__all__ = [
    "BASES",
    "FusionSpec",
    "FusionTree",
    "SHAPES",
    "balanced",
    "caterpillar",
    "fusion_trees",
    "multiplicity",
    "CARTESIAN",
    "MAX_L",
    "SPHERICAL",
    "Basis",
    "Irrep",
    "Irreps",
    "ManyBodyPlan",
    "ManyBodySpec",
    "MulIrrep",
    "ProductPath",
    "TensorProductSpec",
    "axis_angle_to_matrix",
    "cartesian_coupling",
    "cartesian_harmonics",
    "cartesian_representation",
    "change_of_basis",
    "change_of_basis_matrix",
    "check_l",
    "check_triple",
    "coupling_in_spherical",
    "dense_product",
    "from_dense",
    "get_basis",
    "harmonic_prefactor",
    "ictp_even_normalization",
    "product_kind",
    "product_normalization",
    "quaternion_to_matrix",
    "rand_o3",
    "rand_rotation",
    "reflection",
    "spherical_harmonics",
    "stf_basis",
    "stf_part",
    "to_dense",
    "wigner_3j",
    "wigner_D",
]
