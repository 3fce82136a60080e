"""The fused CPU kernels against the tensor paths they replace, side by side in one process.

Same model as ``model_speed.py``; each call is energy+forces. For every case the modules are
switched between the kernels and the tensor paths (``module.fused``) call by call, so both see the
same machine state; reported are the best of ``--repeats`` calls each and the largest force
difference. Also the product basis alone (576 atoms x 64 channels, forward + dA), and a training
step (5 aspirins, loss on energies and forces: the kernels' second derivatives; the largest
difference of a parameter gradient relative to its largest entry).

    python benchmarks/kernels.py [--systems aspirin ethanol_x64] [--lmax 1 2] [--dtypes float64 float32] [--no-training]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from model_speed import average_neighbors, build_tensorfuse  # noqa: E402
from systems import SYSTEMS, aspirin_frames  # noqa: E402

from tensorfuse.data import AtomicGraph, batch_graphs  # noqa: E402
from tensorfuse.nn import ChannelwiseTensorProduct  # noqa: E402
from tensorfuse.nn._product_paths import ProductPaths  # noqa: E402


def best_of(call, switch, repeats: int) -> dict[bool, float]:
    best = {True: float("inf"), False: float("inf")}
    for fused in (True, False):
        switch(fused)
        call()  # warm-up (builds the kernel once)
    for _ in range(repeats):
        for fused in (True, False):
            switch(fused)
            start = time.perf_counter()
            call()
            best[fused] = min(best[fused], time.perf_counter() - start)
    return best


def model_case(system: str, lmax: int, dtype, repeats: int) -> str:
    structures = SYSTEMS[system]()
    model, _ = build_tensorfuse("cartesian", lmax, average_neighbors(structures, 5.0), dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    graph = batch_graphs([AtomicGraph.from_atoms(a, 5.0, dtype=dtype) for a in structures])
    modules = [m for m in model.modules() if isinstance(m, (ProductPaths, ChannelwiseTensorProduct))]

    def switch(fused):
        for m in modules:
            m.fused = fused

    forces = {}
    for fused in (True, False):
        switch(fused)
        forces[fused] = model(graph, forces=True)["forces"]
    best = best_of(lambda: model(graph, forces=True), switch, repeats)
    diff = float((forces[True] - forces[False]).abs().max())
    return (f"| {system} | {lmax} | {str(dtype).replace('torch.', '')} | {best[False] * 1e3:.1f} | "
            f"{best[True] * 1e3:.1f} | {best[False] / best[True]:.2f}x | {diff:.1e} |")


def training_case(lmax: int, dtype, repeats: int) -> str:
    structures = aspirin_frames(5, start=100)  # as model_speed.py
    model, _ = build_tensorfuse("cartesian", lmax, average_neighbors(structures, 5.0), dtype)
    graph = batch_graphs([AtomicGraph.from_atoms(a, 5.0, dtype=dtype) for a in structures])
    modules = [m for m in model.modules() if isinstance(m, (ProductPaths, ChannelwiseTensorProduct))]
    params = [p for p in model.parameters() if p.requires_grad]

    def switch(fused):
        for m in modules:
            m.fused = fused

    def step():
        out = model(graph, forces=True, create_graph=True)
        loss = (out["energy"] ** 2).mean() + (out["forces"] ** 2).mean()
        return torch.autograd.grad(loss, params)

    grads = {}
    for fused in (True, False):
        switch(fused)
        grads[fused] = step()
    best = best_of(step, switch, repeats)
    diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) for a, b in zip(grads[True], grads[False]))
    return (f"| training step, 5 aspirins | {lmax} | {str(dtype).replace('torch.', '')} | {best[False] * 1e3:.1f} | "
            f"{best[True] * 1e3:.1f} | {best[False] / best[True]:.2f}x | {diff:.1e} (gradients, relative) |")


def product_basis_case(lmax: int, dtype, repeats: int) -> str:
    hidden = "+".join(f"1x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1))
    pb = ProductBasis("1x0e+1x1o+1x2e+1x3o", hidden, 64, 3, 4, basis="cartesian", dtype=dtype)
    for p in pb.parameters():
        p.requires_grad_(False)
    A = torch.randn(576, 64, 16, dtype=dtype, requires_grad=True)
    species = torch.randint(0, 4, (576,), generator=torch.Generator().manual_seed(0))
    best = best_of(lambda: torch.autograd.grad(pb(A, species).sum(), A), lambda f: setattr(pb, "fused", f), repeats)
    return (f"| product basis only (576 x 64) | {lmax} | {str(dtype).replace('torch.', '')} | "
            f"{best[False] * 1e3:.1f} | {best[True] * 1e3:.1f} | {best[False] / best[True]:.2f}x | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["aspirin", "ethanol_x64"])
    parser.add_argument("--lmax", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-training", action="store_true", help="skip the training-step rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# energy+forces, tensor paths vs fused CPU kernels; torch {torch.__version__}, {args.threads} threads, "
          f"best of {args.repeats}")
    print("| case | L | dtype | tensor paths (ms) | kernels (ms) | speed-up | max \\|ΔF\\| (eV/Å) |")
    print("|---|---|---|---|---|---|---|")
    for lmax in args.lmax:
        for dtype in args.dtypes:
            print(product_basis_case(lmax, getattr(torch, dtype), args.repeats), flush=True)
    for system in args.systems:
        for lmax in args.lmax:
            for dtype in args.dtypes:
                print(model_case(system, lmax, getattr(torch, dtype), args.repeats), flush=True)
    if not args.no_training:
        for lmax in args.lmax:
            for dtype in args.dtypes:
                print(training_case(lmax, getattr(torch, dtype), args.repeats), flush=True)


if __name__ == "__main__":
    main()
