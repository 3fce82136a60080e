"""Data sets on disk (``tensorfuse preprocess``, HDF5): the same frames as the extxyz reader, the
same training, batches by a budget of atoms, ranks reading disjoint shares, clear errors."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from tensorfuse.data._io import DataError, DataKeys, read_frames
from tensorfuse.data._sampler import BatchSampler
from tensorfuse.train._distributed import Distributed

KEYS = DataKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress")
TINY = {"channels": 4, "l_max": 1, "l_max_edge": 1, "mace": {"correlation": 2}, "num_bessel": 4,
        "radial_mlp": [8, 8], "readout_hidden": 4, "r_max": 4.0}


@pytest.fixture
def h5py():
    return pytest.importorskip("h5py")


def molecule(rng, size: int) -> Atoms:
    """``size`` atoms (H, C, O) on a jittered grid of 1.3 Å: never closer than 0.9 Å."""
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.3
    positions = grid[rng.choice(len(grid), size, replace=False)] + rng.uniform(-0.2, 0.2, (size, 3))
    atoms = Atoms(numbers=rng.choice([1, 6, 8], size), positions=positions)
    atoms.info["REF_energy"] = float(-3.0 * size + rng.normal())
    atoms.arrays["REF_forces"] = rng.normal(size=(size, 3))
    return atoms


def write_molecules(path, count: int, seed: int, sizes=(3, 13)) -> None:
    rng = np.random.default_rng(seed)
    write(path, [molecule(rng, int(rng.integers(*sizes))) for _ in range(count)], format="extxyz")


def preprocess(source, output, keys=KEYS, **options):
    from tensorfuse.data._preprocess import preprocess as run

    explicit = {"energy": keys.energy, "forces": keys.forces}
    return run(source, output, keys, explicit=explicit, **options)


def test_round_trip_gives_the_frames_of_the_extxyz_reader(tmp_path, h5py, monkeypatch):
    """Positions, labels, units (kcal/mol here), cells, stress, weights, missing labels and isolated
    atoms come back as the in-memory reader gives them, by index, in batches and in passes."""
    rng = np.random.default_rng(0)
    images = [molecule(rng, int(rng.integers(2, 12))) for _ in range(30)]
    del images[3].arrays["REF_forces"]  # a frame without forces
    images[4].info["config_weight"] = 2.5
    bulk = Atoms("Si2", positions=[[0, 0, 0], [1.4, 1.4, 1.4]], cell=np.eye(3) * 5.4, pbc=True)
    bulk.info["REF_energy"], bulk.info["REF_stress"] = -10.0, [0.1, 0.2, 0.3, 0.0, 0.01, 0.02]  # Voigt
    bulk.arrays["REF_forces"] = np.zeros((2, 3))
    single = Atoms("H")
    single.info["REF_energy"] = -13.6
    images[10:10] = [bulk, single]
    write(tmp_path / "mixed.xyz", images, format="extxyz")
    result = preprocess(tmp_path / "mixed.xyz", tmp_path / "mixed.h5", energy_unit="kcal/mol")
    expected, report = read_frames(tmp_path / "mixed.xyz", KEYS, "kcal/mol")

    from tensorfuse.data._on_disk import FrameStore, OnDiskFrames

    stored = OnDiskFrames(FrameStore(tmp_path / "mixed.h5"))
    for name in ("frames", "atoms", "elements", "labels", "isolated_atoms"):
        assert getattr(result.report, name) == getattr(report, name) == getattr(stored.store.report, name), name
    order = rng.permutation(len(expected))
    batch = stored.load(order)
    monkeypatch.setattr("tensorfuse.data._on_disk.BLOCK_FRAMES", 4)  # passes of many blocks, some of one frame
    monkeypatch.setattr("tensorfuse.data._on_disk.BLOCK_ATOMS", 9)
    sparse = list(stored[order[:9]])  # a split's pass reads the file in its order
    assert [f.source for f in sparse] == [expected[i].source.replace(".xyz", ".h5") for i in sorted(order[:9])]
    for got in (list(stored), [stored[i] for i in range(len(stored))], [batch[k] for k in np.argsort(order)]):
        assert len(got) == len(expected)
        for a, b in zip(expected, got):
            for name in ("numbers", "positions", "cell", "pbc", "forces", "stress", "virial"):
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None and y is None) or np.array_equal(x, y), (a.source, name)
            assert a.energy == b.energy and a.weight == b.weight and a.is_isolated_atom == b.is_isolated_atom
    assert expected[0].energy == pytest.approx(images[0].info["REF_energy"] * 0.0433641043)
    assert stored.isolated_mask().tolist() == [f.is_isolated_atom for f in expected]
    assert stored.elements() == {1, 6, 8, 14} and stored.has_label("stress") and not stored.has_label("virial")
    from tensorfuse.data._dataset import GraphDataset, OnDiskGraphDataset

    in_memory = GraphDataset(expected, 4.0).average_num_neighbors()
    assert OnDiskGraphDataset(stored, 4.0).average_num_neighbors() == in_memory  # a pass of its own
    from tensorfuse.data._io import validate_frames

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        validate_frames(stored, r_max=4.0, require=(), neighbours=stored.neighbour_counts.setdefault(4.0, {}))
    assert stored.neighbour_counts[4.0]["atoms"] == report.atoms
    assert OnDiskGraphDataset(stored, 4.0).average_num_neighbors() == in_memory  # counted by validation
    with h5py.File(tmp_path / "mixed.h5") as handle:  # inspectable: what `h5ls -r` shows
        assert handle.attrs["format"] == "tensorfuse-dataset" and handle.attrs["energy_unit"] == "kcal/mol"
        assert handle["atoms/positions"].shape == (report.atoms, 3) and "frames/virial" not in handle


def _train(tmp_path, name, train_file, **data):
    from tensorfuse import TrainConfig, train

    config = TrainConfig(data={"train_file": str(train_file), "energy_key": "REF_energy",
                               "forces_key": "REF_forces", **data},
                         model=TINY, training={"max_epochs": 2, "batch_size": 4, "seed": 1},
                         output=str(tmp_path / name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # atoms without neighbours in these random molecules
        return train(config)


def test_training_on_the_h5_file_gives_the_losses_of_the_xyz_file(tmp_path, h5py):
    """With a validation file, the training frames are in file order for both, and every number is
    the same; with a held-out fraction the split is the same frames, and the statistics passes read
    the file in its order instead of the split's (sums in another order: equal to rounding)."""
    write_molecules(tmp_path / "train.xyz", 40, seed=1)
    write_molecules(tmp_path / "valid.xyz", 8, seed=2)
    for name in ("train", "valid"):
        preprocess(tmp_path / f"{name}.xyz", tmp_path / f"{name}.h5")
    xyz = _train(tmp_path, "xyz", tmp_path / "train.xyz", valid_file=str(tmp_path / "valid.xyz"))
    h5 = _train(tmp_path, "h5", tmp_path / "train.h5", valid_file=str(tmp_path / "valid.h5"))
    assert [(r["train_loss"], r["valid_loss"]) for r in xyz.history] == \
           [(r["train_loss"], r["valid_loss"]) for r in h5.history]
    a, b = xyz.model.state_dict(), h5.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_equal(xyz.metrics, h5.metrics)  # NaN (no stress) equal to NaN

    split_xyz = _train(tmp_path, "split_xyz", tmp_path / "train.xyz", valid_fraction=0.2)
    split_h5 = _train(tmp_path, "split_h5", tmp_path / "train.h5", valid_fraction=0.2)
    for x, y in zip(split_xyz.history, split_h5.history):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-9)
        assert x["valid_loss"] == pytest.approx(y["valid_loss"], rel=1e-9)
    saved = [torch.load(tmp_path / run / "checkpoint_last.pt", weights_only=True)["data"]
             for run in ("split_xyz", "split_h5")]
    assert saved[0] == saved[1]  # the same frames and atoms per split


