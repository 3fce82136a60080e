#!/bin/bash
# issue 24 experiment: the energy-weight-200 fine-tune's last epoch, then seam-gap diagnostics of the last-epoch models
cd /work/main
OMP_NUM_THREADS=1 .venv/bin/python runs/lastepoch.py runs/excited_hotall_c64_s1_ew200 runs/excited_hotall_c64_s1_ew200/last > runs/last_ew200.log 2>&1
THREADS=1 runs/namd_vs_sa3.sh runs/excited_hotall_c64_s1_ew200/last/model.pt learned_sa3_hotall_s1_ew200_last "seed 1 last, fine-tuned at energy weight 200" namd_ethylene_sa3_hotall_s1_ew200_last
for m in runs/excited_hotall_c64_s0/last runs/excited_hotall_c64_s1/last runs/excited_v3_c64_30_cw80_cos_s0/last runs/excited_hotall_c64_s1_ew200/last; do
  n=$(echo $m | sed 's|runs/excited_||; s|/|_|g')
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/namd_reference_gaps.py $m/model.pt benchmarks/data/ethylene_abinitio_sa3/run_0 benchmarks/data/ethylene_abinitio_sa3/run_1 --output runs/gaps_$n > /dev/null 2>&1
  echo "$m"; OMP_NUM_THREADS=1 .venv/bin/python runs/fitcheck.py $m/model.pt 2>&1 | tail -4
done
