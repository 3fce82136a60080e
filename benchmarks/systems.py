"""Benchmark structures shared by the benchmark scripts (built here, deterministic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RMD17 = SHARED_DATA / "rmd17"


def aspirin_frames(count: int, start: int = 0) -> list[Atoms]:
    """Frames of rMD17 aspirin (energies in the file are kcal/mol; not needed for timing)."""
    data = np.load(RMD17 / "rmd17_aspirin_train_01.npz")
    numbers = data["nuclear_charges"].astype(int)
    return [Atoms(numbers=numbers, positions=data["coords"][i]) for i in range(start, start + count)]


def ethanol_frames(count: int, start: int = 0) -> list[Atoms]:
    """Frames of rMD17 ethanol (9 atoms): independent small molecules, batched into one call the way
    surface-hopping ensembles and screening use the model."""
    data = np.load(RMD17 / "rmd17_ethanol_train_01.npz")
    numbers = data["nuclear_charges"].astype(int)
    return [Atoms(numbers=numbers, positions=data["coords"][i]) for i in range(start, start + count)]


def silicon_512() -> Atoms:
    """Diamond Si, 4x4x4 conventional cells (512 atoms), periodic."""
    return bulk("Si", "diamond", a=5.43, cubic=True).repeat((4, 4, 4))


def silicon_10648() -> Atoms:
    """Diamond Si, 11x11x11 conventional cells (10,648 atoms, 59.7 Å wide), periodic, rattled 0.05 Å."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((11, 11, 11))
    atoms.positions += np.random.default_rng(0).normal(0.0, 0.05, atoms.positions.shape)
    return atoms


def water_540(seed: int = 0) -> Atoms:
    """180 randomly oriented water molecules at 1 g/cm^3 on a jittered grid (540 atoms), periodic."""
    rng = np.random.default_rng(seed)
    n_molecules = 180
    mass = n_molecules * 18.015 / 6.02214076e23  # g
    side = (mass / 1.0) ** (1 / 3) * 1e8  # Å
    grid = np.array([[i, j, k] for i in range(6) for j in range(6) for k in range(5)], dtype=float)
    spacing = side / np.array([6, 6, 5])
    centres = (grid + 0.5) * spacing
    oh, angle = 0.9572, np.deg2rad(104.52)
    local = np.array([[0, 0, 0], [oh, 0, 0], [oh * np.cos(angle), oh * np.sin(angle), 0]])
    positions, numbers = [], []
    for centre in centres:
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        R = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ])
        positions.extend(centre + local @ R.T)
        numbers.extend([8, 1, 1])
    return Atoms(numbers=numbers, positions=positions, cell=np.eye(3) * side, pbc=True)


SYSTEMS = {
    "aspirin": lambda: [aspirin_frames(1)[0]],
    "aspirin_x32": lambda: aspirin_frames(32),
    "si_512": lambda: [silicon_512()],
    "water_540": lambda: [water_540()],
    "si_10648": lambda: [silicon_10648()],
    "ethanol_x64": lambda: ethanol_frames(64),
}
