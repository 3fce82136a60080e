"""Experiment: the last epoch's EMA weights instead of the kept epoch, refitted and tested."""
import shutil, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from tensorfuse.model._serialization import model_to_dict
from tensorfuse.train._trainer import Trainer, resume_config
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, dst, dirs_exist_ok=False)
config = resume_config(dst, {"training.time_budget": 0.001})
trainer = Trainer(config)
evaluation = trainer.ema.copy_to(trainer.model)
trainer.state.best_model = model_to_dict(evaluation)
trainer.state.best_epoch = trainer.state.epoch
trainer.finish()
