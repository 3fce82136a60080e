"""Fusion diagrams as data: shapes, enumeration, counts against characters, clear errors."""

import itertools

import pytest

from tensorfuse import o3
from tensorfuse.o3._fusion import make_shape, shape_leaves


def natural(L: int) -> str:
    return "+".join(f"{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L + 1))


# fusion.md 1.5: n inputs each holding every l <= L with natural parity, no cap on internal l
PATH_COUNTS = {
    (1, 2): (2, 2, 1), (1, 3): (4, 6, 3), (1, 4): (10, 16, 12),
    (2, 2): (3, 4, 4), (2, 3): (11, 21, 23), (2, 4): (55, 124, 148),
    (3, 2): (4, 6, 7), (3, 3): (23, 51, 65), (3, 4): (204, 520, 720),
}


@pytest.mark.parametrize("L,n", sorted(PATH_COUNTS))
@pytest.mark.parametrize("shape", ["caterpillar", "balanced"])
def test_path_counts_match_the_table_for_every_shape(L, n, shape):
    trees = o3.fusion_trees([natural(L)] * n, "0e+1o+2e", shape)
    counts = tuple(sum(t.output == o3.Irrep(ir) for t in trees) for ir in ("0e", "1o", "2e"))
    assert counts == PATH_COUNTS[(L, n)]


LEAF_TUPLES = [("1o", "1o", "1o"), ("2e", "1o", "3o"), ("1e", "2o", "2e", "1o"), ("2e", "2e", "2e"),
               ("0o", "1o", "1e"), ("3o", "2e", "1o", "1o")]


@pytest.mark.parametrize("leaves", LEAF_TUPLES, ids=lambda x: "-".join(x))
@pytest.mark.parametrize("shape", ["caterpillar", "balanced"])
def test_tree_count_equals_the_multiplicity_from_characters(leaves, shape):
    for out in o3.Irrep.iterator(5):
        trees = o3.fusion_trees(list(leaves), str(out), shape)
        assert len(trees) == o3.multiplicity(leaves, out), (leaves, out)


def test_multiplicity_from_characters_on_known_cases():
    assert o3.multiplicity(["1o", "1o"], "0e") == 1
    assert o3.multiplicity(["1o", "1o"], "1e") == 1 and o3.multiplicity(["1o", "1o"], "1o") == 0
    assert o3.multiplicity(["1o", "1o", "1o"], "0o") == 1
    assert o3.multiplicity(["1o", "1o", "1o"], "1o") == 3
    assert o3.multiplicity(["2e", "2e"], "2e") == 1
    assert o3.multiplicity(["2e", "2e", "2e"], "0e") == 1  # one cubic invariant of a symmetric traceless matrix


def test_every_vertex_of_every_tree_is_admissible_and_caps_hold():
    for tree in o3.fusion_trees([natural(2)] * 4, "0e+1o+1e+2e", "balanced", l_internal=2):
        for left, right, out in tree.vertices():
            assert out in left * right
        assert all(ir.l <= 2 for ir in tree.labels)
    capped = o3.fusion_trees([natural(2)] * 3, "0e", l_internal=1)
    assert len(capped) < len(o3.fusion_trees([natural(2)] * 3, "0e"))


def test_shapes():
    assert o3.caterpillar(4) == (((0, 1), 2), 3)
    assert o3.balanced(4) == ((0, 1), (2, 3))
    assert o3.balanced(5) == (((0, 1), 2), (3, 4))
    assert make_shape(((2, 0), 1), 3) == ((2, 0), 1)
    for n in range(1, 7):
        assert sorted(shape_leaves(o3.balanced(n))) == list(range(n))


def test_tree_string_and_body_order():
    tree = o3.fusion_trees(["1o", "1o", "1o"], "0o")[0]
    assert str(tree) == "((1o[0] x 1o[1])->1e x 1o[2])->0o"
    assert tree.num_leaves == 3 and tree.labels == (o3.Irrep("1e"),)


def test_spec_shares_leaves_across_orders_and_counts_paths():
    spec = o3.FusionSpec([natural(1)] * 3, "0e+1o", [0, (0, 1), ((0, 1), 2)])
    per_order = [len(o3.fusion_trees([natural(1)] * 3, "0e+1o", s)) for s in (0, (0, 1), ((0, 1), 2))]
    assert spec.num_paths == sum(per_order) == 2 + 4 + 10
    assert spec.paths_per_output() == {o3.Irrep("0e"): 1 + 2 + 4, o3.Irrep("1o"): 1 + 2 + 6}


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="inadmissible vertex 1o x 1o -> 0o"):
        o3.FusionTree((0, 1), ("1o", "1o"), (), "0o")
    with pytest.raises(ValueError, match="internal edges"):
        o3.FusionTree(((0, 1), 2), ("1o", "1o", "1o"), (), "0o")
    with pytest.raises(ValueError, match="a leaf index appears twice"):
        o3.fusion_trees(["1o", "1o"], "0e", ((0, 1), 1))
    with pytest.raises(ValueError, match="unknown fusion tree shape 'zigzag'"):
        o3.fusion_trees(["1o", "1o"], "0e", "zigzag")
    with pytest.raises(ValueError, match="refers to leaf 2"):
        o3.fusion_trees(["1o", "1o"], "0e", ((0, 1), 2))
    with pytest.raises(ValueError, match="must hold each irrep once"):
        o3.fusion_trees(["2x1o", "1o"], "0e")
    with pytest.raises(ValueError, match=r"output irreps \[0o\] cannot be reached"):
        o3.FusionSpec([natural(2)] * 2, "0e+0o")
    with pytest.raises(ValueError, match="l_internal must be >= 0"):
        o3.fusion_trees(["1o"] * 3, "0e", l_internal=-1)
    with pytest.raises(ValueError, match="invalid irrep"):
        o3.fusion_trees(["1x"], "0e")


def test_leaf_order_relabelling_keeps_the_count():
    leaves = ["1o", "2e", "1e", "0o"]
    count = len(o3.fusion_trees(leaves, "1o"))
    for perm in itertools.permutations(range(4)):
        assert len(o3.fusion_trees([leaves[k] for k in perm], "1o")) == count
