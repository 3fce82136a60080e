"""Analytic two-state reference for methylamine N–H photodissociation: chempotpy's ``CH3NH2_APRP``.

The surface (K. A. Parker and D. G. Truhlar, J. Chem. Phys. 152, 244309 (2020); chempotpy,
Apache-2.0) is a 2×2 diabatic matrix fitted for the N–H photodissociation CH3NH2 -> CH3NH + H;
its adiabatic S0/S1 energies, gradients and derivative coupling ``d_01 = <S0|∇S1>`` (from
``<0|∇U|1> / (E1 - E0)``) are analytic. Only the first amine hydrogen (H1) is fitted to
dissociate. Fixed atom order (chempotpy's): ``H1 H2 N3 C4 H5 H6 H7`` (H1, H2 on N; H5-H7 on C).

Runs in its own environment (chempotpy needs numpy < 2 and MKL), never in the project's::

    export LD_LIBRARY_PATH=/work/cpenv/lib OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    /work/cpenv/bin/python scripts/methylamine_chempotpy.py info          # writes the S0 minimum
    /work/cpenv/bin/python scripts/methylamine_chempotpy.py label --output benchmarks/data/methylamine_aprp.xyz \
        --frames 3000 --seed 0
    /work/cpenv/bin/python scripts/methylamine_chempotpy.py hops --frames 3000 --seed 1  # where hops happen
    /work/cpenv/bin/python scripts/methylamine_chempotpy.py wigner --count 50 --temperature 0 --seed 1 --output W.xyz
    /work/cpenv/bin/python scripts/methylamine_chempotpy.py serve         # binary server (see serve())
    /work/cpenv/bin/python scripts/methylamine_chempotpy.py check         # gradients/couplings vs finite differences

Units in files: Å, eV, eV/Å, 1/Å; velocities Å/fs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

SYMBOLS = ("H", "H", "N", "C", "H", "H", "H")
MASSES = np.array([1.008, 1.008, 14.007, 12.011, 1.008, 1.008, 1.008])  # amu (ASE's standard atomic weights)
NATOMS, NSTATES = 7, 2
DISSOCIATING = (2, 0)  # N3-H1, the only N-H bond the surface lets break
# atomic units (the same constants as tensorfuse.namd)
HARTREE = 27.211386245988  # eV
BOHR = 0.529177210903  # Å
AMU = 1822.888486209  # electron masses
FS = 41.341373335  # atomic units of time per fs
KB = 3.166811563e-6  # hartree / K
ROOT = Path(__file__).resolve().parents[1]

# chempotpy's analytic derivatives of this surface are not usable as they are (see ``check``):
# * its coupling vector is 2 × 0.529177211 = 1.058354 times <0|∇1> (a units slip; exact to 1e-10);
# * its analytic gradients (and coupling) are wrong once N-H1 is longer than about 3.5 Å (a pole near
#   3.6 Å: -245 eV/Å where the energy is flat), and its DPEM module's analytic ∇U is off by ~1 %.
# So the derivatives are taken by central differences of the (smooth, analytic) 2×2 diabatic matrix U:
# ∇U at h = 1e-5 Å (43 evaluations, ~0.7 ms), then E, ∇E_i = (Cᵀ∇U C)_ii and d_01 = (Cᵀ∇U C)_01 / (E1 - E0)
# (Hellmann-Feynman), which is the same to ~1e-7 as chempotpy's analytic values where those are right.
PACKAGE_NAC_FACTOR = 2 * 0.529177211
STEP = 1e-5  # Å

_modules = None


def _pes():
    global _modules
    if _modules is None:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # chempotpy's banner
            from chempotpy.CH3NH2 import CH3NH2_APRP, CH3NH2_APRP_DPEM
        _modules = CH3NH2_APRP, CH3NH2_APRP_DPEM
    return _modules


def diabatic(x: np.ndarray) -> np.ndarray:
    """The 2×2 diabatic matrix (eV) at ``x [7, 3]`` Å."""
    return np.array(_pes()[1].dpem(np.asarray(x, dtype=np.float64).reshape(NATOMS, 3), 0)[0])


def evaluate(x: np.ndarray):
    """``x [7, 3]`` Å -> energies [2] eV, gradients [2, 7, 3] eV/Å, couplings [2, 2, 7, 3] 1/Å
    (``d[i, j] = <i|∇j>``, eigenvector phases as LAPACK's, i.e. the same as chempotpy's)."""
    x = np.asarray(x, dtype=np.float64).reshape(NATOMS, 3)
    U = diabatic(x)
    dU = np.empty((NATOMS, 3, NSTATES, NSTATES))
    for a in range(NATOMS):
        for k in range(3):
            xp, xm = x.copy(), x.copy()
            xp[a, k] += STEP
            xm[a, k] -= STEP
            dU[a, k] = (diabatic(xp) - diabatic(xm)) / (2 * STEP)
    e, C = np.linalg.eigh(U)
    G = np.einsum("im,akij,jn->mnak", C, dU, C)  # [2, 2, 7, 3]
    g = np.stack([G[i, i] for i in range(NSTATES)])
    d = np.zeros((NSTATES, NSTATES, NATOMS, 3))
    for i in range(NSTATES):
        for j in range(i + 1, NSTATES):
            d[i, j] = G[i, j] / (e[j] - e[i])
            d[j, i] = -d[i, j]
    return e, g, d


def evaluate_analytic(x: np.ndarray):
    """chempotpy's own ``pgd`` values (energies eV, gradients eV/Å, couplings as returned)."""
    e, g, d = _pes()[0].pes(np.asarray(x, dtype=np.float64).reshape(NATOMS, 3), 2)
    return np.array(e), np.array(g), np.array(d)


