#!/bin/bash
# issue 24 experiment: the last epoch's EMA weights of the v3-only cosine runs, tested and run against the reference
cd /work/main
while pgrep -f "namd_vs_sa3.sh runs/excited_hotall_c64_s0/last" > /dev/null; do sleep 5; done
for s in 0 1; do
  OMP_NUM_THREADS=1 .venv/bin/python runs/lastepoch.py runs/excited_v3_c64_30_cw80_cos_s$s/mace-diabatic runs/excited_v3_c64_30_cw80_cos_s$s/last > runs/last_cos_s$s.log 2>&1
  THREADS=1 runs/namd_vs_sa3.sh runs/excited_v3_c64_30_cw80_cos_s$s/last/model.pt learned_sa3_cos_s${s}_last "v3, 64 ch, cosine, seed $s, last epoch" namd_ethylene_sa3_cos_s${s}_last
done
