"""What a training run prints and logs: a line per epoch, error tables, TensorBoard (its progress bars:
:mod:`tensorfuse.utils._progress`)."""

from __future__ import annotations

import math
from pathlib import Path


def epoch_line(row: dict, valid: dict) -> str:
    validated = math.isfinite(row["valid_loss"]) or bool(valid)
    text = (f"epoch {row['epoch']:4d}  loss {row['train_loss']:.4g}  "
            + (f"valid loss {row['valid_loss']:.4g}  " if validated else "(no validation set)  ")
            + f"lr {row['lr']:.2e}  {row['time_s']:.1f} s")
    states = [k[len("f_mae_"):] for k in valid if k.startswith("f_mae_")]
    if states:  # several electronic states: the force MAE of each, the coupling MAEs
        text += "  valid F MAE " + ", ".join(f"{s} {valid['f_mae_' + s]:.1f}" for s in states) + " meV/Å"
        pairs = [k[len("c_mae_"):] for k in valid if k.startswith("c_mae_")]
        if pairs:
            text += "; coupling MAE " + ", ".join(f"{p} {valid['c_mae_' + p]:.1f}" for p in pairs) + " meV/Å"
    elif valid:
        # the plain energy error is mostly the constant that the final shift refit removes: show
        # what is left after a shift fit too, or epoch 1's "3983 meV" reads like a failed run
        shifted = valid.get("e_rmse_shifted", math.nan)
        text += (f"  valid E MAE {valid['e_mae']:.2f} meV ({valid['e_atom_mae']:.2f} meV/atom), "
                 f"RMSE {valid['e_rmse']:.2f}" + (f" ({shifted:.2f} after a shift refit)" if math.isfinite(shifted) else "")
                 + f"; F MAE {valid['f_mae']:.2f} meV/Å, RMSE {valid['f_rmse']:.2f}")
    return text


def format_metrics(metrics: dict, title: str) -> str:
    """An error table, one line per split (``-`` where a split has no such label); for several
    electronic states one line per split and state, then the gaps and couplings."""
    first = next(iter(metrics.values()), {})
    if any(k.startswith("f_mae_") for k in first):
        return _format_state_metrics(metrics, title)
    lines = [f"errors, {title}:",
             f"{'split':>6} | {'E MAE':>8} {'E RMSE':>8} meV | {'E/atom MAE':>10} {'RMSE':>8} meV | "
             f"{'F MAE':>8} {'F RMSE':>8} meV/Å | {'S MAE':>8} {'S RMSE':>8} meV/Å³"]

    def number(value: float, width: int, digits: int) -> str:
        return f"{value:{width}.{digits}f}" if math.isfinite(value) else f"{'-':>{width}}"

    for split, m in metrics.items():
        lines.append(f"{split:>6} | {number(m['e_mae'], 8, 2)} {number(m['e_rmse'], 8, 2)}     | "
                     f"{number(m['e_atom_mae'], 10, 3)} {number(m['e_atom_rmse'], 8, 3)}     | "
                     f"{number(m['f_mae'], 8, 2)} {number(m['f_rmse'], 8, 2)}       | "
                     f"{number(m['s_mae'], 8, 3)} {number(m['s_rmse'], 8, 3)}")
    return "\n".join(lines)


def _format_state_metrics(metrics: dict, title: str) -> str:
    def number(value: float, width: int, digits: int) -> str:
        return f"{value:{width}.{digits}f}" if math.isfinite(value) else f"{'-':>{width}}"

    first = next(iter(metrics.values()))
    states = [k[len("f_mae_"):] for k in first if k.startswith("f_mae_")]
    lines = [f"errors, {title}:",
             f"{'split':>6} {'state':>6} | {'E MAE':>8} {'E RMSE':>8} meV | {'E/atom MAE':>10} meV | "
             f"{'F MAE':>8} {'F RMSE':>8} meV/Å"]
    for split, m in metrics.items():
        for s in states:
            lines.append(f"{split:>6} {s:>6} | {number(m['e_mae_' + s], 8, 2)} {number(m['e_rmse_' + s], 8, 2)}     | "
                         f"{number(m['e_atom_mae_' + s], 10, 3)}     | {number(m['f_mae_' + s], 8, 2)} "
                         f"{number(m['f_rmse_' + s], 8, 2)}")
    gaps = [k[len("gap_mae_"):] for k in first if k.startswith("gap_mae_")]
    pairs = [k[len("c_mae_"):] for k in first if k.startswith("c_mae_")]
    if gaps or pairs:
        lines.append(f"{'split':>6} {'pair':>6} | {'gap MAE':>8} meV | {'coupling MAE':>12} {'RMSE':>8} meV/Å | "
                     f"{'cosine':>6}")
        for split, m in metrics.items():
            for pair in dict.fromkeys(gaps + pairs):
                lines.append(f"{split:>6} {pair:>6} | {number(m.get('gap_mae_' + pair, math.nan), 8, 2)}     | "
                             f"{number(m.get('c_mae_' + pair, math.nan), 12, 2)} "
                             f"{number(m.get('c_rmse_' + pair, math.nan), 8, 2)}       | "
                             f"{number(m.get('c_cos_' + pair, math.nan), 6, 3)}")
    return "\n".join(lines)


class TensorBoard:
    """Scalars to TensorBoard when ``torch.utils.tensorboard`` (the tensorboard package) is installed.

    A resumed run purges the events logged after its checkpoint's epoch, so no epoch appears twice.
    """

    def __init__(self, output: Path, first_epoch: int):
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output / "tensorboard"), purge_step=first_epoch)
        except Exception:  # tensorboard not installed: CSV only
            self.writer = None

    def add(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()
