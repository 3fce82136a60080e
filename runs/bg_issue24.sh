#!/bin/bash
# issue 24: the best-test-error model size (64 ch, 30 min) against the SA3 reference, without and with the loop's labels
set -e
cd /work/main
export OMP_NUM_THREADS=1
IC=benchmarks/data/ethylene_abinitio_sa3/initial_conditions.xyz
run_namd() {  # model output
  if [ -f "$2/checkpoint.pt" ]; then extra="--resume"; else extra=""; fi
  .venv/bin/tensorfuse namd "$1" $IC --sampling file --initial-state S1 --trajectories 200 --steps 240 \
     --product "twisted: dihedral 2 0 1 4 > 90" --output "$2" $extra
}
[ -f runs/learned_sa3_c64_30/populations.csv ] || run_namd runs/excited_v3_c64_30/mace-diabatic/model.pt runs/learned_sa3_c64_30
[ -f runs/excited_adaptive_c64_30/mace-diabatic/model.pt ] || .venv/bin/python benchmarks/excited_states.py --budget 30 --energy-weight 20 --best-by forces --couplings-weight 40 --channels 64 --models mace-diabatic --data runs/ethylene_adaptive_sa3/all_data.xyz --work runs/excited_adaptive_c64_30
[ -f runs/learned_sa3_adaptive_c64_30/populations.csv ] || run_namd runs/excited_adaptive_c64_30/mace-diabatic/model.pt runs/learned_sa3_adaptive_c64_30
echo done
