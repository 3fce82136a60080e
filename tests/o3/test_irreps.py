import pickle

import pytest

from tensorfuse.o3 import MAX_L, Irrep, Irreps, check_l


def test_irrep_parsing_and_properties():
    assert Irrep("1o") == (1, -1)
    assert Irrep("2e") == Irrep(2, 1) == Irrep((2, 1))
    assert Irrep("3y") == Irrep("3o") and Irrep("2y") == Irrep("2e")
    assert Irrep("1o").dim == 3
    assert Irrep("1o").is_natural and not Irrep("1e").is_natural
    assert repr(Irrep(4, -1)) == "4o"
    assert Irrep("1o") * Irrep("1o") == [Irrep("0e"), Irrep("1e"), Irrep("2e")]
    assert Irrep("2e") * Irrep("1o") == [Irrep("1o"), Irrep("2o"), Irrep("3o")]


def test_irreps_parsing_and_sizes():
    irreps = Irreps("16x0e + 8x1o + 4x2e")
    assert irreps.dim == 16 + 24 + 20
    assert irreps.num_irreps == 28
    assert irreps.lmax == 2
    assert irreps.ls == [0] * 16 + [1] * 8 + [2] * 4
    assert [s.stop - s.start for s in irreps.slices()] == [16, 24, 20]
    assert Irreps("0e+1o") == Irreps("1x0e + 1x1o") == Irreps([(1, "0e"), (1, (1, -1))])
    assert Irreps("") == Irreps() and Irreps("").dim == 0
    assert str(Irreps("2x0e+1o")) == "2x0e+1x1o"
    assert Irreps(str(irreps)) == irreps
    assert Irreps("0e + 0e + 1o").simplify() == Irreps("2x0e+1o")
    assert Irreps("1o + 0e + 2e + 0o").sort() == Irreps("0e + 0o + 1o + 2e")
    assert Irreps("0e") + "1o" == Irreps("0e+1o")
    assert Irreps("0e+1o") * 2 == Irreps("0e+1o+0e+1o")
    assert Irreps.spherical_harmonics(3) == Irreps("0e+1o+2e+3o")
    assert irreps.count("1o") == 8 and "2e" in irreps and "3o" not in irreps
    assert isinstance(irreps[1:], Irreps)


def test_irreps_is_an_immutable_hashable_value():
    irreps = Irreps("4x0e + 2x1o")
    assert hash(irreps) == hash(Irreps("4x0e+2x1o"))
    assert pickle.loads(pickle.dumps(irreps)) == irreps
    assert pickle.loads(pickle.dumps(Irrep("3o"))) == Irrep("3o")
    with pytest.raises(TypeError):
        irreps[0] = None  # tuples cannot be assigned to


@pytest.mark.parametrize(
    "text", ["16x0e +", "1x", "3q", "x1o", "-1x0e", "16x0e + 8y1o", "1o2e", "0e++1o", "abc"]
)
def test_malformed_irreps_string_names_the_value(text):
    with pytest.raises(ValueError) as info:
        Irreps(text)
    assert repr(text) in str(info.value) or text in str(info.value)


@pytest.mark.parametrize("bad", ["1q", "o1", "-1e", "", "1 o"])
def test_malformed_irrep_string_names_the_value(bad):
    with pytest.raises(ValueError, match="invalid irrep"):
        Irrep(bad)


def test_bad_irrep_values():
    with pytest.raises(ValueError, match="-1"):
        Irrep(-1, 1)
    with pytest.raises(ValueError, match="parity"):
        Irrep(1, 0)
    with pytest.raises(ValueError, match="multiplicity"):
        Irreps([(-2, "0e")])


def test_check_l_names_the_value():
    assert check_l(3) == 3
    with pytest.raises(ValueError, match="-2"):
        check_l(-2)
    with pytest.raises(ValueError, match=str(MAX_L + 1)):
        check_l(MAX_L + 1)
    with pytest.raises(ValueError, match="1.5"):
        check_l(1.5)
