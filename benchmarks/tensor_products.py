"""Channel-wise weighted tensor product: time and peak memory per basis and storage.

The layer multiplies per-edge features ``x1`` (``C`` channels of ``0e + 1o + ... + l_max``) with
the edge harmonics ``x2`` (degrees ``0..l_max``), one weight per edge, channel and path (from a
radial MLP in a model), keeping every path with output degree ``<= l_max`` (even and odd paths).

Executors:

* ``spherical``  — tensorfuse, spherical basis (compact storage, one stacked coupling tensor);
* ``cartesian``  — tensorfuse, irreducible Cartesian basis, same storage and engine;
* ``cart-dense`` — Cartesian tensors stored densely (``3**l`` entries, as ICTP does), one dense
  contraction + STF projection per path (``tensorfuse.o3.dense_product``);
* ``e3nn``       — ``e3nn.o3.TensorProduct`` with the same paths ("uvu", external weights),
  when e3nn is installed.

Every case runs in a fresh process. Times are medians after a warm-up, with
``tensorfuse.utils.tune_malloc`` applied to all executors alike (``--no-tune-malloc`` to compare).
Memory is measured in a separate process in which glibc maps every allocation above 64 kB on its
own and returns freed memory at once, so that the resident size follows the live tensors: the
growth of the peak RSS (``VmHWM``, reset just before) during one call over the RSS before it.
Usage::

    python benchmarks/tensor_products.py [--lmax 1 2 3 4] [--edges 10000] [--channels 64]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time

EXECUTORS = ("spherical", "cartesian", "cart-dense", "e3nn")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024


def _track_live_memory() -> None:
    """Make glibc map every allocation above 64 kB separately and return freed memory at once, so
    that the resident size follows the live tensors (its default threshold adapts upwards and
    then keeps freed blocks, which would hide the peak of a repeated call)."""
    import ctypes

    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD (fixed: disables the adaptive threshold)
    mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: resets VmHWM to the current RSS
        f.write("5")


def build(executor: str, lmax: int, channels: int, edges: int, dtype):
    """Returns (callable(x1, x2, w) -> output, inputs, number of paths)."""
    import torch

    from tensorfuse import o3
    from tensorfuse.nn import ChannelwiseTensorProduct

    torch.set_default_dtype(dtype)
    irreps = o3.Irreps.spherical_harmonics(lmax)
    spec = o3.TensorProductSpec(irreps, irreps, lmax)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(edges, channels, spec.num_paths, generator=g)
    vectors = torch.randn(edges, 3, generator=g)

    if executor in ("spherical", "cartesian"):
        layer = ChannelwiseTensorProduct(irreps, irreps, lmax, channels=channels, basis=executor)
        x1 = torch.randn(edges, channels, irreps.dim, generator=g)
        x2 = o3.get_basis(executor).harmonics(list(range(lmax + 1)), vectors)
        return layer, (x1, x2, w), spec.num_paths

    if executor == "cart-dense":
        sizes = [3**l for l in range(lmax + 1)]
        offsets = [sum(sizes[:l]) for l in range(lmax + 2)]
        x1 = torch.cat(
            [o3.to_dense(torch.randn(edges, channels, 2 * l + 1, generator=g), l).reshape(edges, channels, -1)
             for l in range(lmax + 1)], dim=-1)
        harm = o3.cartesian_harmonics(list(range(lmax + 1)), vectors)
        x2 = torch.cat([o3.to_dense(harm[:, l * l:(l + 1) ** 2], l).reshape(edges, -1) for l in range(lmax + 1)], -1)
        degrees = spec.path_degrees()

        def dense_layer(a, b, weights):
            outs = []
            for p, (l1, l2, l3) in enumerate(degrees):
                t1 = a[:, :, offsets[l1]:offsets[l1 + 1]].reshape((edges, channels) + (3,) * l1)
                t2 = b[:, offsets[l2]:offsets[l2 + 1]].reshape((edges, 1) + (3,) * l2)
                y = o3.dense_product(t1, l1, t2, l2, l3).reshape(edges, channels, -1)
                outs.append(y * weights[:, :, p:p + 1])
            return torch.cat(outs, dim=-1)

        return dense_layer, (x1, x2, w), spec.num_paths

    if executor == "e3nn":
        from e3nn import o3 as e3o3

        in1 = e3o3.Irreps([(channels, (ir.l, ir.p)) for _, ir in irreps])
        out = e3o3.Irreps([(channels, (p.ir_out.l, p.ir_out.p)) for p in spec.paths])
        instructions = [(p.i1, p.i2, k, "uvu", True) for k, p in enumerate(spec.paths)]
        tp = e3o3.TensorProduct(in1, e3o3.Irreps(str(irreps)), out, instructions,
                                shared_weights=False, internal_weights=False)
        x1 = torch.randn(edges, in1.dim, generator=g)
        x2 = e3o3.spherical_harmonics(list(range(lmax + 1)), vectors, True, "component")
        return tp, (x1, x2, w.reshape(edges, -1)), spec.num_paths

    raise ValueError(f"unknown executor {executor!r}")


def run_case(case: dict) -> dict:
    import torch

    if case["measure"] == "time" and case.get("tune_malloc", True):
        from tensorfuse.utils import tune_malloc

        tune_malloc()

    dtype = {"float32": torch.float32, "float64": torch.float64}[case["dtype"]]
    fn, inputs, num_paths = build(case["executor"], case["lmax"], case["channels"], case["edges"], dtype)
    backward = case["mode"] == "forward+backward"
    if backward:
        inputs = tuple(t.detach().requires_grad_(True) for t in inputs)

    def step():
        out = fn(*inputs)
        if backward:
            torch.autograd.grad(out.sum(), inputs)
        return out

    if case["measure"] == "memory":
        _track_live_memory()
        step()  # warm-up (lazy initialisation)
        _reset_peak_rss()
        base = _status_mb("VmRSS")
        step()
        return {**case, "paths": num_paths, "peak_mb": _status_mb("VmHWM") - base}
    step()  # warm-up (codegen, caches)
    times = []
    for _ in range(case["repeats"]):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {**case, "paths": num_paths, "ms": 1e3 * statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--edges", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--executors", nargs="+", default=list(EXECUTORS), choices=EXECUTORS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-tune-malloc", action="store_true", help="keep glibc's default allocator settings")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return

    try:
        import e3nn  # noqa: F401
    except ImportError:
        if "e3nn" in args.executors:
            print("e3nn is not installed: its column is skipped", file=sys.stderr)
            args.executors = [e for e in args.executors if e != "e3nn"]

    import torch

    print(f"# channel-wise weighted tensor product: {args.channels} channels, {args.edges} edges, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats}")
    header = "| l_max | paths | dtype | executor | forward ms | fwd+bwd ms | peak MB fwd | peak MB fwd+bwd |"
    print(header)
    print("|" + "---|" * 8)
    for lmax in args.lmax:
        for dtype in args.dtypes:
            for executor in args.executors:
                row = {}
                for mode in ("forward", "forward+backward"):
                    for measure in ("time", "memory"):
                        case = dict(executor=executor, lmax=lmax, dtype=dtype, mode=mode, measure=measure,
                                    edges=args.edges, channels=args.channels, repeats=args.repeats,
                                    tune_malloc=not args.no_tune_malloc)
                        proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                                              capture_output=True, text=True)
                        if proc.returncode != 0:
                            print(f"# {executor} l_max={lmax} {dtype} {mode} {measure} failed: "
                                  f"{proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                            continue
                        row[(mode, measure)] = json.loads(proc.stdout.strip().splitlines()[-1])
                paths = next(iter(row.values()), {}).get("paths", "?")

                def cell(mode, measure, key):
                    r = row.get((mode, measure))
                    return f"{r[key]:.1f}" if r else "failed"

                print(f"| {lmax} | {paths} | {dtype} | {executor} | {cell('forward', 'time', 'ms')} | "
                      f"{cell('forward+backward', 'time', 'ms')} | {cell('forward', 'memory', 'peak_mb')} | "
                      f"{cell('forward+backward', 'memory', 'peak_mb')} |", flush=True)


if __name__ == "__main__":
    main()
