"""Evaluate a saved model on labelled data: error table, parity plot, per-frame predictions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tensorfuse.data._dataset import GraphDataset
from tensorfuse.data._io import DataError, validate_frames, write_frames
from tensorfuse.model._committee import SPREADS, Committee
from tensorfuse.model._serialization import load_model
from tensorfuse.train._config import DataConfig, OptimConfig
from tensorfuse.train._data import read_labelled
from tensorfuse.train._objective import objective_for
from tensorfuse.utils._progress import progress_bar


@dataclass
class Evaluation:
    metrics: dict
    predictions: list  # per frame: {"energy": float, "forces": [n, 3], ("stress": [3, 3])}
    plot: Path | None
    written: Path | None
    labelled: dict = dataclasses.field(default_factory=dict)  # label -> frames that have it, and "frames"

    def coverage(self) -> str | None:
        """A line saying over how many frames each error is, when some frames lack a label."""
        total = self.labelled.get("frames", 0)
        partial = {k: n for k, n in self.labelled.items() if k != "frames" and 0 < n < total}
        if not partial:
            return None
        return ("errors are over the labelled frames only: " + ", ".join(f"{k} {n} of {total}" for k, n in partial.items()))


def evaluate(model_path, data_path, output_dir=None, data: DataConfig | None = None,
             batch_size: int = 10, progress: bool = True, committee=()) -> Evaluation:
    """Errors of the model in ``model_path`` (``.pt`` or an exported ``.pt2``) on ``data_path``,
    read with ``data``'s label keys and energy unit; writes a parity plot (PNG) and the per-frame
    predictions (extxyz) to ``output_dir`` (default: next to the model). A multi-state model reads
    its own states' labels (unless ``data.states`` says otherwise) and gets a plot per state.
    ``progress``: a progress bar over the frames on stderr at a terminal (see
    :func:`tensorfuse.utils.progress_bar`). ``committee``: more model files; the errors are then
    those of the members' mean (:class:`~tensorfuse.model.Committee`), and ``metrics`` also holds
    the mean over the frames of the committee's spreads (``spread_energy``, ``spread_gap`` in meV,
    ``spread_forces`` in meV/Å)."""
    data = data or DataConfig()
    model = load_model(model_path)
    if committee:
        model = Committee([model] + [load_model(p) for p in committee])
    names = model.config.states if model.config.num_states > 1 else ()
    if names and not data.states:
        data = dataclasses.replace(data, states=names)
    dtype = next(model.parameters()).dtype
    frames, report = read_labelled(data_path, data)
    frames = [f for f in frames if not f.is_isolated_atom]
    if not frames:
        raise DataError(f"{data_path}: no frames to evaluate besides isolated atoms")
    validate_frames(frames, species=model.config.species, require=(), keys=data.keys())
    dataset = GraphDataset(frames, model.r_max, dtype)
    stress = not names and any(f.stress is not None or f.virial is not None for f in frames)
    objective = objective_for(model.config, OptimConfig())
    sums, predictions, spreads = {}, [], []
    with progress_bar("evaluating", total=len(dataset), enabled=progress, unit="frame") as bar:
        for start in range(0, len(dataset), batch_size):
            indices = list(range(start, min(start + batch_size, len(dataset))))
            graph, targets = dataset.collate(indices)
            out = model(graph, forces=True, stress=stress)
            for k, v in objective.error_sums(out, graph, targets).items():
                sums[k] = sums.get(k, 0.0) + v
            if "spreads" in out:
                spreads.append(out["spreads"].detach())
            counts = graph.atoms_per_graph().tolist()
            split = {key: out[key].detach().split(counts) for key in ("forces", "couplings") if key in out}
            for b, i in enumerate(indices):
                energy = out["energy"][b].detach()
                if names:  # one energy and force array per state, one coupling array per pair
                    p = {f"energy_{n}": float(energy[k]) for k, n in enumerate(names)}
                    p.update({f"forces_{n}": split["forces"][b][:, k].numpy() for k, n in enumerate(names)})
                    if "couplings" in split:
                        p.update({f"coupling_{names[i]}_{names[j]}": split["couplings"][b][:, k].numpy()
                                  for k, (i, j) in enumerate(model.config.state_pairs)})
                else:
                    p = {"energy": float(energy), "forces": split["forces"][b].numpy()}
                if stress:
                    p["stress"] = out["stress"][b].detach().numpy()
                predictions.append(p)
            bar.update(len(indices))
    metrics = objective.metrics(sums)
    if spreads:
        mean = 1000 * torch.cat(spreads).mean(0)
        metrics.update({f"spread_{name}": float(v) for name, v in zip(SPREADS, mean)})
    output_dir = Path(output_dir) if output_dir is not None else Path(model_path).resolve().parent
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(data_path).stem
    written = output_dir / f"predictions_{stem}.xyz"
    write_frames(written, frames, predictions)
    if names:
        for k, name in enumerate(names):
            state_frames = [_state_view(f, k) for f in frames]
            state_predictions = [{"energy": p[f"energy_{name}"], "forces": p[f"forces_{name}"]} for p in predictions]
            state_metrics = {"e_atom_mae": metrics[f"e_atom_mae_{name}"], "f_mae": metrics[f"f_mae_{name}"]}
            plot = output_dir / f"parity_{stem}_{name}.png"
            _parity_plot(plot, state_frames, state_predictions, state_metrics, title=f"state {name}: ")
    else:
        plot = output_dir / f"parity_{stem}.png"
        _parity_plot(plot, frames, predictions, metrics)
    return Evaluation(metrics, predictions, plot, written, _labelled(frames, names))


def _labelled(frames, names) -> dict:
    counts = {"frames": len(frames)}
    if names:
        for k, name in enumerate(names):
            counts[f"energy {name}"] = sum(bool(f.states.has_energy[k]) for f in frames)
            counts[f"forces {name}"] = sum(bool(f.states.has_forces[k]) for f in frames)
    else:
        counts["energy"] = sum(f.energy is not None for f in frames)
        counts["forces"] = sum(f.forces is not None for f in frames)
        counts["stress"] = sum(f.stress is not None or f.virial is not None for f in frames)
    return counts


def _state_view(frame, k: int):
    """The frame with state ``k``'s energy and forces as its labels (None where missing)."""
    labels = frame.states
    return dataclasses.replace(frame, energy=float(labels.energies[k]) if labels.has_energy[k] else None,
                               forces=labels.forces[k] if labels.has_forces[k] else None)


