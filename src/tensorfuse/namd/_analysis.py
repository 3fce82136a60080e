"""What photochemists read off an ensemble: state populations with their spread, a lifetime fit,
and product yields from a geometric criterion."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

KINDS = {"distance": 2, "angle": 3, "dihedral": 4}
_CRITERION = re.compile(r"^\s*(?P<name>[A-Za-z_][\w-]*)\s*:\s*(?P<kind>distance|angle|dihedral)\s+"
                        r"(?P<atoms>\d+(?:\s+\d+)*)\s*(?P<op><|>)\s*(?P<value>[-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Criterion:
    """A product, told by one internal coordinate: ``name: kind i j [k [l]] (<|>) value``.

    ``distance`` in Å, ``angle`` and ``dihedral`` in degrees; the dihedral is unsigned (0 to 180), so
    that ``twist: dihedral 2 0 1 4 > 90`` says trans whichever way the molecule turned. Atom indices
    count from 0."""

    name: str
    kind: str
    atoms: tuple[int, ...]
    greater: bool
    value: float

    @staticmethod
    def parse(text: str, num_atoms: int | None = None) -> Criterion:
        match = _CRITERION.match(text)
        if not match:
            raise ValueError(f"cannot read the product criterion {text!r}: expected 'NAME: KIND I J [K [L]] < or > "
                             "VALUE', KIND one of distance (Å), angle, dihedral (degrees), e.g. "
                             "'trans: dihedral 2 0 1 4 > 90'")
        kind, atoms = match["kind"], tuple(int(a) for a in match["atoms"].split())
        if len(atoms) != KINDS[kind]:
            raise ValueError(f"product criterion {text!r}: a {kind} takes {KINDS[kind]} atoms, got {len(atoms)}")
        if num_atoms is not None and max(atoms) >= num_atoms:
            raise ValueError(f"product criterion {text!r}: atom {max(atoms)} does not exist (the structure has "
                             f"{num_atoms} atoms, 0 to {num_atoms - 1})")
        if len(set(atoms)) != len(atoms):
            raise ValueError(f"product criterion {text!r}: an atom appears twice")
        value = float(match["value"])
        if not math.isfinite(value):
            raise ValueError(f"product criterion {text!r}: the threshold must be finite")
        return Criterion(match["name"], kind, atoms, match["op"] == ">", value)

    def measure(self, positions: np.ndarray) -> np.ndarray:
        """The coordinate of each structure ``positions [..., N, 3]`` (Å) ``-> [...]``."""
        p = [positions[..., a, :] for a in self.atoms]
        if self.kind == "distance":
            return np.linalg.norm(p[1] - p[0], axis=-1)
        if self.kind == "angle":
            u, w = p[0] - p[1], p[2] - p[1]
            cos = (u * w).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(w, axis=-1))
            return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        b0, b1, b2 = p[1] - p[0], p[2] - p[1], p[3] - p[2]
        n0, n1 = np.cross(b0, b1), np.cross(b1, b2)
        m = np.cross(n0, b1 / np.linalg.norm(b1, axis=-1, keepdims=True))
        return np.abs(np.degrees(np.arctan2((m * n1).sum(-1), (n0 * n1).sum(-1))))

    def holds(self, positions: np.ndarray) -> np.ndarray:
        q = self.measure(positions)
        return q > self.value if self.greater else q < self.value


@dataclass(frozen=True)
class Lifetime:
    """``P(t) = 1`` until ``delay``, then ``exp(-(t - delay) / tau)`` (fs), fitted to a state's fraction.

    ``tau_error``: the standard deviation of ``tau`` over bootstrap resamples of the trajectories
    (``None`` where none were given); ``extrapolated``: the run ended before ``delay + tau``, so
    the decay constant is read off less than one lifetime of decay (the fit extrapolates)."""

    tau: float
    delay: float
    rms: float  # of the fit's residual
    tau_error: float | None = None
    extrapolated: bool = False

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return np.exp(-np.clip(t - self.delay, 0.0, None) / self.tau)

    def describe(self) -> str:
        error = f" ± {self.tau_error:.1f}" if self.tau_error is not None else ""
        note = " (extrapolated: the run ended before delay + τ)" if self.extrapolated else ""
        return f"τ = {self.tau:.1f}{error} fs after a delay of {self.delay:.1f} fs{note}"


def _decay(t, tau, delay):
    return np.exp(-np.clip(t - delay, 0.0, None) / tau)


def _fit(times: np.ndarray, fraction: np.ndarray, guesses) -> tuple[float, float, float] | None:
    from scipy.optimize import curve_fit

    best = None
    for tau0, delay0 in guesses:
        try:
            (tau, delay), _ = curve_fit(_decay, times, fraction, p0=(tau0, delay0),
                                        bounds=([1e-3, 0.0], [1e6, times[-1]]), maxfev=5000)
        except (RuntimeError, ValueError):
            continue
        rms = float(np.sqrt(np.mean((_decay(times, tau, delay) - fraction) ** 2)))
        if best is None or rms < best[2]:
            best = (float(tau), float(delay), rms)
    return best


def fit_lifetime(times: np.ndarray, fraction: np.ndarray, samples: np.ndarray | None = None,
                 resamples: int = 200, seed: int = 0) -> Lifetime | None:
    """The delayed exponential that fits ``fraction(times)`` best (least squares), or ``None`` where
    the state hardly decays (the fraction never falls below 0.9: no lifetime can be read off).

    ``samples [R, T]`` (whether each of ``T`` trajectories is on the state at each time) gives the
    fit an uncertainty: ``tau``'s spread over ``resamples`` bootstrap draws of the trajectories."""
    times, fraction = np.asarray(times, dtype=float), np.asarray(fraction, dtype=float)
    if len(times) < 4 or fraction.min() > 0.9:
        return None
    half = times[np.argmax(fraction < 0.5)] if (fraction < 0.5).any() else times[-1]
    start = times[np.argmax(fraction < 0.98)]
    scale = max(half - start, 1e-3)
    best = _fit(times, fraction, [(scale, start), (2 * scale, start), (0.3 * scale, start)])
    if best is None:
        return None
    tau, delay, rms = best
    error = None
    if samples is not None and samples.shape[1] > 1:
        rng = np.random.default_rng(seed)
        taus = []
        for _ in range(resamples):
            drawn = samples[:, rng.integers(0, samples.shape[1], samples.shape[1])].mean(1)
            refit = _fit(times, drawn, [(tau, delay)])
            if refit is not None:
                taus.append(refit[0])
        error = float(np.std(taus)) if len(taus) > 1 else None
    return Lifetime(tau, delay, rms, error, bool(times[-1] < delay + tau))


def state_fractions(active: np.ndarray, num_states: int) -> tuple[np.ndarray, np.ndarray]:
    """The fraction of trajectories on each state ``[R, S]`` and its standard error (binomial),
    from the active states ``[R, T]``."""
    onehot = np.eye(num_states)[active]  # [R, T, S]
    fraction = onehot.mean(1)
    n = active.shape[1]
    return fraction, np.sqrt(fraction * (1 - fraction) / max(n, 1))
