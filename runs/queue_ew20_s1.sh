#!/bin/bash
# issue 24 control: the same 12-minute fine-tune from seed 1's last epoch at the original energy weight (20)
cd /work/main
OMP_NUM_THREADS=1 .venv/bin/python runs/finetune_ew.py runs/excited_hotall_c64_s1/last runs/excited_hotall_c64_s1_ew20 20 12 > runs/ft_ew20_s1.log 2>&1
THREADS=1 runs/namd_vs_sa3.sh runs/excited_hotall_c64_s1_ew20/model.pt learned_sa3_hotall_s1_ew20_last "seed 1 last, fine-tuned at energy weight 20" namd_ethylene_sa3_hotall_s1_ew20_last
OMP_NUM_THREADS=1 .venv/bin/python benchmarks/namd_reference_gaps.py runs/excited_hotall_c64_s1_ew20/model.pt benchmarks/data/ethylene_abinitio_sa3/run_0 benchmarks/data/ethylene_abinitio_sa3/run_1 --output runs/gaps_hotall_c64_s1_ew20 > /dev/null 2>&1
OMP_NUM_THREADS=1 .venv/bin/python runs/fitcheck.py runs/excited_hotall_c64_s1_ew20/model.pt 2>&1 | tail -4
