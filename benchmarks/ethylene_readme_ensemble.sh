#!/usr/bin/env bash
# The README photodynamics example as written (two trainings side by side, one thread each), then the checks.
set -e
mkdir -p runs/after && cd runs/after  # run from the repository root; everything lands in runs/after
export OMP_NUM_THREADS=1
TF=../../.venv/bin/tensorfuse
DATA=$(../../.venv/bin/python -m tensorfuse.datasets ethylene_casscf)
$TF train --train-file $DATA --data.states "[S0, S1]" --data.test_fraction 0.15 --model.couplings diabatic \
          --training.energy_weight 20 --preset small --time-budget 5 --output runs/ethylene > train_a.log 2>&1 &
$TF train --train-file $DATA --data.states "[S0, S1]" --data.test_fraction 0.15 --model.couplings diabatic \
          --training.energy_weight 20 --preset small --time-budget 5 --training.seed 1 --output runs/ethylene_b > train_b.log 2>&1
wait
$TF eval runs/ethylene/model.pt runs/ethylene/test.xyz > eval.log 2>&1
$TF namd runs/ethylene/model.pt $DATA --committee runs/ethylene_b/model.pt --initial-state S1 \
          --trajectories 50 --steps 400 --product "twisted: dihedral 2 0 1 4 > 90" --output runs/ethylene_namd > namd.log 2>&1
../../.venv/bin/python ../../benchmarks/namd_checks.py runs/ethylene_namd --reference casscf --workers 2 > checks.log 2>&1
