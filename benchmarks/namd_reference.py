"""Learned photodynamics against ab initio surface hopping from the same initial conditions.

    python benchmarks/namd_reference.py \
        --ensemble "SA-CASSCF=runs/abinitio/run_0,runs/abinitio/run_1" \
        --ensemble "learned, iteration 0=runs/ethylene_adaptive/iteration_0/namd" \
        --every 10 --until 120 --same 16 --output benchmarks/results/namd_reference

Each ``--ensemble NAME=FOLDER[,FOLDER...]`` is one or more `tensorfuse namd` (or
``run_ensemble``) run folders, read from their checkpoints, so that a reference still running
is compared as far as it got; folders of one ensemble are joined trajectory by trajectory (up to
the shortest). Stopped trajectories are left out, as in the package's own statistics. Printed and
written (``OUTPUT.md``, ``OUTPUT.json``, ``OUTPUT.png``):

* the fraction of trajectories on the initial state every ``--every`` fs, with its binomial
  standard error, and, with ``--same N``, the learned ensembles' fraction over their first ``N``
  trajectories (the initial conditions the reference ran: its workers take every other one);
* the lifetime fitted to that decay (a delay, then an exponential; bootstrap error);
* the accepted hops down (S1 -> S0): how many trajectories hopped, when the first hop came, and
  the C=C twist and largest pyramidalization at it (ethylene's atom order, see namd_checks.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from namd_checks import pyramidalization, twist  # noqa: E402

BOHR = 0.529177210903


def load(folders: list[str], keep_stopped: bool = False) -> dict:
    """Active states ``[R, T]``, times (fs), first hops down of the trajectories that did not stop
    (``keep_stopped``: of every trajectory, a stopped one frozen in its last state to the end)."""
    from tensorfuse.namd import FS, load_ensemble

    parts = [load_ensemble(folder) for folder in folders]
    rows = min(e.active.shape[0] for e, _ in parts)
    initial = parts[0][1].initial_state
    active, first_hops, offset, stopped = [], [], 0, 0
    for ensemble, settings in parts:
        count = ensemble.active.shape[1]
        if settings.initial_state != initial:
            raise ValueError(f"{folders}: the runs start on different states")
        stopped += int((ensemble.stopped >= 0).sum())
        kept = np.ones(count, dtype=bool) if keep_stopped else (ensemble.stopped < 0).numpy()
        active.append(ensemble.active[:rows, kept].numpy())
        end = float(ensemble.times[rows - 1])
        first = {}
        for hop in ensemble.hops:
            if (hop.accepted and hop.target < hop.source and kept[hop.trajectory] and hop.trajectory not in first
                    and hop.step * settings.timestep * FS <= end + 1e-9):
                first[hop.trajectory] = hop
        for k, hop in sorted(first.items()):
            xyz = hop.position.reshape(-1, 3).numpy() * BOHR
            first_hops.append({"trajectory": offset + k, "time_fs": hop.step * settings.timestep,
                               "twist": twist(xyz), "pyramidalization": pyramidalization(xyz),
                               "gap_eV": hop.gap * 27.211386245988})
        offset += count
    times = parts[0][0].times[:rows].numpy() / FS
    order = np.concatenate([np.flatnonzero(np.ones(e.active.shape[1], dtype=bool) if keep_stopped
                                           else (e.stopped < 0).numpy()) + sum(p[0].active.shape[1] for p in parts[:i])
                            for i, (e, _) in enumerate(parts)])
    return {"times": times, "active": np.concatenate(active, axis=1), "initial": initial, "hops": first_hops,
            "stopped": stopped, "trajectory_numbers": order}


def fractions(active: np.ndarray, state: int) -> tuple[np.ndarray, np.ndarray]:
    on = (active == state).mean(1)
    return on, np.sqrt(on * (1 - on) / max(active.shape[1], 1))


def describe(values) -> str:
    values = np.asarray(values, dtype=float)
    if not len(values):
        return "–"
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"{q2:.0f} [{q1:.0f}, {q3:.0f}]"


def main() -> None:
    from tensorfuse.namd import fit_lifetime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", action="append", required=True, help="NAME=FOLDER[,FOLDER...]")
    parser.add_argument("--every", type=float, default=10.0, help="fs between tabulated times")
    parser.add_argument("--until", type=float, default=120.0, help="fs")
    parser.add_argument("--same", type=int, default=None, help="also the first N trajectories of every ensemble "
                        "but the first (the initial conditions the first, the reference, ran)")
    parser.add_argument("--keep-stopped", action="store_true",
                        help="count a trajectory stopped early (energy tolerance, atoms too close) in the state it "
                             "stopped in until the end, instead of leaving it out (a decayed trajectory that broke "
                             "down on the ground state then counts as decayed)")
    parser.add_argument("--output", default=None, help="OUTPUT.md, OUTPUT.json, OUTPUT.png")
    args = parser.parse_args()

    ensembles = {}
    for item in args.ensemble:
        name, _, folders = item.partition("=")
        if not folders:
            parser.error(f"--ensemble {item!r}: expected NAME=FOLDER[,FOLDER...]")
        ensembles[name] = load(folders.split(","), args.keep_stopped)
    grid = np.arange(0.0, args.until + 1e-9, args.every)
    columns, results, lines = [], {}, []
    for k, (name, data) in enumerate(ensembles.items()):
        state = data["initial"]
        on, error = fractions(data["active"], state)
        wanted = grid[grid <= data["times"][-1] + 1e-9]
        index = [int(np.argmin(np.abs(data["times"] - t))) for t in wanted]
        samples = (data["active"] == state).astype(float)
        lifetime = fit_lifetime(data["times"], on, samples)
        results[name] = {"trajectories": int(data["active"].shape[1]), "stopped": data["stopped"],
                         "until_fs": float(data["times"][-1]),
                         "fraction": {f"{t:g}": [float(on[i]), float(error[i])] for t, i in zip(wanted, index)},
                         "lifetime": None if lifetime is None else {"tau": lifetime.tau, "delay": lifetime.delay,
                                                                    "tau_error": lifetime.tau_error,
                                                                    "extrapolated": lifetime.extrapolated},
                         "hops": data["hops"]}
        columns.append((f"{name} (n = {data['active'].shape[1]})", wanted, on[index], error[index]))
        if args.same and k > 0:
            first = data["trajectory_numbers"] < args.same
            same = data["active"][:, first]
            s_on, s_error = fractions(same, state)
            results[name]["fraction_same"] = {f"{t:g}": [float(s_on[i]), float(s_error[i])] for t, i in zip(wanted, index)}
            columns.append((f"{name}, same {int(first.sum())} starts", wanted, s_on[index], s_error[index]))

    header = "| t (fs) | " + " | ".join(c[0] for c in columns) + " |"
    lines += ["Fraction of trajectories on the initial state (± binomial standard error):", "", header,
              "|---" * (len(columns) + 1) + "|"]
    for t in grid:
        cells = []
        for _, wanted, on, error in columns:
            hit = np.flatnonzero(np.abs(wanted - t) < 1e-9)
            cells.append(f"{on[hit[0]]:.2f} ± {error[hit[0]]:.2f}" if len(hit) else "–")
        lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
    lines += ["", "| ensemble | trajectories (stopped) | run until (fs) | lifetime τ (fs) | delay (fs) | hopped down | "
              "first hop (fs) | twist at hop (°) | pyramidalization at hop (°) |", "|---" * 9 + "|"]
    for name, r in results.items():
        life = r["lifetime"]
        if life is None:
            tau = "–"
        elif life["extrapolated"] and (life["tau_error"] or 0) > life["tau"]:
            tau = "– (the run is too short to fit one)"
        else:
            tau = (f"{life['tau']:.0f}" + (f" ± {life['tau_error']:.0f}" if life["tau_error"] else "")
                   + (" (extrapolated)" if life["extrapolated"] else ""))
        delay = "–" if life is None else f"{life['delay']:.0f}"
        hops = r["hops"]
        lines.append(f"| {name} | {r['trajectories']} ({r['stopped']}) | {r['until_fs']:.0f} | {tau} | {delay} | "
                     f"{len(hops)} | {describe([h['time_fs'] for h in hops])} | {describe([h['twist'] for h in hops])} | "
                     f"{describe([h['pyramidalization'] for h in hops])} |")
    lines.append("")
    lines.append("Hop columns: median [quartiles] over the trajectories' first accepted hop down.")
    text = "\n".join(lines)
    print(text)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.with_suffix(".md").write_text(text + "\n")
        output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        plot(output.with_suffix(".png"), ensembles)


def plot(path: Path, ensembles: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, data in ensembles.items():
        on, error = fractions(data["active"], data["initial"])
        line, = axes.plot(data["times"], on, label=f"{name} (n = {data['active'].shape[1]})")
        axes.fill_between(data["times"], on - error, on + error, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("time (fs)")
    axes.set_ylabel("fraction on the initial state")
    axes.set_ylim(0, 1.02)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
