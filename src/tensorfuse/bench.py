"""Speed and memory of a trained model on the user's own structure (``tensorfuse bench``).

Each dtype is measured in a fresh Python process, so that one measurement's memory (kept by the
allocator, see :func:`tensorfuse.utils.tune_malloc`) cannot hide the next one's: the model is loaded
in that dtype, the peak memory is the growth of the process's peak resident size during the first
energy+forces call (its working set; one-time caches of the fused kernels included), and the time
is the median of ``repeats`` calls after two warm-up calls, on ``threads`` CPU threads.

    from tensorfuse.bench import benchmark
    for row in benchmark("model.pt", atoms): print(row)
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class BenchResult:
    """One dtype's measurement: milliseconds per energy+forces call, atom-steps per second (atoms
    divided by the seconds per call, as MD reports throughput) and peak memory in MB (``None``
    where ``/proc`` cannot tell)."""

    dtype: str
    atoms: int
    edges: int
    ms_per_call: float
    atom_steps_per_s: float
    peak_mb: float | None
    threads: int


MAX_REPEATS = 10_000


def benchmark(model_path, atoms, dtypes=DTYPES, repeats: int = 20, threads: int = 1,
              device: str = "cpu") -> list[BenchResult]:
    """Measure ``model_path`` on ``atoms`` (ASE) in each dtype, one fresh process per dtype."""
    from tensorfuse.model._serialization import load_model

    from tensorfuse.utils._device import resolve_device

    if repeats < 1 or threads < 1:
        raise ValueError(f"repeats and threads must be >= 1, got {repeats} and {threads}")
    if repeats > MAX_REPEATS:
        raise ValueError(f"repeats={repeats} is more than {MAX_REPEATS:,}: a median of that many calls says nothing "
                         "more and could run for days")
    resolve_device(device)  # a one-line error here, not an assertion inside the child process
    unknown = sorted(set(dtypes) - set(DTYPES))
    if unknown:
        raise ValueError(f"dtypes must be among {list(DTYPES)}, got {unknown}")
    if Path(model_path).suffix == ".pt2":
        raise ValueError(f"{model_path}: bench takes a model file (.pt); an exported program has one fixed dtype")
    model = load_model(model_path)  # a clear error for a missing or foreign file, here rather than in a child
    species = set(getattr(model.config, "species", ()))
    missing = sorted({int(z) for z in atoms.numbers} - species) if species else []
    if missing:
        raise ValueError(f"element(s) with atomic number {missing} are not in the model's species {sorted(species)}")
    structure = {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
                 "cell": atoms.cell.array.tolist(), "pbc": atoms.pbc.tolist()}
    results = []
    for dtype in dtypes:
        case = {"model": str(Path(model_path).resolve()), "structure": structure, "dtype": dtype,
                "repeats": repeats, "threads": threads, "device": device}
        child = subprocess.run([sys.executable, "-c", "import sys; from tensorfuse.bench import _child; _child()"],
                               input=json.dumps(case), capture_output=True, text=True)
        lines = child.stdout.strip().splitlines()
        if child.returncode != 0 or not lines:
            last = (child.stderr.strip().splitlines() or ["no output"])[-1]
            raise ValueError(f"the {dtype} measurement failed: {last}")
        results.append(BenchResult(**json.loads(lines[-1])))
    return results


def format_results(results: list[BenchResult], label: str) -> str:
    lines = [f"# {label}: energy+forces, {results[0].atoms} atoms, {results[0].edges} edges, "
             f"{results[0].threads} thread(s)",
             "| dtype | ms/call | atom-steps/s | peak MB |", "|---|---|---|---|"]
    for r in results:
        peak = f"{r.peak_mb:.0f}" if r.peak_mb is not None else "-"
        lines.append(f"| {r.dtype} | {r.ms_per_call:.2f} | {r.atom_steps_per_s:,.0f} | {peak} |")
    return "\n".join(lines)


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024
    except (OSError, AttributeError):
        return None


def _child() -> None:
    """Run one measurement (a JSON case on stdin) and print its result as one JSON line."""
    import numpy as np
    import torch
    from ase import Atoms

    from tensorfuse.data import AtomicGraph
    from tensorfuse.model._serialization import load_model
    from tensorfuse.utils import tune_malloc

    case = json.loads(sys.stdin.read())
    torch.set_num_threads(case["threads"])
    tune_malloc()
    dtype = getattr(torch, case["dtype"])
    s = case["structure"]
    atoms = Atoms(numbers=s["numbers"], positions=np.array(s["positions"]), cell=np.array(s["cell"]), pbc=s["pbc"])
    model = load_model(case["model"], device=case["device"], dtype=dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    graph = AtomicGraph.from_atoms(atoms, model.r_max, dtype=dtype).to(case["device"])
    try:  # the growth of the peak resident size during the first call
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_mb("VmRSS")
    except OSError:
        base = None
    model(graph, forces=True)
    peak = _status_mb("VmHWM")
    peak_mb = peak - base if base is not None and peak is not None else None
    model(graph, forces=True)

    def sync():
        if case["device"].startswith("cuda"):
            torch.cuda.synchronize()

    times = []
    for _ in range(case["repeats"]):
        sync()
        start = time.perf_counter()
        model(graph, forces=True)
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(json.dumps(asdict(BenchResult(case["dtype"], len(atoms), graph.num_edges, 1e3 * seconds,
                                        len(atoms) / seconds, peak_mb, case["threads"]))))