def _parity_plot(path: Path, frames, predictions, metrics, title: str = "") -> None:
    import matplotlib.pyplot as plt

    fig = _parity_figure(frames, predictions, metrics, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parity_figure(frames, predictions, metrics, title: str = ""):
    """Energy per atom and force parity panels. Energies are drawn relative to the reference
    mean: absolute energies per atom (e.g. -400.123 eV) give tick labels that overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with_e = [(f.energy / f.num_atoms, p["energy"] / f.num_atoms) for f, p in zip(frames, predictions) if f.energy is not None]
    with_f = [(f.forces.ravel(), p["forces"].ravel()) for f, p in zip(frames, predictions) if f.forces is not None]
    mean = float(np.mean([e for e, _ in with_e])) if with_e else 0.0
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, pairs, label, unit, mae in (
        (axes[0], [(a - mean, b - mean) for a, b in with_e], "energy per atom", "eV/atom", metrics["e_atom_mae"]),
        (axes[1], [(a, b) for x, y in with_f for a, b in zip(x, y)], "force components", "eV/Å", metrics["f_mae"]),
    ):
        if pairs:
            ref, pred = np.array(pairs).T
            ax.scatter(ref, pred, s=4, alpha=0.5)
            lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(f"{title}{label}: MAE {mae:.2f} m{unit}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=5))
        ax.ticklabel_format(useOffset=False)
        shifted = f" − ({mean:.4f})" if ax is axes[0] and with_e else ""
        ax.set_xlabel(f"reference{shifted} ({unit})")
        ax.set_ylabel(f"predicted{shifted} ({unit})")
    fig.tight_layout()
    return fig