def test_budget_batches_respect_the_budget_and_cover_every_frame_once():
    sizes = np.random.default_rng(0).integers(1, 60, 500)
    sampler = BatchSampler(len(sizes), batch_size=5, batch_atoms=100, atom_counts=sizes)
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    batches = list(sampler.epoch(generator))
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    totals = [int(sizes[b].sum()) for b in batches]
    assert max(totals) <= 100 and np.mean(totals) > 70  # filled, not just bounded
    for batch, following in zip(batches, batches[1:]):  # a batch closes only when the next frame does not fit
        assert sizes[batch].sum() + sizes[following[0]] > 100
    assert [b for b in sampler.epoch(generator.set_state(state))] == batches  # the generator decides
    fixed = list(BatchSampler(12, batch_size=5).epoch(torch.Generator().manual_seed(3)))
    assert [len(b) for b in fixed] == [5, 5, 2]
    assert sum(fixed, []) == torch.randperm(12, generator=torch.Generator().manual_seed(3)).tolist()
    with pytest.warns(UserWarning, match="1 of 3 training frames have more atoms than training.batch_atoms=10"):
        big = BatchSampler(3, batch_size=5, batch_atoms=10, atom_counts=np.array([4, 30, 5]))
    assert sorted(map(len, big.epoch(torch.Generator().manual_seed(0)))) == [1, 2]