def energies(x: np.ndarray) -> np.ndarray:
    return np.array(_pes()[0].pes(np.asarray(x, dtype=np.float64).reshape(NATOMS, 3), 0)[0])


# -- geometry ----------------------------------------------------------------------------------------
def guess() -> np.ndarray:
    """A staggered methylamine (Å) in chempotpy's order H1 H2 N3 C4 H5 H6 H7."""
    C, N = np.zeros(3), np.array([1.47, 0.0, 0.0])

    def substituent(center, bond, polar, azimuth, sign):
        a, p = np.radians(polar), np.radians(azimuth)
        return center + bond * np.array([sign * np.cos(a), np.sin(a) * np.cos(p), np.sin(a) * np.sin(p)])

    return np.array([substituent(N, 1.01, 70, 60, 1), substituent(N, 1.01, 70, 300, 1), N, C,
                     substituent(C, 1.09, 70.5, 0, -1), substituent(C, 1.09, 70.5, 120, -1),
                     substituent(C, 1.09, 70.5, 240, -1)])


def optimise(x: np.ndarray, state: int = 0, gtol: float = 1e-7, steps: int = 2000) -> np.ndarray:
    """BFGS with a backtracking line search on one adiabatic state (Å, eV)."""
    x = x.reshape(-1).copy()

    def f(y):
        e, g, _ = evaluate(y)
        return e[state], g[state].reshape(-1)

    e, g = f(x)
    H = np.eye(x.size) / 30.0  # inverse Hessian guess, Å²/eV
    for _ in range(steps):
        if np.abs(g).max() < gtol:
            break
        p = -H @ g
        if p @ g >= 0:
            H, p = np.eye(x.size) / 30.0, -g / 30.0
        step = 1.0
        while True:
            y = x + step * p
            e_new, g_new = f(y)
            if e_new <= e + 1e-4 * step * (p @ g) or step < 1e-8:
                break
            step *= 0.5
        s, q = y - x, g_new - g
        if s @ q > 1e-12:
            r = 1.0 / (s @ q)
            eye = np.eye(x.size)
            H = (eye - r * np.outer(s, q)) @ H @ (eye - r * np.outer(q, s)) + r * np.outer(s, s)
        x, e, g = y, e_new, g_new
    return x.reshape(NATOMS, 3)


