"""Evaluate a saved model on labelled data: error table, parity plot, per-frame predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tensorfuse.data._dataset import GraphDataset
from tensorfuse.data._io import DataError, validate_frames, write_frames
from tensorfuse.model._serialization import load_model
from tensorfuse.train._config import DataConfig
from tensorfuse.train._data import read_labelled
from tensorfuse.train._loss import error_sums, metrics_from_sums


@dataclass
class Evaluation:
    metrics: dict
    predictions: list  # per frame: {"energy": float, "forces": [n, 3], ("stress": [3, 3])}
    plot: Path | None
    written: Path | None


def evaluate(model_path, data_path, output_dir=None, data: DataConfig | None = None,
             batch_size: int = 10) -> Evaluation:
    """Errors of the model in ``model_path`` (``.pt`` or an exported ``.pt2``) on ``data_path``,
    read with ``data``'s label keys and energy unit; writes a parity plot (PNG) and the per-frame
    predictions (extxyz) to ``output_dir`` (default: next to the model)."""
    data = data or DataConfig()
    model = load_model(model_path)
    dtype = next(model.parameters()).dtype
    frames, report = read_labelled(data_path, data)
    frames = [f for f in frames if not f.is_isolated_atom]
    if not frames:
        raise DataError(f"{data_path}: no frames to evaluate besides isolated atoms")
    validate_frames(frames, species=model.config.species, require=(), keys=data.keys())
    dataset = GraphDataset(frames, model.r_max, dtype)
    stress = any(f.stress is not None or f.virial is not None for f in frames)
    sums, predictions = {}, []
    for start in range(0, len(dataset), batch_size):
        indices = list(range(start, min(start + batch_size, len(dataset))))
        graph, targets = dataset.collate(indices)
        out = model(graph, forces=True, stress=stress)
        for k, v in error_sums(out, graph, targets).items():
            sums[k] = sums.get(k, 0.0) + v
        counts = graph.atoms_per_graph().tolist()
        forces = out["forces"].detach().split(counts)
        for b, i in enumerate(indices):
            p = {"energy": float(out["energy"][b].detach()), "forces": forces[b].numpy()}
            if stress:
                p["stress"] = out["stress"][b].detach().numpy()
            predictions.append(p)
    metrics = metrics_from_sums(sums)
    output_dir = Path(output_dir) if output_dir is not None else Path(model_path).resolve().parent
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(data_path).stem
    written = output_dir / f"predictions_{stem}.xyz"
    write_frames(written, frames, predictions)
    plot = output_dir / f"parity_{stem}.png"
    _parity_plot(plot, frames, predictions, metrics)
    return Evaluation(metrics, predictions, plot, written)


def _parity_plot(path: Path, frames, predictions, metrics) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_e = [(f.energy / f.num_atoms, p["energy"] / f.num_atoms) for f, p in zip(frames, predictions) if f.energy is not None]
    with_f = [(f.forces.ravel(), p["forces"].ravel()) for f, p in zip(frames, predictions) if f.forces is not None]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, pairs, label, unit, mae in (
        (axes[0], with_e, "energy per atom", "eV/atom", metrics["e_atom_mae"]),
        (axes[1], [(a, b) for x, y in with_f for a, b in zip(x, y)], "force components", "eV/Å", metrics["f_mae"]),
    ):
        if pairs:
            ref, pred = np.array(pairs).T
            ax.scatter(ref, pred, s=4, alpha=0.5)
            lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(f"{label}: MAE {mae:.2f} m{unit}")
        ax.set_xlabel(f"reference ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
