#!/bin/bash
# issue 24 (twelfth session): v3 + 199 SA3 labels at config_weight 0.1 of the hot ground state (scripts/ethylene_hot_ground_state.py),
# 64 channels, 30 minutes, against the SA3 reference from the shared initial conditions
exec /work/main/runs/namd_vs_sa3.sh runs/excited_hotw_c64_30/mace-diabatic/model.pt learned_sa3_hotw_c64_30 \
  "v3 + 199 hot-S0 labels at weight 0.1, 64 ch, 30 min" namd_ethylene_sa3_hotw "v3, 64 ch, 30 min=runs/learned_sa3_c64_30" \
  "v3 + hot-S0 labels, 64 ch, 30 min=runs/learned_sa3_hot_c64_30"
