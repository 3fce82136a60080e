"""Irreducible representations of O(3) and direct sums of them, as immutable values.

An irrep is a pair ``(l, p)``: the rank/degree ``l >= 0`` and the parity ``p = ±1`` (the sign
it picks up under inversion). ``Irrep("2e")`` is ``(2, +1)``, ``Irrep("1o")`` is ``(1, -1)``;
``"y"`` stands for the parity of the spherical harmonics, ``(-1)**l``. The same value types
describe features in both bases: an irrep of degree ``l`` is stored as ``2l+1`` numbers, the
coordinates of either a real spherical-harmonic vector or an irreducible (symmetric,
traceless) Cartesian tensor of rank ``l`` (see :mod:`tensorfuse.o3`).
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, NamedTuple, Union

MAX_L = 8
"""Largest degree supported by every part of the algebra (harmonics, products, bases)."""


def check_l(l: object, name: str = "l", max_l: int = MAX_L) -> int:
    """Return ``l`` as an int or raise a ``ValueError`` that names the argument and value."""
    if isinstance(l, bool) or not isinstance(l, int):
        raise ValueError(f"{name} must be an integer, got {l!r}")
    if l < 0:
        raise ValueError(f"{name} must be >= 0, got {l}")
    if l > max_l:
        raise ValueError(f"{name}={l} is larger than the largest supported degree {max_l}")
    return l


def parse_ls(ls) -> tuple[int, ...]:
    """Degrees from an int, a sequence of ints, an irreps string or an :class:`Irreps`, checked."""
    if isinstance(ls, (str, Irreps)):
        ls = Irreps(ls).ls
    elif isinstance(ls, int) and not isinstance(ls, bool):
        ls = [ls]
    ls = tuple(ls)
    if not ls:
        raise ValueError("at least one degree l is required")
    for l in ls:
        check_l(l)
    return ls


_PARITY_CHARS = {"e": 1, "o": -1}


class Irrep(tuple):
    """An irreducible representation ``(l, p)`` of O(3).

    >>> Irrep("1o"), Irrep(2, 1), Irrep("3y")
    (1o, 2e, 3o)
    >>> Irrep("1o") * Irrep("1o")  # the irreps in the product, each once
    [0e, 1e, 2e]
    """

    def __new__(cls, l: Union[int, str, "Irrep", tuple], p: int | None = None) -> "Irrep":
        if isinstance(l, Irrep) and p is None:
            return l
        if isinstance(l, str) and p is None:
            text = l.strip()
            match = re.fullmatch(r"(\d+)([eoy])", text)
            if match is None:
                raise ValueError(
                    f"invalid irrep {l!r}: expected a degree followed by a parity letter, "
                    "e.g. '0e', '1o' or '2y'"
                )
            l, letter = int(match.group(1)), match.group(2)
            p = (-1) ** l if letter == "y" else _PARITY_CHARS[letter]
        elif isinstance(l, tuple) and p is None:
            if len(l) != 2:
                raise ValueError(f"invalid irrep {l!r}: expected a pair (l, p)")
            l, p = l
        if isinstance(l, bool) or not isinstance(l, int) or l < 0:
            raise ValueError(f"invalid irrep: l must be a non-negative integer, got {l!r}")
        if p not in (1, -1):
            raise ValueError(f"invalid irrep: parity must be +1 or -1, got {p!r}")
        return super().__new__(cls, (l, p))

    @property
    def l(self) -> int:  # noqa: E743 - the standard name
        return self[0]

    @property
    def p(self) -> int:
        return self[1]

    @property
    def dim(self) -> int:
        return 2 * self.l + 1

    @property
    def is_natural(self) -> bool:
        """True for the parity ``(-1)**l`` of a polynomial tensor (a true tensor, not a pseudotensor)."""
        return self.p == (-1) ** self.l

    def is_scalar(self) -> bool:
        return self == (0, 1)

    def __repr__(self) -> str:
        return f"{self.l}{'e' if self.p == 1 else 'o'}"

    __str__ = __repr__

    def __mul__(self, other: "Irrep") -> list["Irrep"]:  # type: ignore[override]
        """The irreps contained once each in the product of two irreps (triangle and parity rule)."""
        other = Irrep(other)
        p = self.p * other.p
        return [Irrep(l, p) for l in range(abs(self.l - other.l), self.l + other.l + 1)]

    def __rmul__(self, mul: int) -> "Irreps":  # type: ignore[override]
        return Irreps([(mul, self)])

    def __add__(self, other) -> "Irreps":  # type: ignore[override]
        return Irreps(self) + Irreps(other)

    def __getnewargs__(self):
        return (self.l, self.p)

    @classmethod
    def iterator(cls, lmax: int) -> Iterator["Irrep"]:
        """All irreps with ``l <= lmax``: 0e, 0o, 1o, 1e, 2e, 2o, ..."""
        for l in range(lmax + 1):
            yield cls(l, (-1) ** l)
            yield cls(l, -((-1) ** l))


class MulIrrep(NamedTuple):
    """``mul`` copies of one irrep."""

    mul: int
    ir: Irrep

    @property
    def dim(self) -> int:
        return self.mul * self.ir.dim

    def __repr__(self) -> str:
        return f"{self.mul}x{self.ir}"


_TERM = re.compile(r"^(?:(\d+)\s*x\s*)?(\d+[eoy])$")


class Irreps(tuple):
    """A direct sum of irreps with multiplicities, e.g. ``Irreps("16x0e + 8x1o + 4x2e")``.

    Immutable. The order of the terms is the storage order. The same value describes features in
    the spherical and in the Cartesian basis: each copy of ``(l, p)`` is stored as ``2l+1`` numbers.

    >>> irreps = Irreps("16x0e + 8x1o + 4x2e")
    >>> irreps.dim, irreps.num_irreps, irreps.lmax
    (60, 28, 2)
    >>> Irreps("0e + 0e + 1o").simplify()
    2x0e+1x1o
    """

    def __new__(cls, irreps: Union[str, "Irreps", Irrep, Iterable, None] = None) -> "Irreps":
        if isinstance(irreps, Irreps):
            return irreps
        terms: list[MulIrrep] = []
        if irreps is None:
            pass
        elif isinstance(irreps, Irrep):
            terms.append(MulIrrep(1, irreps))
        elif isinstance(irreps, str):
            text = irreps.strip()
            if text:
                for raw in text.split("+"):
                    term = raw.strip()
                    match = _TERM.match(term)
                    if match is None:
                        raise ValueError(
                            f"invalid irreps string {irreps!r}: cannot parse the term {term!r}; "
                            "expected terms like '16x0e', '8x1o' or '2e' joined by '+'"
                        )
                    mul = int(match.group(1)) if match.group(1) is not None else 1
                    terms.append(MulIrrep(mul, Irrep(match.group(2))))
        else:
            try:
                items = list(irreps)
            except TypeError:
                raise ValueError(f"cannot interpret {irreps!r} as irreps") from None
            for item in items:
                terms.append(_as_mul_irrep(item, irreps))
        return super().__new__(cls, terms)

    # --- sizes --------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return sum(term.dim for term in self)

    @property
    def num_irreps(self) -> int:
        return sum(term.mul for term in self)

    @property
    def ls(self) -> list[int]:
        """The degree of every copy, in storage order."""
        return [term.ir.l for term in self for _ in range(term.mul)]

    @property
    def lmax(self) -> int:
        if len(self) == 0:
            raise ValueError("an empty Irreps has no lmax")
        return max(term.ir.l for term in self)

    def slices(self) -> list[slice]:
        """The slice of the storage occupied by every term."""
        out, start = [], 0
        for term in self:
            out.append(slice(start, start + term.dim))
            start += term.dim
        return out

    def count(self, ir) -> int:  # type: ignore[override]
        ir = Irrep(ir)
        return sum(term.mul for term in self if term.ir == ir)

    def __contains__(self, ir) -> bool:  # type: ignore[override]
        return self.count(ir) > 0

    # --- algebra --------------------------------------------------------------------------
    def __add__(self, other) -> "Irreps":  # type: ignore[override]
        return Irreps(tuple(self) + tuple(Irreps(other)))

    def __radd__(self, other) -> "Irreps":
        return Irreps(other) + self

    def __mul__(self, n: int) -> "Irreps":  # type: ignore[override]
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"Irreps can only be repeated an integer number of times, got {n!r}")
        return Irreps(tuple(self) * n)

    __rmul__ = __mul__

    def __getitem__(self, index):  # type: ignore[override]
        item = super().__getitem__(index)
        return Irreps(item) if isinstance(index, slice) else item

    def simplify(self) -> "Irreps":
        """Merge neighbouring copies of the same irrep and drop zero multiplicities."""
        out: list[MulIrrep] = []
        for term in self:
            if term.mul == 0:
                continue
            if out and out[-1].ir == term.ir:
                out[-1] = MulIrrep(out[-1].mul + term.mul, term.ir)
            else:
                out.append(term)
        return Irreps(out)

    def sort(self) -> "Irreps":
        """Terms sorted by (l, parity), stable; combine with :meth:`simplify` to regroup."""
        return Irreps(sorted(self, key=lambda term: (term.ir.l, -term.ir.p)))

    def filter(self, lmax: int) -> "Irreps":
        return Irreps([term for term in self if term.ir.l <= lmax])

    @staticmethod
    def spherical_harmonics(lmax: int, p: int = -1) -> "Irreps":
        """``0e + 1o + 2e + ...``: the irreps of the harmonics of a vector (``p=-1``) up to ``lmax``."""
        return Irreps([(1, Irrep(l, p**l)) for l in range(lmax + 1)])

    def __repr__(self) -> str:
        return "+".join(repr(term) for term in self)

    __str__ = __repr__

    def __getnewargs__(self):
        return (tuple(self),)

    def D_from_matrix(self, R, basis: str = "spherical"):
        """Block-diagonal representation matrix of O(3) elements ``R`` (``[..., 3, 3]``) in a basis."""
        from tensorfuse.o3._basis import get_basis

        return get_basis(basis).representation(self, R)


def _as_mul_irrep(item, source) -> MulIrrep:
    if isinstance(item, MulIrrep):
        return item
    if isinstance(item, Irrep):
        return MulIrrep(1, item)
    if isinstance(item, str):
        parsed = Irreps(item)
        if len(parsed) != 1:
            raise ValueError(f"cannot interpret {item!r} in {source!r} as a single term")
        return parsed[0]
    if isinstance(item, tuple) and len(item) == 2:
        mul, ir = item
        if isinstance(mul, int) and not isinstance(mul, bool):
            if mul < 0:
                raise ValueError(f"multiplicity must be >= 0, got {mul} in {source!r}")
            return MulIrrep(mul, Irrep(ir))
        return MulIrrep(1, Irrep(item))
    raise ValueError(f"cannot interpret {item!r} in {source!r} as a term of an Irreps")