def hessian(x: np.ndarray, state: int = 0, h: float = 1e-3) -> np.ndarray:
    """Central differences of the analytic gradient, ``[21, 21]`` eV/Å², symmetrised."""
    x = x.reshape(-1)
    H = np.zeros((x.size, x.size))
    for k in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp[k] += h
        xm[k] -= h
        H[k] = (evaluate(xp)[1][state].reshape(-1) - evaluate(xm)[1][state].reshape(-1)) / (2 * h)
    return 0.5 * (H + H.T)


def normal_modes(x: np.ndarray):
    """Frequencies (hartree, ħ = 1) and mass-weighted modes ``[21, 15]`` (atomic units) at ``x``;
    translations and rotations projected out."""
    m = np.repeat(MASSES * AMU, 3)
    Hau = hessian(x) / HARTREE * BOHR**2  # hartree / bohr²
    Hmw = Hau / np.sqrt(np.outer(m, m))
    # project out translations and rotations (in mass-weighted coordinates)
    xb = (x - (MASSES[:, None] * x).sum(0) / MASSES.sum()) / BOHR
    sq = np.sqrt(MASSES * AMU)
    tr = []
    for k in range(3):
        t = np.zeros((NATOMS, 3))
        t[:, k] = sq
        tr.append(t.reshape(-1))
        r = np.cross(np.eye(3)[k], xb) * sq[:, None]
        tr.append(r.reshape(-1))
    Q, _ = np.linalg.qr(np.array(tr).T)
    P = np.eye(3 * NATOMS) - Q @ Q.T
    w2, L = np.linalg.eigh(P @ Hmw @ P)
    order = np.argsort(np.abs(w2))[6:]  # drop the six (near-)zero translations/rotations
    order = order[np.argsort(w2[order])]
    w2, L = w2[order], L[:, order]
    if (w2 <= 0).any():
        raise RuntimeError(f"imaginary frequencies at the minimum: {w2}")
    return np.sqrt(w2), L


def wigner(x0: np.ndarray, omega: np.ndarray, L: np.ndarray, temperature: float, count: int, rng):
    """Harmonic Wigner samples: positions [count, 7, 3] Å and velocities [count, 7, 3] Å/fs.
    Mass-weighted normal coordinate ``Q ~ N(0, coth(ω/2kT)/(2ω))``, ``P ~ N(0, ω coth/2)``."""
    factor = np.ones_like(omega) if temperature <= 0 else 1.0 / np.tanh(omega / (2 * KB * temperature))
    sq = np.sqrt(factor / (2 * omega))
    sp = np.sqrt(factor * omega / 2)
    m = np.repeat(MASSES * AMU, 3)
    Q = rng.standard_normal((count, omega.size)) * sq
    P = rng.standard_normal((count, omega.size)) * sp
    dx = (Q @ L.T) / np.sqrt(m)  # bohr
    v = (P @ L.T) / np.sqrt(m)  # bohr / (ħ/hartree)
    return x0[None] + dx.reshape(count, NATOMS, 3) * BOHR, v.reshape(count, NATOMS, 3) * BOHR * FS


def minimum():
    x = optimise(guess())
    x = x - (MASSES[:, None] * x).sum(0) / MASSES.sum()
    return x