def test_ranks_read_disjoint_shares_that_cover_every_global_batch(tmp_path, h5py):
    """Every rank draws the same batches and reads only its share of each (round robin)."""
    from tensorfuse.data._dataset import OnDiskGraphDataset
    from tensorfuse.data._on_disk import FrameStore, OnDiskFrames

    write_molecules(tmp_path / "data.xyz", 23, seed=4)
    preprocess(tmp_path / "data.xyz", tmp_path / "data.h5")
    dataset = OnDiskGraphDataset(OnDiskFrames(FrameStore(tmp_path / "data.h5")), 4.0)
    sampler = BatchSampler(len(dataset), 5, batch_atoms=40, atom_counts=dataset.atom_counts())
    read = []
    dataset.frames.store.frames_at = lambda indices, read_frames=dataset.frames.store.frames_at: (
        read.append(list(indices)) or read_frames(indices))
    for world in (2, 3):
        shares = {rank: [] for rank in range(world)}
        for rank in range(world):
            for batch in sampler.epoch(torch.Generator().manual_seed(7)):
                local = Distributed(rank=rank, world_size=world).shard(batch)
                shares[rank].append(local)
                if local:
                    read.clear()
                    dataset.collate(local)
                    assert sorted(read[0]) == sorted(dataset.frames.indices[local].tolist())  # its frames only
        for k, batch in enumerate(sampler.epoch(torch.Generator().manual_seed(7))):
            parts = [shares[rank][k] for rank in range(world)]
            assert sorted(sum(parts, [])) == sorted(batch)  # disjoint, and together the whole batch


