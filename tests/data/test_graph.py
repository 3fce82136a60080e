import itertools

import numpy as np
import pytest
import torch

from tensorfuse.data import AtomicGraph, batch_graphs, neighbor_list


def brute_force_pairs(positions, cell, pbc, cutoff, reach=3):
    ranges = [range(-reach, reach + 1) if p else [0] for p in pbc]
    pairs = set()
    for i, j in itertools.product(range(len(positions)), repeat=2):
        for S in itertools.product(*ranges):
            if i == j and S == (0, 0, 0):
                continue
            d = positions[j] - positions[i] + np.array(S) @ cell
            if np.linalg.norm(d) < cutoff:
                pairs.add((j, i, S))
    return pairs


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, False, False)])
def test_neighbor_list_matches_brute_force_including_small_cells(pbc):
    rng = np.random.default_rng(0)
    cell = np.diag([2.9, 3.4, 3.1]) + rng.uniform(-0.4, 0.4, (3, 3))
    positions = rng.uniform(0, 1, (4, 3)) @ cell
    sender, receiver, shifts = neighbor_list(positions, cell, np.array(pbc), 4.5)
    ours = {(int(j), int(i), tuple(int(s) for s in S)) for j, i, S in zip(sender, receiver, shifts)}
    assert ours == brute_force_pairs(positions, cell, pbc, 4.5)


def test_edge_vectors_point_from_centre_to_neighbour():
    graph = AtomicGraph.from_arrays([[0, 0, 0], [1.0, 0, 0]], [1, 8], cutoff=2.0)
    sender, receiver = graph.edge_index
    vectors = graph.edge_vectors()
    expected = graph.positions[sender] - graph.positions[receiver]
    assert torch.allclose(vectors, expected)


def test_batching_offsets_edges_and_structures():
    a = AtomicGraph.from_arrays(np.random.rand(3, 3), [1, 1, 8], cutoff=3.0)
    b = AtomicGraph.from_arrays(np.random.rand(2, 3), [6, 8], cutoff=3.0, cell=np.eye(3) * 4, pbc=True)
    batch = batch_graphs([a, b])
    assert batch.num_graphs == 2 and batch.num_atoms == 5
    assert batch.edge_index.max() == 4 and int(batch.edge_index[:, a.num_edges:].min()) >= 3
    assert torch.equal(batch.batch, torch.tensor([0, 0, 0, 1, 1]))
    assert torch.allclose(batch.edge_vectors(), torch.cat([a.edge_vectors(), b.edge_vectors()]))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        AtomicGraph.from_arrays(np.zeros((3, 2)), [1, 1, 1], cutoff=3.0)
    with pytest.raises(ValueError, match="NaN"):
        AtomicGraph.from_arrays([[0, 0, np.nan]], [1], cutoff=3.0)
    with pytest.raises(ValueError, match="volume"):
        AtomicGraph.from_arrays([[0, 0, 0]], [1], cutoff=3.0, cell=np.zeros((3, 3)), pbc=True)