def distances(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


def r_nh(x: np.ndarray) -> float:
    return float(np.linalg.norm(x[DISSOCIATING[0]] - x[DISSOCIATING[1]]))


# -- classical dynamics on one adiabatic state (Å, fs, amu, eV) -------------------------------------------
EV_PER_AMU_A2_FS2 = 103.642696  # 1 amu Å²/fs² in eV


def verlet(x, v, state, dt, steps, stop=None):
    """Velocity Verlet on ``state``; yields ``(step, x, v, e, g, d)`` for every step (step 0 first)."""
    a_scale = 1.0 / (MASSES[:, None] * EV_PER_AMU_A2_FS2)  # (eV/Å) -> Å/fs²
    x, v = x.copy(), v.copy()
    e, g, d = evaluate(x)
    yield 0, x, v, e, g, d
    for step in range(1, steps + 1):
        v = v - 0.5 * dt * g[state] * a_scale
        x = x + dt * v
        e, g, d = evaluate(x)
        v = v - 0.5 * dt * g[state] * a_scale
        if not np.isfinite(e).all():
            return
        yield step, x, v, e, g, d
        if stop is not None and stop(x):
            return


def kinetic(v):
    return 0.5 * (MASSES[:, None] * v**2).sum() * EV_PER_AMU_A2_FS2


def hop_velocity(v, d, gap):
    """Velocities after a downward hop (energy ``gap`` eV to the nuclei), rescaled along ``d``."""
    m = MASSES[:, None]
    a = 0.5 * (d**2 / m).sum() * EV_PER_AMU_A2_FS2
    b = (v * d).sum() * EV_PER_AMU_A2_FS2
    disc = b**2 + 4 * a * gap
    gamma = (b + np.sqrt(disc)) / (2 * a) if b < 0 else (b - np.sqrt(disc)) / (2 * a)
    return v - gamma * d / m


# -- data ----------------------------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    return f"{value:.8g}"


def frame_text(x, info: dict, arrays: dict | None = None) -> str:
    arrays = arrays or {}
    props = "species:S:1:pos:R:3" + "".join(f":{k}:R:3" for k in arrays)
    head = " ".join([f"Properties={props}"] + [f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in info.items()]
                    + ['pbc="F F F"'])
    lines = [str(NATOMS), head]
    for i in range(NATOMS):
        cols = [f"{c:.8f}" for c in x[i]]
        for a in arrays.values():
            cols += [f"{c:.7g}" for c in a[i]]
        lines.append(f"{SYMBOLS[i]} " + " ".join(cols))
    return "\n".join(lines) + "\n"


def labelled(x, sampling: str, e=None, g=None, d=None, **extra) -> str | None:
    if e is None:
        e, g, d = evaluate(x)
    dist = distances(x) + np.eye(NATOMS) * 10
    if dist.min() < 0.6 or not (np.isfinite(e).all() and np.isfinite(g).all() and np.isfinite(d).all()):
        return None
    info = {"energy_S0": float(e[0]), "energy_S1": float(e[1]), "sampling": sampling, **extra}
    return frame_text(x, info, {"forces_S0": -g[0], "forces_S1": -g[1], "nac_S0_S1": d[0, 1]})


def label(output: Path, frames: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x0 = minimum()
    omega, L = normal_modes(x0)
    n_wigner = round(0.35 * frames)
    n_s1 = round(0.40 * frames)
    n_s0 = frames - n_wigner - n_s1
    texts: list[str] = []
    stats: dict[str, list] = {}

    def add(text, kind, x):
        if text is None:
            stats.setdefault(kind + " dropped", []).append(r_nh(x))
            return False
        texts.append(text)
        stats.setdefault(kind, []).append(r_nh(x))
        return True

    def take(pool, count, kind):  # a random subset of a trajectory pool, skipping dropped frames
        taken = 0
        for k in rng.permutation(len(pool)):
            if taken == count:
                break
            x, e, g, d, traj, step = pool[k]
            taken += add(labelled(x, kind, e, g, d, trajectory=traj, step=step), kind, x)

    # 1. Wigner samples at three temperatures
    temperatures = (0, 300, 1000)
    per = [n_wigner // 3 + (k < n_wigner % 3) for k in range(3)]
    for T, n in zip(temperatures, per):
        taken = 0
        while taken < n:
            x = wigner(x0, omega, L, T, 1, rng)[0][0]
            taken += add(labelled(x, f"wigner{T}K"), f"wigner{T}K", x)
    # 2. S1 trajectories from Wigner 0 K samples, 0.5 fs, 100 fs or until N-H1 > 4 Å
    dt, stride = 0.5, 4
    s1_pool, starts = [], []
    n_traj = 0
    while len(s1_pool) < 1.3 * n_s1 or len(starts) < n_s0 // 10:
        xs, vs = wigner(x0, omega, L, 0, 1, rng)
        best = None
        for step, x, v, e, g, d in verlet(xs[0], vs[0], 1, dt, 200, stop=lambda y: r_nh(y) > 4.0):
            if step % stride == 0 or r_nh(x) > 4.0:
                s1_pool.append((x.copy(), e, g, d, n_traj, step))
            gap = e[1] - e[0]
            if best is None or gap < best[0]:
                best = (gap, x.copy(), v.copy(), e, d[0, 1].copy(), step)
        if best is not None and best[0] < 1.0:  # a crossing reached: start on S0 from there
            starts.append((n_traj,) + best)
        n_traj += 1
        if n_traj > 2000:
            break
    take(s1_pool, n_s1, "s1_dynamics")
    # 3. S0 after a hop at the smallest gap: velocities rescaled along d to conserve energy, 100 fs
    s0_pool = []
    for traj, gap, x, v, e, d01, step in starts:
        v0 = hop_velocity(v, d01, gap)
        for k, y, w, e, g, d in verlet(x, v0, 0, dt, 200, stop=lambda y: r_nh(y) > 5.0):
            if k % 5 == 0:
                s0_pool.append((y.copy(), e, g, d, traj, k))
    take(s0_pool, n_s0, "s0_after_hop")

    write_frames(output, texts, stats, f"S1 trajectories: {n_traj}, reaching a gap < 1 eV: {len(starts)}; "
                 f"pools S1 {len(s1_pool)}, S0 {len(s0_pool)}")


def write_frames(output: Path, texts: list[str], stats: dict, summary: str) -> None:
    """Write the labelled frames and print what was sampled (N-H1 range per kind)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(texts))
    print(summary)
    for kind, r in stats.items():
        print(f"{kind:20s} {len(r):5d} frames, N-H1 {min(r):.2f}-{max(r):.2f} Å")
    print(f"{len(texts)} frames -> {output} ({output.stat().st_size / 1e6:.2f} MB)")


def label_hops(output: Path, frames: int, seed: int, low: float = 1.5, high: float = 2.6) -> None:
    """Frames where surface hopping happens: S1 trajectories from 0 K Wigner samples, their frames with
    N-H1 in [low, high] Å, and S0 trajectories started from random points of that window (a downward hop,
    velocities rescaled along d, as FSSH does), 100 fs each. Half S1 frames in the window, half S0 after hops."""
    rng = np.random.default_rng(seed)
    x0 = minimum()
    omega, L = normal_modes(x0)
    dt = 0.5
    s1_pool, hop_points = [], []
    n_traj = 0
    while n_traj < frames // 10:  # many trajectories, few frames each (0.5 fs frames are near copies)
        xs, vs = wigner(x0, omega, L, 0, 1, rng)
        for step, x, v, e, g, d in verlet(xs[0], vs[0], 1, dt, 300, stop=lambda y: r_nh(y) > high + 0.2):
            if low <= r_nh(x) <= high and step % 3 == 0:
                s1_pool.append((x.copy(), e, g, d, n_traj, step))
                if step % 6 == 0:
                    hop_points.append((n_traj, step, x.copy(), v.copy(), e, d[0, 1].copy()))
        n_traj += 1
    s0_pool = []
    for k in rng.permutation(len(hop_points))[: max(1, frames // 20)]:
        traj, step, x, v, e, d01 = hop_points[k]
        v0 = hop_velocity(v, d01, e[1] - e[0])
        for j, y, w, e2, g2, d2 in verlet(x, v0, 0, dt, 200, stop=lambda y: r_nh(y) > 5.0):
            if j % 5 == 0:
                s0_pool.append((y.copy(), e2, g2, d2, traj, step * 1000 + j))
    texts, stats = [], {}
    for pool, kind in ((s1_pool, "s1_hop_window"), (s0_pool, "s0_after_window_hop")):
        taken = 0
        for k in rng.permutation(len(pool)):
            if taken == frames // 2:
                break
            x, e, g, d, traj, step = pool[k]
            text = labelled(x, kind, e, g, d, trajectory=traj, step=step)
            if text is not None:
                texts.append(text)
                stats.setdefault(kind, []).append(r_nh(x))
                taken += 1
    write_frames(output, texts, stats, f"S1 trajectories: {n_traj}; pools S1 {len(s1_pool)}, S0 {len(s0_pool)}")


# -- subcommands ----------------------------------------------------------------------------------------------
def info(output: Path) -> None:
    x0 = minimum()
    e, g, d = evaluate(x0)
    omega, _ = normal_modes(x0)
    print("atoms (chempotpy order):", " ".join(f"{s}{i + 1}" for i, s in enumerate(SYMBOLS)))
    print("masses (amu):", " ".join(f"{m:g}" for m in MASSES))
    print("S0 minimum (Å):")
    for s, r in zip(SYMBOLS, x0):
        print(f"  {s} {r[0]:12.7f} {r[1]:12.7f} {r[2]:12.7f}")
    print(f"E_S0 = {e[0]:.6f} eV, E_S1 = {e[1]:.6f} eV, vertical gap = {e[1] - e[0]:.4f} eV, "
          f"max |grad S0| = {np.abs(g[0]).max():.1e} eV/Å, |d01| = {np.linalg.norm(d[0, 1]):.4f} 1/Å")
    print(f"r(N3-H1) = {r_nh(x0):.4f} Å")
    print("harmonic frequencies (cm-1):", " ".join(f"{w * 219474.6313:.0f}" for w in omega))
    print(f"zero-point energy: {0.5 * omega.sum() * HARTREE:.4f} eV")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(frame_text(x0, {"energy_S0": float(e[0]), "energy_S1": float(e[1]), "sampling": "minimum"},
                                 {"forces_S0": -g[0], "forces_S1": -g[1], "nac_S0_S1": d[0, 1]}))
    print(f"-> {output}")


def wigner_command(count: int, temperature: float, seed: int, output: Path) -> None:
    x0 = minimum()
    omega, L = normal_modes(x0)
    xs, vs = wigner(x0, omega, L, temperature, count, np.random.default_rng(seed))
    text = "".join(frame_text(x, {"sampling": f"wigner{temperature:g}K", "index": i}, {"velocities": v})
                   for i, (x, v) in enumerate(zip(xs, vs)))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"{count} Wigner samples at {temperature:g} K (positions Å, array 'velocities' Å/fs) -> {output}")


def serve() -> None:
    """Binary server on stdin/stdout (little-endian): request ``int64 T`` (0: quit) then
    ``T*7*3`` float64 geometries (Å); reply ``T*2`` energies (eV), ``T*2*7*3`` gradients (eV/Å),
    ``T*2*2*7*3`` couplings ``d[i, j] = <i|∇j>`` (1/Å). Anything else written to stdout (chempotpy's
    banner, Fortran warnings) is sent to stderr instead."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # fd 1 (Python and Fortran prints) -> stderr
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    _pes()

    def read(n):
        data = inp.read(n)
        if data is None or len(data) != n:
            raise EOFError
        return data

    while True:
        try:
            T = int(np.frombuffer(read(8), "<i8")[0])
        except EOFError:
            return
        if T <= 0:
            return
        x = np.frombuffer(read(T * NATOMS * 3 * 8), "<f8").reshape(T, NATOMS, 3)
        E = np.empty((T, NSTATES))
        G = np.empty((T, NSTATES, NATOMS, 3))
        D = np.empty((T, NSTATES, NSTATES, NATOMS, 3))
        for t in range(T):
            E[t], G[t], D[t] = evaluate(x[t])
        out.write(E.astype("<f8").tobytes() + G.astype("<f8").tobytes() + D.astype("<f8").tobytes())
        out.flush()


def check() -> None:
    """Checks, per geometry: the gradients of ``evaluate`` against central differences (h = 1e-4 Å) of
    the energies; its coupling against ``<0|∇1>`` from central differences of the eigenvectors of the
    diabatic matrix (phases aligned); ``d01 = -d10``; and chempotpy's analytic values against both."""
    with contextlib.redirect_stdout(sys.stderr):
        import chempotpy

    geom = [[s, *r] for s, r in zip(SYMBOLS, guess())]
    with contextlib.redirect_stdout(sys.stderr):
        e_p, g_p, d_p = chempotpy.pgd("CH3NH2", "CH3NH2_APRP", geom)
    e_a, g_a, d_a = evaluate_analytic(guess())
    same = max(np.abs(e_p - e_a).max(), np.abs(g_p - g_a).max(), np.abs(d_p[0, 1] - d_a[0, 1]).max())
    print(f"chempotpy.pgd vs CH3NH2_APRP.pes: {same:.1e}; pgd's d[0,0], d[1,1] (uninitialised memory): "
          f"{np.abs(d_p[0, 0]).max():.1e}, {np.abs(d_p[1, 1]).max():.1e}")
    x0 = minimum()
    h = 1e-4
    omega, L = normal_modes(x0)
    xs, _ = wigner(x0, omega, L, 1000, 3, np.random.default_rng(5))
    cases = [("minimum", x0)] + [("wigner1000K", x) for x in xs]
    for r in (1.2, 1.6, 1.8, 2.0, 2.5, 3.0, 3.4, 3.6, 4.0, 5.0):
        y = xs[0].copy()
        y[0] = y[2] + r * (xs[0][0] - xs[0][2]) / np.linalg.norm(xs[0][0] - xs[0][2])
        cases.append(("N-H1 stretch", y))

    def vectors(y):
        return np.linalg.eigh(diabatic(y))[1]

    print(f"{'geometry':>13s} {'r(NH1)':>6s} {'gap/eV':>7s} {'|grad|':>6s} {'grad err':>8s} {'|d01|':>7s} "
          f"{'d01 err':>8s} {'d01+d10':>7s} | chempotpy: {'grad err':>8s} {'d01/<0|∇1>':>10s} {'d01 err':>8s}")
    for name, x in cases:
        e, g, d = evaluate(x)
        e_a, g_a, d_a = evaluate_analytic(x)
        gfd = np.zeros_like(g)
        dfd = np.zeros((NATOMS, 3))
        c = vectors(x)
        for a in range(NATOMS):
            for k in range(3):
                xp, xm = x.copy(), x.copy()
                xp[a, k] += h
                xm[a, k] -= h
                gfd[:, a, k] = (energies(xp) - energies(xm)) / (2 * h)
                cp, cm = vectors(xp), vectors(xm)
                cp, cm = cp * np.sign((cp * c).sum(0)), cm * np.sign((cm * c).sum(0))
                dfd[a, k] = c[:, 0] @ (cp[:, 1] - cm[:, 1]) / (2 * h)
        ratio = (d_a[0, 1] * dfd).sum() / (dfd * dfd).sum()
        print(f"{name:>13s} {r_nh(x):6.2f} {e[1] - e[0]:7.3f} {np.abs(g).max():6.2f} {np.abs(g - gfd).max():8.1e} "
              f"{np.linalg.norm(d[0, 1]):7.4f} {np.abs(dfd - d[0, 1]).max():8.1e} {np.abs(d[0, 1] + d[1, 0]).max():7.1e} | "
              f"{'':>10s} {np.abs(g_a - gfd).max():8.1e} {ratio:10.6f} {np.abs(d_a[0, 1] / PACKAGE_NAC_FACTOR - dfd).max():8.1e}")


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("label")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "data" / "methylamine_aprp.xyz")
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("hops")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "data" / "methylamine_aprp_hops.xyz")
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("info")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "data" / "methylamine_minimum.xyz")
    p = sub.add_parser("wigner")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, required=True)
    sub.add_parser("serve")
    sub.add_parser("check")
    args = parser.parse_args()
    if args.command == "label":
        label(args.output, args.frames, args.seed)
    elif args.command == "hops":
        label_hops(args.output, args.frames, args.seed)
    elif args.command == "info":
        info(args.output)
    elif args.command == "wigner":
        wigner_command(args.count, args.temperature, args.seed, args.output)
    elif args.command == "serve":
        serve()
    else:
        check()


if __name__ == "__main__":
    main()
