#!/bin/bash
# issue 24: the same energy-weight-200 fine-tune (12 min, last epoch) from seed 0's last epoch, then its ensemble
cd /work/main
OMP_NUM_THREADS=1 .venv/bin/python runs/finetune_ew.py runs/excited_hotall_c64_s0/last runs/excited_hotall_c64_s0_ew200 200 12 > runs/ft_ew200_s0.log 2>&1
THREADS=1 runs/namd_vs_sa3.sh runs/excited_hotall_c64_s0_ew200/model.pt learned_sa3_hotall_s0_ew200_last "seed 0 last, fine-tuned at energy weight 200" namd_ethylene_sa3_hotall_s0_ew200_last
OMP_NUM_THREADS=1 .venv/bin/python benchmarks/namd_reference_gaps.py runs/excited_hotall_c64_s0_ew200/model.pt benchmarks/data/ethylene_abinitio_sa3/run_0 benchmarks/data/ethylene_abinitio_sa3/run_1 --output runs/gaps_hotall_c64_s0_ew200 > /dev/null 2>&1
OMP_NUM_THREADS=1 .venv/bin/python runs/fitcheck.py runs/excited_hotall_c64_s0_ew200/model.pt 2>&1 | tail -4