def test_a_killed_run_on_disk_with_a_budget_resumes_exactly(tmp_path, h5py):
    """Batches by atoms come from the run's generator: a run stopped after an epoch and resumed
    ends where an uninterrupted one does (the kill itself is tested on extxyz runs)."""
    from tensorfuse import TrainConfig, train
    from tensorfuse.train import resume_config

    write_molecules(tmp_path / "data.xyz", 30, seed=5, sizes=(2, 20))
    preprocess(tmp_path / "data.xyz", tmp_path / "data.h5")

    def config(name, epochs):
        return TrainConfig(data={"train_file": str(tmp_path / "data.h5"), "valid_fraction": 0.2},
                           model=TINY, training={"max_epochs": epochs, "batch_atoms": 40, "seed": 2},
                           output=str(tmp_path / name))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = train(config("full", 3))
        train(config("stopped", 1))
        resumed = train(resume_config(tmp_path / "stopped", {"training.max_epochs": 3}))
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_lazy_dataset_reads_in_dataloader_workers(tmp_path, h5py):
    """The file is opened in each process that reads (h5py handles do not survive a fork)."""
    from tensorfuse.data._dataset import OnDiskGraphDataset
    from tensorfuse.data._on_disk import FrameStore, OnDiskFrames

    write_molecules(tmp_path / "data.xyz", 12, seed=6)
    preprocess(tmp_path / "data.xyz", tmp_path / "data.h5")
    dataset = OnDiskGraphDataset(OnDiskFrames(FrameStore(tmp_path / "data.h5")), 4.0)
    dataset.collate([0, 1])  # the parent has the file open
    batches = [[0, 3, 5], [7, 2], [11]]
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=2, collate_fn=dataset.collate,
                                         multiprocessing_context="fork")
    for (graph, targets), batch in zip(loader, batches):
        expected_graph, expected = dataset.collate(batch)
        assert torch.equal(graph.positions, expected_graph.positions) and torch.equal(targets.forces, expected.forces)


def test_bad_files_and_settings_are_one_line_errors(tmp_path, h5py, monkeypatch):
    from tensorfuse.data._on_disk import FrameStore
    from tensorfuse.train import DataConfig
    from tensorfuse.train._data import read_labelled

    write_molecules(tmp_path / "data.xyz", 5, seed=7)
    preprocess(tmp_path / "data.xyz", tmp_path / "data.h5")
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(DataError, match="other.h5: an HDF5 file but not a tensorfuse data set"):
        FrameStore(tmp_path / "other.h5")
    (tmp_path / "cut.h5").write_bytes((tmp_path / "data.h5").read_bytes()[:3000])
    with pytest.raises(DataError, match="cut.h5: cannot be read as HDF5"):
        FrameStore(tmp_path / "cut.h5")
    with pytest.raises(DataError, match=r"data.energy_key='REF_energy' \(now 'other'\)"):
        read_labelled(tmp_path / "data.h5", DataConfig(energy_key="other"))
    with pytest.raises(DataError, match=r"one state .* data.states=\['S0', 'S1'\]"):
        read_labelled(tmp_path / "data.h5", DataConfig(states=["S0", "S1"]))
    frames, report = read_labelled(tmp_path / "data.h5", DataConfig(energy_key="REF_energy"))
    assert len(frames) == report.frames == 5
    text = (tmp_path / "data.xyz").read_text()
    (tmp_path / "bad.xyz").write_text(text + text.replace("REF_energy=", "REF_energy=nan #", 1))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DataError, match="bad.xyz, frame 5: key 'REF_energy'"):
        preprocess(tmp_path / "bad.xyz", tmp_path / "data.h5", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial file; the old data set is kept
    assert FrameStore(tmp_path / "data.h5").report.frames == 5
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(DataError, match=r"need h5py: pip install 'tensorfuse\[data\]'"):
        FrameStore(tmp_path / "data.h5")


def test_a_later_run_removes_the_partial_file_a_killed_run_left(tmp_path, h5py):
    """``kill -9`` runs no clean-up: the next preprocess into the same output deletes the stale
    ``.NAME.partial-PID`` (its process is gone) and keeps one whose process still runs."""
    import subprocess
    import sys

    write_molecules(tmp_path / "data.xyz", 4, seed=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f".data.h5.partial-{dead}"
    stale.write_bytes(b"\0" * 1000)
    running = tmp_path / f".data.h5.partial-{os.getppid()}"
    running.write_bytes(b"\0")
    other = tmp_path / f".other.h5.partial-{dead}"
    other.write_bytes(b"\0")
    preprocess(tmp_path / "data.xyz", tmp_path / "data.h5")
    assert not stale.exists() and running.exists() and other.exists()
    assert (tmp_path / "data.h5").exists()
