"""issue 24 experiment: fine-tune a model with a larger energy weight (energies of hot and seam frames)."""
import sys
import torch
torch.set_num_threads(1)
import yaml
from tensorfuse import TrainConfig, train
src, out, weight, minutes = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
config = yaml.safe_load(open(src + "/config.yaml"))
training = {**config["training"], "init_model": src + "/model.pt", "energy_weight": weight, "time_budget": minutes,
            "lr": 0.002, "best_by": "last"}
train(TrainConfig(data=config["data"], training=training, output=out, overwrite=True))
