"""Surface hopping, validated and measured: exact quantum dynamics of Tully's models, learned against
analytic surfaces of a real molecule, photodynamics of ethylene on the CASSCF-trained model, speed.

    python benchmarks/namd.py tully [--trajectories 500]             # FSSH, LZ, FSSH-BA, mudslide vs exact
    python benchmarks/namd.py speed --model MODEL.pt --structure X.xyz  # steps/s for 1, 10, 100 trajectories
    python benchmarks/namd.py ethylene --model MODEL.pt               # S1 lifetime, twist at the hops
    python benchmarks/namd.py methylamine train|run ...              # chempotpy's CH3NH2: analytic vs learned
    python benchmarks/namd.py table                                  # benchmarks/results/namd.md

Each section writes ``benchmarks/results/namd_<section>.json`` (and plots); ``table`` prints them
as the markdown in ``benchmarks/results/namd.md``. One thread per process (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MASS = 2000.0


# -- Tully's models: exact wave packets against surface hopping ---------------------------------------
METHODS = {"fssh": ("fssh", {}), "fssh-edc": ("fssh", {"decoherence": 0.1}), "lz": ("lz", {}),
           "fssh-ba": ("fssh-ba", {})}


def scatter(model, k: float, method: str, trajectories: int, seed: int = 0, **options) -> tuple[float, float]:
    """Upper-state transmission and total reflection, from x = -10 on the lower state (as the tests)."""
    from tensorfuse.namd import hopping_scattering

    result, _ = hopping_scattering(model, k, method, trajectories, seed, MASS, **options)
    return float(result.transmitted[1]), float(result.reflected.sum())


def mudslide_scatter(name: str, k: float, trajectories: int) -> tuple[float, float] | None:
    try:
        import mudslide
        from mudslide.models import TullyDualAvoidedCrossing, TullySimpleAvoidedCrossing
    except ImportError:
        return None
    model = {"tully1": TullySimpleAvoidedCrossing, "tully2": TullyDualAvoidedCrossing}[name]()
    v0 = k / MASS
    upper = reflected = 0
    for seed in range(trajectories):
        trace = mudslide.SurfaceHoppingMD(model, np.array([-10.0]), np.array([v0]), 0, dt=20.0 / (v0 * 1000),
                                          bounds=[[-10.0], [10.0]], seed_sequence=seed, tracer="memory",
                                          trace_every=10**6, max_steps=10**7).simulate()
        last = trace.data[-1]
        transmitted = last["position"][0] > 0
        upper += transmitted and last["active"] == 1
        reflected += not transmitted
    return upper / trajectories, reflected / trajectories


def tully(args) -> None:
    from tensorfuse.namd import (
        TullyDualAvoidedCrossing,
        TullySimpleAvoidedCrossing,
        wave_packet_scattering,
    )

    rows = []
    earlier = {}
    if args.merge and (RESULTS / "namd_tully.json").exists():  # add columns to an earlier run's rows
        old = json.loads((RESULTS / "namd_tully.json").read_text())
        earlier = {(r["model"], r["k"]): r for r in old["rows"]}
    for name, factory in (("tully1", TullySimpleAvoidedCrossing), ("tully2", TullyDualAvoidedCrossing)):
        for k in (10.0, 15.0, 25.0):
            row = earlier.get((name, k), {"model": name, "k": k})
            if "exact_upper" not in row:
                exact = wave_packet_scattering(factory(), k)
                row.update(exact_upper=float(exact.transmitted[1]), exact_reflected=float(exact.reflected.sum()))
            for method in args.methods:
                engine_method, options = METHODS[method]
                start = time.perf_counter()
                runs = [scatter(factory(), k, engine_method, args.trajectories, seed=seed, **options)
                        for seed in args.seeds]
                row[f"{method}_upper_seeds"] = [upper for upper, _ in runs]
                row[f"{method}_upper"] = float(np.mean(row[f"{method}_upper_seeds"]))
                row[f"{method}_reflected"] = float(np.mean([reflected for _, reflected in runs]))
                row[f"{method}_seconds"] = (time.perf_counter() - start) / len(args.seeds)
            if args.mudslide:
                start = time.perf_counter()
                result = mudslide_scatter(name, k, args.mudslide)
                if result:
                    row["mudslide_upper"], row["mudslide_reflected"] = result
                    row["mudslide_seconds"] = time.perf_counter() - start
            print(json.dumps(row), flush=True)
            rows.append(row)
    mudslide_count = args.mudslide or (old.get("mudslide_trajectories", 0) if earlier else 0)
    save("tully", {"trajectories": args.trajectories, "seeds": args.seeds, "mudslide_trajectories": mudslide_count,
                   "rows": rows})


# -- speed: one batched model call per step for the whole ensemble ------------------------------------
def speed(args) -> None:
    from ase.io import read

    from tensorfuse.calculator import _as_model
    from tensorfuse.namd import BOHR, FS, ModelSurface, SurfaceHopping

    from tensorfuse.model import Committee

    model = _as_model(args.model, "cpu", torch.float64)
    atoms = read(args.structure)
    x0 = torch.tensor(atoms.positions.reshape(-1) / BOHR)
    rows = []
    cases = [(c, b, 1) for c in args.counts for b in (True, False)]
    cases += [(c, False, k) for c in args.counts for k in args.committee if k > 1]
    for count, batched, members in cases:
        member_models = [model] + [_as_model(args.model, "cpu", torch.float64) for _ in range(members - 1)]
        surface = ModelSurface(Committee(member_models) if members > 1 else model, atoms.numbers,
                               batched_derivatives=batched)
        generator = torch.Generator().manual_seed(0)
        x = x0 + 0.02 * torch.randn(count, len(x0), generator=generator, dtype=torch.float64)
        v = (9.5e-4 / surface.masses).sqrt() * torch.randn(count, len(x0), generator=generator, dtype=torch.float64)
        method = "fssh" if surface.has_couplings else "lz"
        engine = SurfaceHopping(surface, surface.masses, method=method, dt=0.5 * FS, seed=0)
        engine.run(x, v, 1, 5)  # warm-up
        surface.reset()
        start = time.perf_counter()
        engine.run(x, v, 1, args.steps, record_every=10)
        elapsed = time.perf_counter() - start
        calls = []
        for _ in range(5):
            t0 = time.perf_counter()
            surface(x)
            calls.append(time.perf_counter() - t0)
        rows.append({"trajectories": count, "batched_derivatives": batched, "committee": members,
                     "steps_per_second": args.steps / elapsed,
                     "trajectory_steps_per_second": count * args.steps / elapsed,
                     "model_call_ms": 1e3 * float(np.median(calls)), "step_ms": 1e3 * elapsed / args.steps})
        print(json.dumps(rows[-1]), flush=True)
    save(f"speed_{args.name}", {"model": str(args.model), "structure": str(args.structure), "atoms": len(atoms),
                                "states": model.config.num_states, "couplings": model.config.couplings,
                                "steps": args.steps, "threads": torch.get_num_threads(), "rows": rows})


# -- ethylene: the model trained on SA-CASSCF(2,2) S0/S1 ------------------------------------------------
TWIST = "twisted: dihedral 2 0 1 4 > 90"  # H2-C0-C1-H4: 0° planar, 90° perpendicular; > 90°: cis/trans swapped


def ethylene(args) -> None:
    from ase import Atoms

    from tensorfuse.namd import run_namd

    sys.path.insert(0, str(HERE.parent / "scripts"))
    from ethylene_casscf import planar_ethylene

    atoms = Atoms("C2H4", positions=planar_ethylene())
    out = {}
    for method in args.methods:
        if not args.replot:
            run_namd(args.model, atoms, initial_state=1, method=method, trajectories=args.trajectories,
                     steps=args.steps, timestep=0.5, temperature=0.0, seed=0, output=args.output / method,
                     products=(TWIST,), overwrite=True, progress=False)
        out[method] = run_folder_summary(args.output / method)
        print(method, json.dumps({k: v for k, v in out[method].items()
                                  if k not in ("twist_at_s1_s0_hops", "times_fs", "fraction_S1")}), flush=True)
    save("ethylene", {"model": str(args.model), **out})
    plot_ethylene(out)


def run_folder_summary(folder: Path) -> dict:
    """What the note reports of a ``tensorfuse namd`` run, read from its files: the summary, the S1
    fraction against time, and the twist at every accepted S1 -> S0 hop."""
    import csv

    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "populations.csv") as f:
        rows = list(csv.DictReader(f))
    with open(folder / "hops.csv") as f:
        twists = [float(h["twisted_dihedral"]) for h in csv.DictReader(f)
                  if h["accepted"] == "1" and h["from"] == "S1" and h["to"] == "S0"]
    keep = ("trajectories", "steps", "timestep_fs", "final_fractions", "lifetime", "yields", "hops_accepted",
            "hops_frustrated", "stopped", "max_energy_change_ev", "steps_per_second")
    final = summary["final_fractions"]
    return {**{k: summary[k] for k in keep}, "stopped": len(summary["stopped"]), "final_fractions": list(final.values()),
            "times_fs": [float(r["time_fs"]) for r in rows], "fraction_S1": [float(r["fraction_S1"]) for r in rows],
            "twist_at_s1_s0_hops": twists}


def plot_ethylene(out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method, row in out.items():
        left.plot(row["times_fs"], row["fraction_S1"], label=f"{method.upper()}")
        if row["twist_at_s1_s0_hops"]:
            right.hist(row["twist_at_s1_s0_hops"], bins=18, range=(0, 180), alpha=0.5, label=method.upper())
    left.set_xlabel("time (fs)")
    left.set_ylabel("fraction on S1")
    left.legend()
    right.set_xlabel("H-C-C-H dihedral at the S1 -> S0 hops (degrees)")
    right.set_ylabel("hops")
    right.legend()
    fig.suptitle("Ethylene on the SA-CASSCF(2,2)-trained model: 0 K Wigner start on S1")
    fig.tight_layout()
    fig.savefig(RESULTS / "namd_ethylene.png", dpi=110)


# -- methylamine: chempotpy's analytic CH3NH2 surfaces against a model trained on their labels ----------
DATA = HERE / "data" / "methylamine_aprp.xyz"
DISSOCIATED = "dissociated: distance 0 2 > 2.5"  # H1-N3 (chempotpy's order H1 H2 N3 C4 H5 H6 H7)
# The analytic surface lets only H1 dissociate (its fit breaks the symmetry of the two amine H); a
# learned model is invariant under exchanging them, so its N-H dissociation is either amine H's
DISSOCIATED_H2 = "dissociated: distance 1 2 > 2.5"
METHYLAMINE_MODEL = {"l_max": 1, "l_max_edge": 2, "num_layers": 2, "r_max": 5.0, "num_bessel": 8,
                     "radial_mlp": [32, 32], "basis": "cartesian", "channels": 32, "couplings": "vector"}


HOPS_DATA = HERE / "data" / "methylamine_aprp_hops.xyz"  # frames where hops happen (``methylamine_chempotpy.py hops``)


def methylamine_train(args) -> None:
    """Split each labelled file once (15 % test, seed 0) and train a two-state model with couplings."""
    from ase.io import read, write

    from tensorfuse import TrainConfig, train

    work = args.work
    train_frames, test_frames = [], []
    for path in [DATA] + args.extra_data:
        frames = read(path, ":")
        order = np.random.default_rng(0).permutation(len(frames))
        test = int(0.15 * len(frames))
        test_frames += [frames[i] for i in order[:test]]
        train_frames += [frames[i] for i in order[test:]]
    data = work / f"data_{args.name}"  # beside the run folder, which training may clear
    data.mkdir(parents=True, exist_ok=True)
    write(data / "test.xyz", test_frames)
    write(data / "train.xyz", train_frames)
    model = {**METHYLAMINE_MODEL, "channels": args.channels, "l_max": args.l_max}
    start = time.perf_counter()
    result = train(TrainConfig(
        data={"train_file": str(data / "train.xyz"), "test_file": str(data / "test.xyz"),
              "valid_fraction": 0.1, "states": ("S0", "S1")},
        model=model,
        training={"max_epochs": 100000, "time_budget": args.budget, "batch_size": 5, "lr": 0.01,
                  "energy_weight": args.energy_weight, "forces_weight": 100.0, "couplings_weight": 10.0,
                  "ema_decay": 0.99, "dtype": "float64", "compile": args.compile},
        output=str(work / args.name), overwrite=True))
    summary = {"data": [str(p) for p in [DATA] + args.extra_data], "model": model, "epochs": len(result.history),
               "minutes": (time.perf_counter() - start) / 60,
               "parameters": sum(p.numel() for p in result.model.parameters()), "test": result.metrics["test"]}
    (work / args.name / "result.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def methylamine_run(args) -> None:
    """The same initial conditions (0 K Wigner of the analytic S0 minimum) and seeds on the analytic
    and on the learned surfaces, FSSH and LZ; S1 lifetime and N-H dissociation yield."""
    from _chempotpy_surface import ChempotpySurface
    from ase.io import read

    from tensorfuse.calculator import _as_model
    from tensorfuse.namd import (
        BOHR,
        FS,
        Criterion,
        ModelSurface,
        SurfaceHopping,
        fit_lifetime,
        hessian,
        normal_modes,
        wigner_sample,
    )
    from tensorfuse.namd._analysis import state_fractions

    minimum = read(HERE / "data" / "methylamine_minimum.xyz")
    x0 = torch.tensor(minimum.positions.reshape(-1) / BOHR)
    criterion, criterion_h2 = Criterion.parse(DISSOCIATED), Criterion.parse(DISSOCIATED_H2)
    analytic = ChempotpySurface()  # its Hessian gives the initial conditions of both surfaces
    surfaces = {"analytic": analytic} if "analytic" in args.surfaces else {}
    if "learned" in args.surfaces:
        model = _as_model(args.model, "cpu", torch.float64)
        surfaces["learned"] = ModelSurface(model, minimum.numbers, batched_derivatives=False)  # faster at 100s
    masses = analytic.masses
    modes = normal_modes(x0, masses, hessian(analytic, x0))
    x, v = wigner_sample(modes, args.trajectories, 0.0, torch.Generator().manual_seed(args.seed))
    n = len(minimum)

    def stop(point, x):
        positions = (x * BOHR).reshape(len(x), n, 3)
        close = (torch.cdist(positions, positions) + 1e9 * torch.eye(n)).flatten(1).min(1).values < 0.6
        return close | ~torch.isfinite(point.energies).all(1)

    saved = RESULTS / "namd_methylamine.json"
    rows = json.loads(saved.read_text())["rows"] if args.merge and saved.exists() else {}
    for method in args.methods:
        for name, surface in surfaces.items():
            surface.reset()
            engine = SurfaceHopping(surface, masses, method=method, dt=args.timestep * FS, seed=args.seed)
            start = time.perf_counter()
            ensemble = engine.run(x, v, 1, args.steps, record_every=4, stop=stop)
            seconds = time.perf_counter() - start
            times = ensemble.times.numpy() / FS
            fractions, _ = state_fractions(ensemble.active.numpy(), 2)
            final = ensemble.positions[-1].numpy().reshape(args.trajectories, n, 3) * BOHR
            stopped = ensemble.stopped.numpy() >= 0
            dissociated, dissociated_h2 = criterion.holds(final), criterion_h2.holds(final)
            hops = [h.position.numpy().reshape(n, 3) * BOHR for h in ensemble.hops if h.accepted and h.source == 1]
            hop_distances = [float(criterion.measure(x)) for x in hops]
            hop_longer_nh = [float(max(criterion.measure(x), criterion_h2.measure(x))) for x in hops]
            change = (ensemble.total_energy[:, ~stopped] - ensemble.total_energy[0, ~stopped]).abs() * 27.211386245988
            lifetime = fit_lifetime(times, fractions[:, 1])
            rows[f"{name}-{method}"] = {
                "surface": name, "method": method, "seconds": seconds, "steps_per_second": args.steps / seconds,
                "times_fs": times.tolist(), "fraction_S1": fractions[:, 1].tolist(),
                "lifetime": lifetime and vars(lifetime), "yield": float(dissociated.mean()),
                "yield_h2": float(dissociated_h2.mean()), "yield_either_h": float((dissociated | dissociated_h2).mean()),
                "yield_finished": float(dissociated[~stopped].mean()), "stopped": int(stopped.sum()),
                "hops_accepted": sum(h.accepted for h in ensemble.hops),
                "hops_frustrated": sum(not h.accepted for h in ensemble.hops),
                "nh_at_s1_s0_hops": hop_distances, "longer_nh_at_s1_s0_hops": hop_longer_nh,
                "max_energy_change_ev": float(change.max()), "median_energy_change_ev": float(change.max(0).values.median())}
            row = rows[f"{name}-{method}"]
            print(name, method, json.dumps({k: v for k, v in row.items()
                                            if k not in ("times_fs", "fraction_S1", "nh_at_s1_s0_hops",
                                                         "longer_nh_at_s1_s0_hops")}), flush=True)
            if args.merge and saved.exists():  # another process may have added rows meanwhile: keep them
                rows = {**json.loads(saved.read_text())["rows"], **rows}
            save("methylamine", {"model": str(args.model), "trajectories": args.trajectories, "steps": args.steps,
                                 "timestep_fs": args.timestep, "seed": args.seed, "rows": rows})
    analytic.close()
    plot_methylamine(rows)


def plot_methylamine(rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, row in rows.items():
        style = "-" if row["surface"] == "analytic" else "--"
        color = "C0" if row["method"] == "fssh" else "C1"
        left.plot(row["times_fs"], row["fraction_S1"], style, color=color, label=key)
        right.hist(row.get("longer_nh_at_s1_s0_hops", row["nh_at_s1_s0_hops"]), bins=24, range=(1.0, 4.0), histtype="step", linestyle=style, color=color,
                   label=key)
    left.set_xlabel("time (fs)")
    left.set_ylabel("fraction on S1")
    left.legend(fontsize=8)
    right.set_xlabel("longer amine N-H distance at the S1 -> S0 hops (Å)")
    right.set_ylabel("hops")
    right.legend(fontsize=8)
    fig.suptitle("Methylamine (chempotpy CH3NH2 APRP): analytic (solid) vs learned (dashed) surfaces")
    fig.tight_layout()
    fig.savefig(RESULTS / "namd_methylamine.png", dpi=110)


def methylamine_scan(args) -> None:
    """Rigid N-H1 stretch from the S0 minimum: S0/S1 of the analytic surface and of each model (eV,
    each relative to its own S0 at 1.0 Å), the quickest look at where a learned surface is off."""
    from _chempotpy_surface import ChempotpySurface
    from ase.io import read

    from tensorfuse.calculator import _as_model
    from tensorfuse.namd import BOHR, HARTREE, ModelSurface

    minimum = read(HERE / "data" / "methylamine_minimum.xyz")
    x0 = minimum.positions
    nitrogen, hydrogen = 2, 0  # chempotpy's order: H1 H2 N3 ...; only N3-H1 dissociates
    bond = (x0[hydrogen] - x0[nitrogen]) / np.linalg.norm(x0[hydrogen] - x0[nitrogen])
    distances = np.arange(1.0, 2.81, 0.2)
    frames = []
    for r in distances:
        x = x0.copy()
        x[hydrogen] = x0[nitrogen] + r * bond
        frames.append(x.reshape(-1) / BOHR)
    x = torch.tensor(np.array(frames))
    with ChempotpySurface() as analytic:
        energies = {"analytic": analytic(x).energies * HARTREE}
    for path in args.models:
        surface = ModelSurface(_as_model(path, "cpu", torch.float64), minimum.numbers, batched_derivatives=False)
        energies[str(path)] = surface(x).energies.detach() * HARTREE
    names = list(energies)
    print("| N-H (Å) | " + " | ".join(f"{name} S0 / S1" for name in names) + " |")
    print("|---|" + "---|" * len(names))
    for k, r in enumerate(distances):
        cells = [f"{float(e[k, 0] - e[0, 0]):.2f} / {float(e[k, 1] - e[0, 0]):.2f}" for e in energies.values()]
        print(f"| {r:.1f} | " + " | ".join(cells) + " |")


def methylamine(args) -> None:
    {"train": methylamine_train, "run": methylamine_run, "scan": methylamine_scan}[args.action](args)


def table(args) -> None:
    """Markdown tables of every section that has results."""
    def load(name):
        path = RESULTS / f"namd_{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    tully_results = load("tully")
    if tully_results:
        methods = [m for m in ("fssh", "fssh-edc", "lz", "fssh-ba", "mudslide") if f"{m}_upper" in tully_results["rows"][0]]
        seeds = tully_results.get("seeds", [0])
        print(f"### Tully's models: transmission on the upper state ({tully_results['trajectories']} trajectories, "
              f"seeds {', '.join(map(str, seeds))}: per seed)\n")
        print("| model | k (a.u.) | exact | " + " | ".join(methods) + " |")
        print("|---|---|---|" + "---|" * len(methods))
        for r in tully_results["rows"]:
            cells = " | ".join(" / ".join(f"{u:.3f}" for u in r.get(f"{m}_upper_seeds", [r[f"{m}_upper"]]))
                               for m in methods)
            print(f"| {r['model']} | {r['k']:.0f} | {r['exact_upper']:.3f} | {cells} |")
        print()
    methylamine_results = load("methylamine")
    if methylamine_results:
        m = methylamine_results
        print(f"### Methylamine: analytic vs learned ({m['trajectories']} trajectories, {m['steps']} steps of "
              f"{m['timestep_fs']} fs, the same initial conditions and seeds)\n")
        print("| surface | method | S1 lifetime τ (fs) | delay (fs) | S1 fraction at 100 fs | at the end | N-H "
              "dissociation yield H1 / H2 / either | accepted / frustrated hops | stopped | max / median \\|ΔE_tot\\| (eV) | "
              "steps/s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in m["rows"].values():
            life = row["lifetime"] or {}
            at_100 = row["fraction_S1"][int(np.argmin(np.abs(np.array(row["times_fs"]) - 100.0)))]
            print(f"| {row['surface']} | {row['method']} | {life.get('tau', float('nan')):.1f} | "
                  f"{life.get('delay', float('nan')):.1f} | {at_100:.3f} | {row['fraction_S1'][-1]:.3f} | "
                  f"{row['yield']:.3f} / {row.get('yield_h2', float('nan')):.3f} / "
                  f"{row.get('yield_either_h', float('nan')):.3f} | "
                  f"{row['hops_accepted']} / {row['hops_frustrated']} | {row['stopped']} | "
                  f"{row['max_energy_change_ev']:.3f} / {row['median_energy_change_ev']:.4f} | "
                  f"{row['steps_per_second']:.1f} |")
        print()
    ethylene_results = load("ethylene")
    if ethylene_results:
        print("### Ethylene on the SA-CASSCF(2,2)-trained model (0 K Wigner, start on S1)\n")
        print("| method | trajectories | steps | S1 lifetime τ (fs) | delay (fs) | S1 fraction at the end | twisted > 90° "
              "at the end | accepted hops (all) | twist at S1→S0 hops: count, median (range) | max \\|ΔE_tot\\| (eV) | steps/s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for method, row in ethylene_results.items():
            if method == "model":
                continue
            life = row["lifetime"] or {}
            twist = row["twist_at_s1_s0_hops"]
            spread = (f"{len(twist)}, {np.median(twist):.0f}° ({min(twist):.0f}-{max(twist):.0f})" if twist else "-")
            print(f"| {method} | {row['trajectories']} | {row['steps']} | {life.get('tau', float('nan')):.0f} | "
                  f"{life.get('delay', float('nan')):.0f} | {row['final_fractions'][1]:.3f} | "
                  f"{row['yields']['twisted'][0]:.3f} ± {row['yields']['twisted'][1]:.3f} | {row['hops_accepted']} | "
                  f"{spread} | {row['max_energy_change_ev']:.3f} | {row['steps_per_second']:.1f} |")
        print()
    for path in sorted(RESULTS.glob("namd_speed_*.json")):
        sp = json.loads(path.read_text())
        print(f"### Speed: {sp['structure']} ({sp['atoms']} atoms, {sp['states']} states, couplings "
              f"{sp['couplings']}), {sp['steps']} steps, {sp['threads']} thread(s)\n")
        print("| trajectories | committee | state derivatives | steps/s | trajectory-steps/s | ms per step | "
              "ms per model call | vs one trajectory at a time (same derivatives) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in sp["rows"]:
            single = next(q for q in sp["rows"] if q["trajectories"] == 1 and q.get("committee", 1) == 1
                          and q["batched_derivatives"] == r["batched_derivatives"])["trajectory_steps_per_second"]
            how = "one batched pass" if r["batched_derivatives"] else "one pass per state"
            print(f"| {r['trajectories']} | {r.get('committee', 1)} | {how} | {r['steps_per_second']:.1f} | "
                  f"{r['trajectory_steps_per_second']:.0f} | {r['step_ms']:.1f} | {r['model_call_ms']:.1f} | "
                  f"{r['trajectory_steps_per_second'] / single:.1f}x |")
        print()


def save(name: str, data: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"namd_{name}.json").write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="section", required=True)
    t = sub.add_parser("tully")
    t.add_argument("--trajectories", type=int, default=500)
    t.add_argument("--mudslide", type=int, default=0, help="also run mudslide's FSSH with this many trajectories")
    t.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    t.add_argument("--merge", action="store_true", help="add these methods' columns to the saved rows")
    t.add_argument("--seeds", type=int, nargs="+", default=[0], help="one ensemble per seed (listed per seed)")
    t.set_defaults(run=tully)
    s = sub.add_parser("speed")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--structure", type=Path, required=True)
    s.add_argument("--name", default="model")
    s.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100])
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--committee", type=int, nargs="+", default=[1],
                   help="committee sizes to time (K copies of the model; one state-derivative pass per state each)")
    s.set_defaults(run=speed)
    e = sub.add_parser("ethylene")
    e.add_argument("--model", type=Path, default=Path("runs/excited/mace-standard/model.pt"))
    e.add_argument("--trajectories", type=int, default=100)
    e.add_argument("--steps", type=int, default=1000)
    e.add_argument("--methods", nargs="+", default=["fssh", "lz"])
    e.add_argument("--output", type=Path, default=Path("runs/namd_ethylene"))
    e.add_argument("--replot", action="store_true", help="summarise the run folders again without running")
    e.set_defaults(run=ethylene)
    m = sub.add_parser("methylamine")
    m.add_argument("action", choices=["train", "run", "scan"])
    m.add_argument("--models", type=Path, nargs="+", default=[], help="(scan) model files to compare")
    m.add_argument("--work", type=Path, default=Path("runs/methylamine"))
    m.add_argument("--budget", type=float, default=25.0, help="minutes of training (train)")
    m.add_argument("--model", type=Path, default=Path("runs/methylamine/model/model.pt"))
    m.add_argument("--trajectories", type=int, default=200)
    m.add_argument("--steps", type=int, default=1200)
    m.add_argument("--timestep", type=float, default=0.25, help="fs")
    m.add_argument("--methods", nargs="+", default=["fssh", "lz"])
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--surfaces", nargs="+", default=["analytic", "learned"], choices=["analytic", "learned"])
    m.add_argument("--merge", action="store_true", help="add these rows to the saved ones")
    m.add_argument("--name", default="model", help="the training run's folder name under --work (train)")
    m.add_argument("--energy-weight", type=float, default=1.0, help="(train)")
    m.add_argument("--extra-data", type=Path, nargs="*", default=[], help=f"(train) more labelled files, e.g. {HOPS_DATA}")
    m.add_argument("--channels", type=int, default=METHYLAMINE_MODEL["channels"], help="(train)")
    m.add_argument("--l-max", type=int, default=METHYLAMINE_MODEL["l_max"], help="(train)")
    m.add_argument("--compile", action="store_true", help="(train) compiled training (one process)")
    m.set_defaults(run=methylamine)
    sub.add_parser("table").set_defaults(run=table)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    args.run(args)


if __name__ == "__main__":
    main()
