"""Operations per aspirin energy+forces call: the eager model (``torch.profiler`` events of one call)
against the model compiled ahead of time (the calls in the generated ``wrapper.cpp`` of the package
that ``model_speed.py --impls tensorfuse-cartesian-aot`` compiled; run that first).

    python benchmarks/operation_count.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_speed import average_neighbors, build_tensorfuse  # noqa: E402
from systems import SYSTEMS  # noqa: E402


def eager_operations(dtype) -> tuple[int, int]:
    """(top-level, all) ATen and tensorfuse operators of one energy+forces call."""
    from torch.profiler import profile

    from tensorfuse.data import AtomicGraph

    structures = SYSTEMS["aspirin"]()
    model, _ = build_tensorfuse("cartesian", 1, average_neighbors(structures, 5.0), dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    graph = AtomicGraph.from_atoms(structures[0], 5.0, dtype=dtype)
    model(graph, forces=True)
    with profile() as prof:
        model(graph, forces=True)
    ours = ("aten::", "tensorfuse")
    ops = [e for e in prof.events() if e.name.startswith(ours)]
    top = [e for e in ops if e.cpu_parent is None or not e.cpu_parent.name.startswith(ours)]
    return len(top), len(ops)


def compiled_operations(path: Path) -> dict[str, int]:
    with zipfile.ZipFile(path) as archive:
        source = archive.read(next(n for n in archive.namelist() if n.endswith("wrapper.cpp"))).decode()
    run = source[source.index("void AOTInductorModel::run_impl"):]
    return {"generated loops": len(re.findall(r"\n\s+cpp_fused_\w+\(", run)),
            "matrix products": len(re.findall(r"aoti_torch_cpu_(?:mm|bmm|addmm)_out\(", run)),
            "tensorfuse operators": len(re.findall(r"aoti_torch_proxy_executor_call_function\(", run))}


def main() -> None:
    torch.set_num_threads(1)
    for dtype in (torch.float64, torch.float32):
        top, everything = eager_operations(dtype)
        print(f"eager {dtype}: {top} top-level operators ({everything} with the nested ones)")
    for path in sorted((Path(tempfile.gettempdir()) / "tensorfuse_benchmark_aot").glob("cartesian_l1_*_v*.pt2")):
        counts = compiled_operations(path)
        print(f"compiled {path.name}: {sum(counts.values())} calls: {counts}")


if __name__ == "__main__":
    main()
