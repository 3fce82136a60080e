"""Derivatives of several electronic states: one batched backward pass against one pass per state.

    python benchmarks/states_speed.py [--repeats 20]

For a small molecule (ethylene, 6 atoms) and a larger one (aspirin, 21 atoms), MACE-style models
of 1, 2 and 3 states (and 3 states with vector couplings) in the Cartesian basis, float64: ms per
call of energies + forces of every state with ``batched_derivatives`` on (the default: one backward
pass over a batch of one-hot cotangents, ``is_grads_batched``) and off (one backward pass per
state). Medians of ``--repeats`` calls after warm-up, in one process, side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ase.build import molecule

from tensorfuse import ModelConfig, build_model
from tensorfuse.data import AtomicGraph


def timed(model, graph, batched: bool, repeats: int) -> float:
    times = []
    for k in range(repeats + 3):
        start = time.perf_counter()
        out = model(graph, forces=True, batched_derivatives=batched)
        out["forces"].sum().item()
        if k >= 3:
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from tensorfuse.utils import tune_malloc

    tune_malloc()
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from systems import aspirin_frames  # the benchmark systems of model_speed.py

    structures = {"ethylene": molecule("C2H4"), "aspirin": aspirin_frames(1)[0]}
    print(f"# energies + forces of every state, ms per call (median of {args.repeats}); torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; Cartesian basis, float64, 64 channels, "
          f"l_max 1, edges to l = 3, correlation 3")
    print("| system | atoms | states | couplings | one pass per state | one batched pass | batched vs per state |")
    print("|---|---|---|---|---|---|---|")
    for name, atoms in structures.items():
        graph = AtomicGraph.from_atoms(atoms, 5.0, dtype=torch.float64)
        for states, couplings in (((), None), (("S0", "S1"), None), (("S0", "S1", "S2"), None),
                                  (("S0", "S1", "S2"), "vector"), (("S0", "S1", "S2"), "gradient")):
            species = tuple(sorted(set(atoms.numbers.tolist())))
            config = ModelConfig(species=species, channels=64, l_max=1, l_max_edge=3, states=states,
                                 couplings=couplings)
            model = build_model(config, dtype=torch.float64, seed=0)
            for p in model.parameters():
                p.requires_grad_(False)
            loop = timed(model, graph, False, args.repeats)
            batched = timed(model, graph, True, args.repeats)
            print(f"| {name} | {len(atoms)} | {max(1, len(states))} | {couplings or '-'} | {loop:.2f} | "
                  f"{batched:.2f} | {loop / batched:.2f}x |")


if __name__ == "__main__":
    main()
