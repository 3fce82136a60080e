"""Training on data sets larger than memory: peak memory of a training process against the size of
its data set on disk (``tensorfuse preprocess``'s HDF5 format).

For each size, a synthetic data set of random small molecules (8 to 64 atoms of H, C, N and O on
a jittered grid, energies and forces from random numbers) is written straight to HDF5 by tensorfuse's
writer; then a fresh process (``OMP_NUM_THREADS=1``) trains a tiny model on it for a fixed number of
steps, batches filled up to a budget of atoms, after the start-up passes over the whole file
(validation, reference energies, force scale, neighbour count). Its peak resident memory is
``VmHWM`` of ``/proc/self/status``, read after the start-up passes and after the steps.
``--in-memory-gb`` adds, for contrast, the same kind of data read into memory from extxyz.

    OMP_NUM_THREADS=1 python benchmarks/large_data.py --sizes-gb 0.25 0.5 1 2 --in-memory-gb 0.1 \
        --output benchmarks/results/large_data.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPECIES = (1, 6, 7, 8)
E0 = {1: -13.6, 6: -1029.0, 7: -1484.0, 8: -2041.0}
MODEL = {"channels": 8, "l_max": 1, "l_max_edge": 1, "mace": {"correlation": 2}, "num_bessel": 6,
         "radial_mlp": [16, 16], "readout_hidden": 8, "r_max": 4.0}
BATCH_ATOMS = 512


def molecules(rng: np.random.Generator, count: int):
    """``count`` random molecules as Frames: 8-64 atoms on a 4x4x4 grid of 1.4 Å, jittered by 0.2 Å
    (never closer than 1 Å)."""
    from tensorfuse.data._io import Frame

    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.4
    sizes = rng.integers(8, 65, count)
    frames = []
    for size in sizes.tolist():
        numbers = rng.choice(SPECIES, size, p=(0.5, 0.3, 0.1, 0.1))
        positions = grid[rng.permutation(64)[:size]] + rng.uniform(-0.2, 0.2, (size, 3))
        energy = float(sum(E0[z] for z in numbers.tolist()) + rng.normal(scale=0.1 * size))
        frames.append(Frame(numbers=numbers.astype(np.int64), positions=positions, cell=np.zeros((3, 3)),
                            pbc=np.zeros(3, dtype=bool), energy=energy, forces=rng.normal(size=(size, 3))))
    return frames


def write_dataset(path: Path, gigabytes: float, seed: int = 0) -> dict:
    """A synthetic data set of about ``gigabytes`` on disk, written chunk by chunk."""
    from tensorfuse.data._io import ReadReport
    from tensorfuse.data._on_disk import FrameWriter

    rng = np.random.default_rng(seed)
    writer = FrameWriter(path)
    report = ReadReport(str(path))
    started = time.perf_counter()
    while path.stat().st_size < gigabytes * 1e9:
        chunk = molecules(rng, 2048)
        writer.append(chunk)
        writer.file.flush()
        report.frames += len(chunk)
        report.atoms += sum(f.num_atoms for f in chunk)
        for z, n in zip(*np.unique(np.concatenate([f.numbers for f in chunk]), return_counts=True)):
            report.elements[int(z)] = report.elements.get(int(z), 0) + int(n)
    report.labels = {"energy": report.frames, "forces": report.frames}
    writer.finish(report, "synthetic molecules (benchmarks/large_data.py)", "eV", 1.0,
                  {"energy": "energy", "forces": "forces", "stress": "stress", "virial": "virial"})
    return {"frames": report.frames, "atoms": report.atoms, "bytes": path.stat().st_size,
            "write_s": time.perf_counter() - started}


def write_extxyz(path: Path, gigabytes_on_disk_as_h5: float, seed: int = 0) -> dict:
    """The same kind of molecules as extxyz text, as many frames as an HDF5 file of that size holds."""
    from tensorfuse.data._io import write_frames

    frames_per_gb = 1e9 / (36 * 49 + 110)  # bytes per frame in the HDF5 layout (36 atoms on average)
    count = int(gigabytes_on_disk_as_h5 * frames_per_gb)
    rng = np.random.default_rng(seed)
    with open(path, "w"):
        pass
    for start in range(0, count, 4096):
        frames = molecules(rng, min(4096, count - start))
        part = path.with_suffix(".part.xyz")
        write_frames(part, frames)
        with open(path, "a") as out, open(part) as text:
            shutil.copyfileobj(text, out)
        part.unlink()
    return {"frames": count, "bytes": path.stat().st_size}


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def train_child(path: str, steps: int, output: str) -> dict:
    """In a fresh process: set up training on ``path`` (every start-up pass), then ``steps`` steps."""
    import torch

    from tensorfuse.data._sampler import EpochBatches
    from tensorfuse.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    data = {"train_file": path, "valid_fraction": 0.001, "max_valid_frames": 200}
    if path.endswith(".xyz"):
        data.update(energy_key="REF_energy", forces_key="REF_forces")
    config = TrainConfig(data=data, model=MODEL, output=output,
                         training={"max_epochs": 1, "batch_atoms": BATCH_ATOMS, "refit_energy_shift": False,
                                   "ema_decay": None, "seed": 0}, overwrite=True)
    baseline = peak_mb()
    started = time.perf_counter()
    trainer = Trainer(config)
    setup_s, setup_peak = time.perf_counter() - started, peak_mb()
    sampler = trainer.runner.sampler
    epoch = sampler.epoch

    def first_steps(generator):  # the benchmark's cut: an epoch of `steps` batches
        batches = epoch(generator)
        return EpochBatches(batches.order, batches.starts[: steps + 1])

    sampler.epoch = first_steps
    started = time.perf_counter()
    trainer.fit()
    return {"frames": len(trainer.datasets["train"]), "baseline_mb": baseline, "setup_s": setup_s,
            "setup_peak_mb": setup_peak, "train_s": time.perf_counter() - started, "peak_mb": peak_mb(),
            "steps": steps}


def run_child(path: Path, steps: int, output: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TENSORFUSE_PROGRESS": "0"}
    process = subprocess.run([sys.executable, __file__, "--child", str(path), "--steps", str(steps), "--output",
                              str(output)], capture_output=True, text=True, env=env)
    if process.returncode != 0:
        raise SystemExit(f"training on {path} failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def table(rows: list[dict], steps: int) -> str:
    lines = [
        f"| data set | on disk (GB) | frames | start-up passes (s) | peak after start-up (MB) | "
        f"peak after {steps} steps (MB) | disk / peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['bytes'] / 1e9:.2f} | {r['frames']:,} | {r['setup_s']:.0f} | "
                     f"{r['setup_peak_mb']:.0f} | {r['peak_mb']:.0f} | {r['bytes'] / 1e6 / r['peak_mb']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--in-memory-gb", type=float, nargs="*", default=[],
                        help="also train in memory from extxyz holding as many frames as an .h5 of this size")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--workdir", default="/tmp/tensorfuse_large_data")
    parser.add_argument("--output", help="markdown file for the table (with the --child run: the run folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_child(args.child, args.steps, args.output)))
        return
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    cases = ([(gb, "data.xyz", write_extxyz, "extxyz, in memory") for gb in args.in_memory_gb]
             + [(gb, "data.h5", write_dataset, ".h5, on disk") for gb in args.sizes_gb])
    for gigabytes, name, write, kind in cases:
        path = workdir / name
        written = write(path, gigabytes)
        result = run_child(path, args.steps, workdir / "run")
        rows.append({**written, **result, "kind": kind})
        print(table(rows, args.steps).splitlines()[-1], flush=True)
        path.unlink()
    shutil.rmtree(workdir / "run", ignore_errors=True)
    text = table(rows, args.steps)
    print(text)
    if args.output:
        Path(args.output).write_text(
            "# Training on data larger than memory\n\n"
            f"`OMP_NUM_THREADS=1 python benchmarks/large_data.py --sizes-gb {' '.join(map(str, args.sizes_gb))}"
            + (f" --in-memory-gb {' '.join(map(str, args.in_memory_gb))}" if args.in_memory_gb else "")
            + f" --steps {args.steps} --output {args.output}`\n\n"
            f"Random molecules of 8-64 atoms; a tiny model ({json.dumps(MODEL)}), batches of up to {BATCH_ATOMS} "
            f"atoms, {args.steps} steps after the start-up passes over the whole file (validation, E0s, force "
            "scale, neighbours); peak resident memory (VmHWM) of the training process, a fresh one per row.\n\n"
            + text + "\n")


if __name__ == "__main__":
    main()
