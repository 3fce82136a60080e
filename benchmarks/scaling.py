"""Cost of the many-body product against hidden l_max and correlation order: tensorfuse's product
bases (symmetric in both bases, latent, reduced, MACE's contraction variant) and MACE itself.

ICTP's claim is that Cartesian products stay cheap where spherical ones do not. Per case (a fresh
process): the time to build the model, its parameter count, the median time of an energy+forces
call on one ethanol molecule (rMD17 frame 0) and the process's peak resident memory (build and
calls together, above the memory after the imports). Every model has 2 layers, 64 channels, edge
harmonics up to max(3, l_max), r_max 5 Å, 8 Bessel functions, radial MLP 64-64-64, float64, elements
H, C, O, Si; only the hidden l_max (L), the correlation order and the product basis change.
The reduced variant keeps ``--level-copies`` copies of each irrep after every product and caps
intermediate degrees at L (``l_internal = L``; the other variants use their default, max(3, L)).

A case that runs longer than ``--timeout`` seconds or above ``--memory-limit`` GB is stopped and
reported as such (MACE at L = 2, correlation >= 4 builds for minutes with tens of GB on this machine,
``../shared/docs/mace-baseline.md``). MACE's rows need ``mace-torch`` (see README, "Benchmarks")::

    python benchmarks/scaling.py [--lmax 1 2 3 4] [--correlations 1 2 3 4 5 6] [--impls ...] [--json F]
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

from model_speed import SPECIES, without_unavailable_mace  # noqa: E402

IMPLEMENTATIONS = ("cartesian-symmetric", "spherical-symmetric", "cartesian-latent", "cartesian-reduced",
                   "spherical-reduced", "cartesian-contraction", "mace")


def _rss_mb(field: str = "VmRSS", pid: str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        match = re.search(rf"{field}:\s+(\d+)", f.read())
    return int(match.group(1)) / 1024 if match else 0.0


def _ethanol():
    from systems import ethanol_frames

    return ethanol_frames(1)[0]


def _build(case: dict, avg: float):
    import torch
    from model_speed import build_mace, build_tensorfuse

    L = case["lmax"]
    if case["impl"] == "mace":
        return build_mace(L, avg, torch.float64, correlation=case["correlation"], max_ell=max(3, L))[0]
    basis, product = case["impl"].split("-")
    mace = {"correlation": case["correlation"], "product_basis": product}
    if product == "latent":
        mace["latent_channels"] = case["latent_channels"]
    if product == "reduced":
        mace.update(level_copies=case["level_copies"], l_internal=L)
    return build_tensorfuse(basis, L, avg, torch.float64, mace=mace, l_max_edge=max(3, L))[0]


def run_case(case: dict) -> dict:
    import torch
    from model_speed import average_neighbors

    from tensorfuse.utils import tune_malloc

    torch.set_num_threads(case["threads"])
    tune_malloc()  # for every implementation alike, as in model_speed.py (fresh page faults cost 3x here)
    atoms = _ethanol()
    avg = average_neighbors([atoms], 5.0)
    base = _rss_mb()
    start = time.perf_counter()
    model = _build(case, avg)
    build_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    if case["impl"] == "mace":
        from mace import data as mace_data
        from mace import tools
        from mace.tools import torch_geometric

        z_table = tools.AtomicNumberTable(list(SPECIES))
        data = mace_data.AtomicData.from_config(mace_data.config_from_atoms(atoms), z_table=z_table, cutoff=5.0)
        batch = torch_geometric.batch.Batch.from_data_list([data]).to_dict()

        def call():
            return model(batch, training=False, compute_force=True)
    else:
        from tensorfuse.data import AtomicGraph

        graph = AtomicGraph.from_atoms(atoms, 5.0, dtype=torch.float64)

        def call():
            return model(graph, forces=True)

    call()
    call()
    times, begin = [], time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - begin < 2.0 and len(times) < 50):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {**case, "build_s": build_s, "params": params, "ms": 1e3 * statistics.median(times),
            "peak_mb": _rss_mb("VmHWM") - base}


def _run_subprocess(case: dict, timeout: float, memory_limit_gb: float) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--case", json.dumps(case)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    start, peak = time.perf_counter(), 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, _rss_mb("VmRSS", str(proc.pid)))
        except (FileNotFoundError, ProcessLookupError):
            pass
        if peak > 1024 * memory_limit_gb:
            proc.kill()
            proc.communicate()
            return {**case, "stopped": f"over {memory_limit_gb:g} GB"}
        if time.perf_counter() - start > timeout:
            proc.kill()
            proc.communicate()
            return {**case, "stopped": f"over {timeout:g} s"}
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        last = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        return {**case, "stopped": f"failed: {last[:120]}"}
    return json.loads(out.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lmaxes = sorted({r["lmax"] for r in rows})
    fig, axes = plt.subplots(2, len(lmaxes), figsize=(4 * len(lmaxes), 7), squeeze=False)
    for col, L in enumerate(lmaxes):
        for impl in IMPLEMENTATIONS:
            done = sorted((r for r in rows if r["lmax"] == L and r["impl"] == impl and "ms" in r),
                          key=lambda r: r["correlation"])
            if not done:
                continue
            nu = [r["correlation"] for r in done]
            axes[0, col].semilogy(nu, [r["ms"] for r in done], "o-", label=impl)
            axes[1, col].semilogy(nu, [r["params"] for r in done], "o-", label=impl)
        axes[0, col].set_title(f"L = {L}")
        axes[1, col].set_xlabel("correlation order")
    axes[0, 0].set_ylabel("energy+forces, ethanol (ms)")
    axes[1, 0].set_ylabel("parameters")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--correlations", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--latent-channels", type=int, default=8, help="latent channels of cartesian-latent")
    parser.add_argument("--level-copies", type=int, default=2, help="copies per irrep and level of *-reduced")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case")
    parser.add_argument("--memory-limit", type=float, default=12.0, help="GB per case")
    parser.add_argument("--json", help="append every case as a JSON line to this file")
    parser.add_argument("--replot", help="only redraw the plot from a --json file")
    parser.add_argument("--plot", default=str(Path(__file__).parent / "results" / "scaling.png"))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.replot:
        plot([json.loads(line) for line in Path(args.replot).read_text().splitlines() if line.strip()],
             Path(args.plot))
        return
    args.impls = without_unavailable_mace(args.impls)
    print(f"# product-basis scaling: ethanol energy+forces, float64, {args.threads} thread(s); "
          f"cases stopped above {args.timeout:g} s or {args.memory_limit:g} GB")
    print("| L | correlation | model | build s | params | ms/call | peak MB |")
    print("|" + "---|" * 7)
    rows, sink = [], open(args.json, "a") if args.json else None
    for L in args.lmax:
        for impl in args.impls:
            stopped = None
            for nu in args.correlations:
                case = dict(impl=impl, lmax=L, correlation=nu, threads=args.threads,
                            latent_channels=args.latent_channels, level_copies=args.level_copies)
                if impl == "cartesian-contraction" and nu > 3:
                    continue  # MACE's contraction variant is built for correlation <= 3
                # a higher order after a stop would only be stopped again: report it without running
                row = {**case, "stopped": f"not run ({stopped})"} if stopped else _run_subprocess(
                    case, args.timeout, args.memory_limit)
                if row.get("stopped", "").startswith("over"):
                    stopped = stopped or row["stopped"]
                rows.append(row)
                if sink:
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                if "ms" in row:
                    print(f"| {L} | {nu} | {impl} | {row['build_s']:.2f} | {row['params']:,} | {row['ms']:.1f} | "
                          f"{row['peak_mb']:.0f} |", flush=True)
                else:
                    print(f"| {L} | {nu} | {impl} | {row['stopped']} | | | |", flush=True)
    if args.plot:
        plot(rows, Path(args.plot))


if __name__ == "__main__":
    main()
