"""Energy+forces speed and memory of tensorfuse (both bases) and MACE, side by side.

Same hyperparameters for every model: 2 layers, 64 channels, hidden l_max 1 or 2, edge harmonics
up to 3, correlation 3, r_max 5 Å, 8 Bessel functions, radial MLP 64-64-64, elements H, C, O, Si.
Systems: one aspirin (rMD17), a batch of 32 aspirins, a 512-atom Si supercell, a 540-atom water
box. One call = energy and forces (forward + one backward), the neighbour list built outside the
timing. Also one training step on 5 aspirins (energy + force loss, backward through the forces,
Adam step).

Every case runs in a fresh process. Times are medians of ``--repeats`` calls after warm-up, with
``tensorfuse.utils.tune_malloc`` applied to every implementation alike (MACE included). Memory is
measured in a separate process that tracks live memory (glibc maps each allocation above 64 kB on
its own and returns freed memory): the growth of the peak RSS during one call.

MACE (``mace-torch``) must be importable for its rows; install it in a separate environment with
tensorfuse (see README, "Benchmarks"). Usage::

    python benchmarks/model_speed.py [--systems aspirin si_512] [--lmax 1 2] [--dtypes float64]
        [--impls tensorfuse-cartesian tensorfuse-cartesian-compiled mace]
        [--product-bases symmetric contraction fusion-balanced]

``--product-bases`` repeats every tensorfuse row for other parametrizations of the many-body product
(default ``symmetric``): ``contraction`` is MACE's own symmetric contraction, ``fusion-caterpillar``
and ``fusion-balanced`` fusion trees of one density, ``fusion-capped`` balanced ones with internal
degrees capped at 1, ``fusion-distinct`` trees of distinct densities; ``cormorant`` and
``cormorant-fusion`` the Cormorant-style model (2 levels), the latter with a fusion block (distinct
messages) in each level.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from systems import SYSTEMS, aspirin_frames  # noqa: E402

SPECIES = (1, 6, 8, 14)
IMPLEMENTATIONS = ("tensorfuse-cartesian", "tensorfuse-spherical", "mace")
# torch.compile (Potential.compile, dynamic shapes); the training step compiles energy and forces as one graph
COMPILED = ("tensorfuse-cartesian-compiled", "tensorfuse-spherical-compiled")
# compiled ahead of time (tensorfuse export --for lammps, run by CompiledPotential: what
# Calculator("model.pt2") runs); inference only, so no training rows
AHEAD_OF_TIME = ("tensorfuse-cartesian-aot", "tensorfuse-spherical-aot")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024


def _track_live_memory() -> None:
    import ctypes

    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def average_neighbors(structures, r_max: float) -> float:
    from tensorfuse.data import AtomicGraph

    graphs = [AtomicGraph.from_atoms(a, r_max) for a in structures]
    return sum(g.num_edges for g in graphs) / sum(g.num_atoms for g in graphs)


# --- tensorfuse ------------------------------------------------------------------------------
def build_tensorfuse(basis: str, lmax: int, avg: float, dtype, mace: dict | None = None, l_max_edge: int = 3,
                     architecture: dict | None = None):
    """The benchmark's model; ``mace`` (default correlation 3, symmetric) and ``l_max_edge`` for scaling.py;
    ``architecture``: other ModelConfig fields instead of ``mace`` (the Cormorant-style rows)."""
    from tensorfuse import ModelConfig, Statistics, build_model

    config = ModelConfig(
        species=SPECIES, basis=basis, channels=64, l_max=lmax, l_max_edge=l_max_edge,
        **(architecture or {"mace": mace or {"correlation": 3}}),
        num_layers=2,
        r_max=5.0, num_bessel=8, cutoff_p=5, radial_mlp=(64, 64, 64), readout_hidden=16,
        statistics=Statistics(avg_num_neighbors=avg),
    )
    model = build_model(config, dtype=dtype, seed=0)
    return model, sum(p.numel() for p in model.parameters())


def ahead_of_time(model, name: str):
    """The model compiled ahead of time (cached under the temporary folder: about a minute each)."""
    import tempfile

    from tensorfuse.model import CompiledPotential, compile_model
    from tensorfuse.model._compiled import COMPILED_VERSION

    path = Path(tempfile.gettempdir()) / "tensorfuse_benchmark_aot" / f"{name}_v{COMPILED_VERSION}.pt2"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        compile_model(model, path)
    return CompiledPotential(path)


PRODUCT_BASES = ("symmetric", "full", "reduced", "latent", "contraction", "fusion-caterpillar", "fusion-balanced",
                 "fusion-distinct", "fusion-capped", "cormorant", "cormorant-fusion")


def product_basis_config(name: str) -> dict:
    """The model's architecture settings for a ``--product-bases`` name: the MACE-style model's
    ``mace`` section (correlation 3), or the Cormorant-style model (2 levels; ``-fusion``: a fusion
    block with distinct messages in each)."""
    if name.startswith("cormorant"):
        fusion = {"fusion": True, "second_message": "distinct"} if name.endswith("-fusion") else {}
        return {"architecture": "cormorant", "cormorant": fusion}
    if name.startswith("fusion-"):
        kind = name.split("-", 1)[1]
        if kind == "distinct":
            return {"mace": {"correlation": 3, "product_basis": "fusion", "fusion_leaves": "distinct"}}
        if kind == "capped":  # internal degrees capped at 1, balanced trees (uncapped paths run them)
            return {"mace": {"correlation": 3, "product_basis": "fusion", "fusion_leaves": "density",
                             "fusion_shape": "balanced", "l_internal": 1}}
        return {"mace": {"correlation": 3, "product_basis": "fusion", "fusion_leaves": "density",
                         "fusion_shape": kind}}
    return {"mace": {"correlation": 3, "product_basis": name}}


def tensorfuse_case(basis, lmax, structures, dtype, training: bool, compiled: bool = False, aot: bool = False,
                    product_basis: str = "symmetric"):
    import torch

    from tensorfuse.data import AtomicGraph, batch_graphs

    avg = average_neighbors(structures, 5.0)
    model, params = build_tensorfuse(basis, lmax, avg, dtype, architecture=product_basis_config(product_basis))
    if compiled:
        model.compile(dynamic=True)
    if aot:
        suffix = "" if product_basis == "symmetric" else f"_{product_basis}"
        model = ahead_of_time(model, f"{basis}_l{lmax}_{str(dtype).split('.')[-1]}_{avg:.6f}{suffix}")
    graph = batch_graphs([AtomicGraph.from_atoms(a, 5.0, dtype=dtype) for a in structures])
    if not training:
        for p in model.parameters():
            p.requires_grad_(False)

        def call():
            return model(graph, forces=True)

        return call, params, graph.num_edges

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    target_e = torch.zeros(graph.num_graphs, dtype=dtype)
    target_f = torch.zeros(graph.num_atoms, 3, dtype=dtype)

    def step():
        optimizer.zero_grad()
        out = model(graph, forces=True, create_graph=True)
        loss = ((out["energy"] - target_e) ** 2).mean() + ((out["forces"] - target_f) ** 2).mean()
        loss.backward(inputs=trainable)  # as tensorfuse's trainer: the parameters' gradients only
        optimizer.step()
        return loss

    return step, params, graph.num_edges


# --- MACE ------------------------------------------------------------------------------------
def build_mace(lmax: int, avg: float, dtype, correlation: int = 3, max_ell: int = 3):
    """MACE's ScaleShiftMACE with the benchmark's hyperparameters, built as mace_run_train does."""
    import os

    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # e3nn 0.4.4 pickles its constants (as MACE sets)
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    torch.set_default_dtype(dtype)
    hidden = "+".join(f"64x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1))
    model = modules.ScaleShiftMACE(
        r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=max_ell,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2, num_elements=len(SPECIES), hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(SPECIES)), avg_num_neighbors=avg,
        atomic_numbers=list(SPECIES), correlation=correlation, gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64], atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    ).to(dtype)
    return model, sum(p.numel() for p in model.parameters())


def mace_case(lmax, structures, dtype, training: bool):
    import torch
    from mace import data as mace_data
    from mace import tools
    from mace.tools import torch_geometric

    model, params = build_mace(lmax, average_neighbors(structures, 5.0), dtype)
    z_table = tools.AtomicNumberTable(list(SPECIES))
    configs = [mace_data.config_from_atoms(a) for a in structures]
    data_list = [mace_data.AtomicData.from_config(c, z_table=z_table, cutoff=5.0) for c in configs]
    batch = torch_geometric.batch.Batch.from_data_list(data_list).to_dict()
    edges = int(batch["edge_index"].shape[1])
    if not training:
        for p in model.parameters():
            p.requires_grad_(False)

        def call():
            return model(batch, training=False, compute_force=True)

        return call, params, edges

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    n_graphs = len(structures)

    def step():
        optimizer.zero_grad()
        out = model(dict(batch), training=True, compute_force=True)
        loss = (out["energy"] ** 2).sum() / n_graphs + (out["forces"] ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss

    return step, params, edges


def without_unavailable_mace(impls: list[str], module: str = "mace.modules") -> list[str]:
    """``impls`` without ``"mace"`` (and a note) when mace-torch cannot be imported here."""
    if "mace" in impls and subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
        print("# mace-torch is not importable here: its rows are skipped", file=sys.stderr)
        return [i for i in impls if i != "mace"]
    return list(impls)


# --- one case ------------------------------------------------------------------------------
def run_case(case: dict) -> dict:
    import torch

    torch.set_num_threads(case["threads"])
    dtype = {"float32": torch.float32, "float64": torch.float64}[case["dtype"]]
    if case["measure"] == "time":
        from tensorfuse.utils import tune_malloc

        tune_malloc()
    else:
        _track_live_memory()
    training = case["system"] == "train_aspirin_x5"
    structures = aspirin_frames(5, start=100) if training else SYSTEMS[case["system"]]()
    if case["impl"] == "mace":
        fn, params, edges = mace_case(case["lmax"], structures, dtype, training)
    else:
        fn, params, edges = tensorfuse_case(case["impl"].split("-")[1], case["lmax"], structures, dtype, training,
                                            compiled=case["impl"].endswith("-compiled"),
                                            aot=case["impl"].endswith("-aot"),
                                            product_basis=case.get("product_basis", "symmetric"))
    atoms = sum(len(a) for a in structures)
    fn()  # warm-up
    if case["measure"] == "memory":
        _reset_peak()
        base = _status_mb("VmRSS")
        fn()
        return {**case, "peak_mb": _status_mb("VmHWM") - base, "params": params, "edges": edges, "atoms": atoms}
    fn()
    times, budget_start = [], time.perf_counter()
    while len(times) < case["repeats"] or (time.perf_counter() - budget_start < 1.0 and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    return {**case, "ms": ms, "atom_steps_per_s": atoms / (ms / 1e3), "params": params, "edges": edges, "atoms": atoms,
            "calls": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS) + ["train_aspirin_x5"])
    parser.add_argument("--lmax", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS + COMPILED + AHEAD_OF_TIME,
                        help="add the -compiled variants for torch.compile (each case compiles first), the -aot "
                             "ones for the model compiled ahead of time (inference rows only)")
    parser.add_argument("--product-bases", nargs="+", default=["symmetric"], choices=PRODUCT_BASES,
                        help="the tensorfuse rows for each of these many-body products (default symmetric)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts, each case run at each of them side by side (default 1 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--json", help="also write every result as JSON lines to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    args.impls = without_unavailable_mace(args.impls)
    import torch

    print(f"# energy+forces per call (training: one optimizer step); torch {torch.__version__}, "
          f"{' and '.join(map(str, args.threads))} threads; median of >= {args.repeats} calls after warm-up")
    print("| system | atoms | edges | L | dtype | threads | model | params | ms/call | atom-steps/s | peak MB | "
          "time vs MACE | memory vs MACE |")
    print("|" + "---|" * 13)
    sink = open(args.json, "a") if args.json else None
    for system, lmax, dtype, threads in ((s, l, d, t) for s in args.systems for l in args.lmax for d in args.dtypes
                                         for t in args.threads):
        rows = {}
        for impl, product in ((i, p) for i in args.impls for p in (args.product_bases if i != "mace" else [None])):
            if impl.endswith("-aot") and system == "train_aspirin_x5":
                continue  # compiled for inference
            row = {}
            for measure in ("time",) if args.no_memory else ("time", "memory"):
                case = dict(system=system, lmax=lmax, dtype=dtype, impl=impl, measure=measure,
                            repeats=args.repeats, threads=threads)
                if product not in (None, "symmetric"):
                    case["product_basis"] = product
                proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"# {impl} {system} L={lmax} {dtype} {measure} failed: "
                          f"{proc.stderr.strip().splitlines()[-3:]}", file=sys.stderr)
                    continue
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                row.update({k: v for k, v in result.items() if k not in ("measure",)})
                if sink:
                    sink.write(json.dumps(result) + "\n")
                    sink.flush()
            rows[impl if product in (None, "symmetric") else f"{impl} ({product})"] = row
        mace = rows.get("mace", {})
        for impl, r in rows.items():
            if "ms" not in r:
                continue
            speed = f"{mace['ms'] / r['ms']:.1f}x faster" if mace.get("ms") and impl != "mace" else ""
            mem = (f"{r['peak_mb'] / mace['peak_mb']:.2f}x"
                   if mace.get("peak_mb") and r.get("peak_mb") is not None and impl != "mace" else "")
            peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "-"
            print(f"| {system} | {r['atoms']} | {r['edges']} | {lmax} | {dtype} | {threads} | {impl} | "
                  f"{r['params']:,} | "
                  f"{r['ms']:.1f} | {r['atom_steps_per_s']:.0f} | {peak} | {speed} | {mem} |", flush=True)


if __name__ == "__main__":
    main()
