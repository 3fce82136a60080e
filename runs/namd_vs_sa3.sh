#!/bin/bash
# issue 24: a learned ensemble from the shared initial conditions (200 x 120 fs from S1), compared with
# the SA3-CASSCF reference and earlier learned ensembles. Usage:
#   [THREADS=1] runs/namd_vs_sa3.sh MODEL OUTPUT_NAME "LABEL" RESULT_NAME ["LABEL=DIR" ...]   (earlier ensembles to show beside it)
set -e
cd /work/main
model=$1; name=$2; label=$3; result=$4; shift 4
IC=benchmarks/data/ethylene_abinitio_sa3/initial_conditions.xyz
OMP_NUM_THREADS=${THREADS:-2} .venv/bin/tensorfuse namd "$model" $IC --sampling file \
  --initial-state S1 --trajectories 200 --steps 240 --product "twisted: dihedral 2 0 1 4 > 90" \
  --output "runs/$name" --overwrite
REF="SA3-CASSCF=benchmarks/data/ethylene_abinitio_sa3/run_0,benchmarks/data/ethylene_abinitio_sa3/run_1"
others=()
for e in "$@"; do others+=(--ensemble "$e"); done
for keep in "" --keep-stopped; do
  .venv/bin/python benchmarks/namd_reference.py $keep --ensemble "$REF" "${others[@]}" --ensemble "$label=runs/$name" \
    --every 10 --until 120 --same 16 --output "benchmarks/results/${result}${keep:+_kept}"
done
echo done
