"""A reusable physics test suite for potentials (in the spirit of NequIP's model tests).

Subclass :class:`PotentialTests` in a pytest module and set ``config``; every check below then
runs for that model::

    class TestMyModel(PotentialTests):
        config = ModelConfig(species=(1, 6, 8), channels=4)

All checks run in float64: invariance of the energy and equivariance of forces and stress under
rotations *and* reflections, forces and stress against finite differences, translation and
permutation invariance, batch vs single structures, a periodic cell vs its supercell, wrapped vs
unwrapped positions, smoothness as a neighbour crosses the cutoff, and isolated atoms. A model of
several electronic states is checked state by state (every output carries the state axis), and
its couplings, if any, for equivariance and invariance like the forces.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from tensorfuse.data import AtomicGraph, batch_graphs
from tensorfuse.testing._equivariance import rotations_and_reflections

_MODELS: dict = {}


def random_molecule(species, n_atoms: int, seed: int, spread: float = 2.2, min_distance: float = 0.9):
    """Positions ``[n, 3]`` and atomic numbers of a random compact cluster (no atoms too close)."""
    rng = np.random.default_rng(seed)
    positions: list[np.ndarray] = []
    while len(positions) < n_atoms:
        candidate = rng.uniform(-spread, spread, 3)
        if all(np.linalg.norm(candidate - p) > min_distance for p in positions):
            positions.append(candidate)
    numbers = rng.choice(np.asarray(species), n_atoms)
    return np.array(positions), numbers


def random_crystal(species, seed: int):
    """A small triclinic periodic cell with 3 atoms (smaller than typical cutoffs: many images)."""
    rng = np.random.default_rng(seed)
    cell = np.diag([3.1, 3.3, 3.6]) + rng.uniform(-0.3, 0.3, (3, 3))
    fractional = np.array([[0.05, 0.1, 0.0], [0.45, 0.55, 0.4], [0.7, 0.2, 0.75]]) + rng.uniform(-0.03, 0.03, (3, 3))
    numbers = rng.choice(np.asarray(species), 3)
    return fractional @ cell, numbers, cell


class PotentialTests:
    """Physics checks for the model built from ``config`` (set it in the subclass)."""

    config = None
    tolerance = 1e-10  # relative, float64

    # -- helpers ---------------------------------------------------------------------------------
    @classmethod
    def potential(cls):
        key = (cls.__module__, cls.__qualname__)
        if key not in _MODELS:
            from tensorfuse.model import build_model

            config = cls.config
            if not config.statistics.atomic_energies:  # make the priors visible to the checks
                energies = {z: -1.5 * (k + 1) for k, z in enumerate(config.species)}
                config = replace(config, statistics=replace(config.statistics, atomic_energies=energies))
            if config.num_states > 1 and not config.statistics.energy_shift:  # and the states' offsets
                shifts = {z: [0.4 * s + 0.1 * k for s in range(config.num_states)] for k, z in enumerate(config.species)}
                config = replace(config, statistics=replace(config.statistics, energy_shift=shifts))
            _MODELS[key] = build_model(config, dtype=torch.float64, seed=0)
        return _MODELS[key]

    def graph(self, positions, numbers, cell=None, pbc=False) -> AtomicGraph:
        return AtomicGraph.from_arrays(positions, numbers, self.potential().r_max, cell, pbc, dtype=torch.float64)

    def molecule(self, seed: int = 0, n_atoms: int = 6) -> AtomicGraph:
        positions, numbers = random_molecule(self.config.species, n_atoms, seed)
        return self.graph(positions, numbers)

    def crystal(self, seed: int = 0) -> AtomicGraph:
        positions, numbers, cell = random_crystal(self.config.species, seed)
        return self.graph(positions, numbers, cell, True)

    def evaluate(self, graph: AtomicGraph, stress: bool = False) -> dict[str, torch.Tensor]:
        out = self.potential()(graph, forces=True, stress=stress)
        return {k: v.detach() for k, v in out.items()}

    def assert_close(self, actual, expected, what: str, tolerance: float | None = None):
        tolerance = self.tolerance if tolerance is None else tolerance
        scale = max(float(expected.abs().max()), 1e-3)
        error = float((actual - expected).abs().max())
        assert error <= tolerance * scale, f"{what}: error {error:.3e} > {tolerance:.0e} x {scale:.3e}"

    # -- symmetry --------------------------------------------------------------------------------
    def test_energy_invariant_forces_and_stress_equivariant_under_o3(self):
        for graph in (self.molecule(), self.crystal()):
            reference = self.evaluate(graph, stress=True)
            for R in rotations_and_reflections(4):
                moved = replace(graph, positions=graph.positions @ R.T, cell=graph.cell @ R.T)
                out = self.evaluate(moved, stress=True)
                self.assert_close(out["energy"], reference["energy"], "energy under O(3)")
                self.assert_close(out["forces"], reference["forces"] @ R.T, "forces under O(3)")
                self.assert_close(out["stress"], R @ reference["stress"] @ R.T, "stress under O(3)")
                if "couplings" in reference:
                    self.assert_close(out["couplings"], reference["couplings"] @ R.T, "couplings under O(3)")

    def test_translation_invariance(self):
        for graph in (self.molecule(1), self.crystal(1)):
            reference = self.evaluate(graph)
            moved = graph.with_positions(graph.positions + torch.tensor([1.3, -0.7, 2.1], dtype=torch.float64))
            out = self.evaluate(moved)
            self.assert_close(out["energy"], reference["energy"], "energy under translation")
            self.assert_close(out["forces"], reference["forces"], "forces under translation")
            if "couplings" in reference:
                self.assert_close(out["couplings"], reference["couplings"], "couplings under translation")

    def test_permutation_invariance(self):
        positions, numbers = random_molecule(self.config.species, 7, seed=2)
        reference = self.evaluate(self.graph(positions, numbers))
        perm = np.random.default_rng(0).permutation(len(numbers))
        out = self.evaluate(self.graph(positions[perm], numbers[perm]))
        self.assert_close(out["energy"], reference["energy"], "energy under permutation")
        self.assert_close(out["forces"], reference["forces"][torch.as_tensor(perm)], "forces under permutation")
        if "couplings" in reference:
            self.assert_close(out["couplings"], reference["couplings"][torch.as_tensor(perm)], "couplings under permutation")

    # -- derivatives ------------------------------------------------------------------------------
    def test_forces_match_finite_differences(self):
        graph, h = self.crystal(3), 1e-5
        forces = self.evaluate(graph)["forces"]
        for atom, axis in ((0, 0), (1, 2), (2, 1)):
            energies = []
            for sign in (1, -1):
                positions = graph.positions.clone()
                positions[atom, axis] += sign * h
                energies.append(self.evaluate(graph.with_positions(positions))["energy"].sum(0))  # per state
            numeric = -(energies[0] - energies[1]) / (2 * h)
            self.assert_close(forces[atom, ..., axis], numeric, f"force on atom {atom} axis {axis}", 1e-6)

    def test_stress_matches_finite_strain(self):
        graph, h = self.crystal(4), 1e-5
        out = self.evaluate(graph, stress=True)
        volume = torch.linalg.det(graph.cell[0]).abs()
        for i, j in ((0, 0), (1, 2), (2, 1), (0, 1)):
            energies = []
            for sign in (1, -1):
                strain = torch.zeros(3, 3, dtype=torch.float64)
                strain[i, j] += sign * h / 2
                strain[j, i] += sign * h / 2
                deform = torch.eye(3, dtype=torch.float64) + strain
                moved = replace(graph, positions=graph.positions @ deform, cell=graph.cell @ deform)
                energies.append(self.evaluate(moved)["energy"].sum(0))
            numeric = (energies[0] - energies[1]) / (2 * h) / volume
            self.assert_close(out["stress"][0, ..., i, j], numeric, f"stress[{i},{j}]", 1e-6)

    # -- structures ------------------------------------------------------------------------------
    def test_batch_equals_single_structures(self):
        graphs = [self.molecule(5), self.crystal(5), self.molecule(6, n_atoms=4)]
        singles = [self.evaluate(g, stress=True) for g in graphs]
        batch = self.evaluate(batch_graphs(graphs), stress=True)
        self.assert_close(batch["energy"], torch.cat([s["energy"] for s in singles]), "batched energies")
        self.assert_close(batch["forces"], torch.cat([s["forces"] for s in singles]), "batched forces")
        self.assert_close(batch["stress"][1], singles[1]["stress"][0], "batched stress")
        if "couplings" in batch:
            self.assert_close(batch["couplings"], torch.cat([s["couplings"] for s in singles]), "batched couplings")

    def test_supercell_is_extensive(self):
        positions, numbers, cell = random_crystal(self.config.species, seed=6)
        unit = self.evaluate(self.graph(positions, numbers, cell, True), stress=True)
        for reps in ((2, 1, 1), (1, 2, 2)):
            shifts = np.array([[a, b, c] for a in range(reps[0]) for b in range(reps[1]) for c in range(reps[2])])
            big_positions = np.concatenate([positions + s @ cell for s in shifts])
            big_numbers = np.tile(numbers, len(shifts))
            big = self.evaluate(self.graph(big_positions, big_numbers, cell * np.array(reps)[:, None], True), stress=True)
            n = len(shifts)
            self.assert_close(big["energy"], n * unit["energy"], f"energy of a {reps} supercell")
            tiled = unit["forces"].repeat(n, *([1] * (unit["forces"].dim() - 1)))
            self.assert_close(big["forces"], tiled, f"forces in a {reps} supercell")
            self.assert_close(big["stress"], unit["stress"], f"stress of a {reps} supercell")

    def test_wrapped_and_unwrapped_positions_agree(self):
        positions, numbers, cell = random_crystal(self.config.species, seed=7)
        reference = self.evaluate(self.graph(positions, numbers, cell, True))
        moved = positions.copy()
        moved[0] += cell[0] - 2 * cell[2]
        moved[2] -= cell[1]
        out = self.evaluate(self.graph(moved, numbers, cell, True))
        self.assert_close(out["energy"], reference["energy"], "energy with unwrapped positions")
        self.assert_close(out["forces"], reference["forces"], "forces with unwrapped positions")

    def test_smooth_when_a_neighbour_crosses_the_cutoff(self):
        """An edge about to leave the cutoff contributes nothing, to third order in energy."""
        r_max = self.potential().r_max
        numbers = np.array(self.config.species[:1] * 2 + self.config.species[-1:])
        for gap, energy_tolerance, force_tolerance in ((1e-2, 1e-5, 1e-3), (1e-4, 1e-11, 1e-7)):
            distance = r_max - gap
            positions = np.array([[0.0, 0.0, 0.0], [1.1, 0.4, 0.0], [distance, 0.0, 0.3]])
            positions[2] *= distance / np.linalg.norm(positions[2])
            graph = self.graph(positions, numbers)
            sender, receiver = graph.edge_index
            keep = ~(((sender == 0) & (receiver == 2)) | ((sender == 2) & (receiver == 0)))
            assert int((~keep).sum()) == 2, "the test pair should be inside the cutoff"
            without = replace(graph, edge_index=graph.edge_index[:, keep], unit_shifts=graph.unit_shifts[keep])
            full, cut = self.evaluate(graph), self.evaluate(without)
            self.assert_close(full["energy"], cut["energy"], f"energy of an edge {gap} Å inside the cutoff",
                              energy_tolerance)
            self.assert_close(full["forces"], cut["forces"], f"forces of an edge {gap} Å inside the cutoff",
                              force_tolerance)
        # beyond the cutoff the pair is not an edge at all
        positions[2] *= (r_max + 1e-6) / np.linalg.norm(positions[2])
        assert self.graph(positions, numbers).num_edges == 4  # 0-1 and 1-2, both ways

    def test_isolated_atoms_get_their_reference_energy(self):
        model = self.potential()
        priors = model.energy_model.priors
        for index, z in enumerate(self.config.species):
            out = self.evaluate(self.graph(np.zeros((1, 3)), np.array([z])))
            expected = priors.e0[index] + priors.shift[index]  # per state for a multi-state model
            self.assert_close(out["energy"], expected.reshape(out["energy"].shape), f"isolated atom Z={z}", 1e-12)
            assert float(out["forces"].abs().max()) == 0.0
        # two atoms farther apart than the cutoff are two isolated atoms
        z1, z2 = self.config.species[0], self.config.species[-1]
        far = self.evaluate(self.graph(np.array([[0.0, 0, 0], [0.0, 0, 1.5 * model.r_max]]), np.array([z1, z2])))
        singles = [self.evaluate(self.graph(np.zeros((1, 3)), np.array([z])))["energy"] for z in (z1, z2)]
        self.assert_close(far["energy"], singles[0] + singles[1], "two distant atoms")
