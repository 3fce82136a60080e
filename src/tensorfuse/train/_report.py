"""What a training run prints and logs: a progress bar, a line per epoch, error tables, TensorBoard."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path


class ProgressBar:
    """A one-line progress bar on a terminal (silent otherwise, e.g. in CI logs)."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, done: int, loss: float) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                         f"loss {loss:.4g} ({rate:.1f} batches/s)")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def epoch_line(row: dict, valid: dict) -> str:
    text = (f"epoch {row['epoch']:4d}  loss {row['train_loss']:.4g}  valid loss {row['valid_loss']:.4g}  "
            f"lr {row['lr']:.2e}  {row['time_s']:.1f} s")
    if valid:
        text += (f"  valid E MAE {valid['e_mae']:.2f} meV ({valid['e_atom_mae']:.2f} meV/atom), "
                 f"RMSE {valid['e_rmse']:.2f}; F MAE {valid['f_mae']:.2f} meV/Å, RMSE {valid['f_rmse']:.2f}")
    return text


def format_metrics(metrics: dict, title: str) -> str:
    """An error table, one line per split (``-`` where a split has no such label)."""
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
