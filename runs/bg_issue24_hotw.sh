#!/bin/bash
# issue 24 (twelfth session): v3 + 199 SA3 labels at config_weight 0.1 of the hot ground state (scripts/ethylene_hot_ground_state.py),
# 64 channels, 30 minutes, against the SA3 reference from the shared initial conditions
set -e
cd /work/main
IC=benchmarks/data/ethylene_abinitio_sa3/initial_conditions.xyz
OMP_NUM_THREADS=2 .venv/bin/tensorfuse namd runs/excited_hotw_c64_30/mace-diabatic/model.pt $IC --sampling file \
  --initial-state S1 --trajectories 200 --steps 240 --product "twisted: dihedral 2 0 1 4 > 90" \
  --output runs/learned_sa3_hotw_c64_30 --overwrite
REF="SA3-CASSCF=benchmarks/data/ethylene_abinitio_sa3/run_0,benchmarks/data/ethylene_abinitio_sa3/run_1"
.venv/bin/python benchmarks/namd_reference.py --ensemble "$REF" --ensemble "v3, 64 ch, 30 min=runs/learned_sa3_c64_30" --ensemble "v3 + hot-S0 labels, 64 ch, 30 min=runs/learned_sa3_hot_c64_30" \
  --ensemble "v3 + 199 hot-S0 labels at weight 0.1, 64 ch, 30 min=runs/learned_sa3_hotw_c64_30" --every 10 --until 120 --same 16 \
  --output benchmarks/results/namd_ethylene_sa3_hotw
.venv/bin/python benchmarks/namd_reference.py --keep-stopped --ensemble "$REF" --ensemble "v3, 64 ch, 30 min=runs/learned_sa3_c64_30" --ensemble "v3 + hot-S0 labels, 64 ch, 30 min=runs/learned_sa3_hot_c64_30" \
  --ensemble "v3 + 199 hot-S0 labels at weight 0.1, 64 ch, 30 min=runs/learned_sa3_hotw_c64_30" --every 10 --until 120 --same 16 \
  --output benchmarks/results/namd_ethylene_sa3_hotw_kept
echo done
