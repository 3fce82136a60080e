"""Data-parallel training on 2 CPU processes (gloo) matches one process on the same global batch."""

import os
import socket
import subprocess
import sys

import torch

from tensorfuse import load_model

ARGS = ["--max-epochs", "2", "--seed", "3", "--batch-size", "6", "--data.max_train_frames", "18",
        "--data.max_valid_frames", "6", "--data.valid_fraction", "0.1", "--training.valid_batch_size", "6",
        "--model.channels=4", "--model.l_max=1", "--model.l_max_edge=1", "--model.mace.correlation=2",
        "--model.num_bessel=4", "--model.radial_mlp=[8,8]", "--model.readout_hidden=4"]


NETWORK_TROUBLE = ("Address already in use", "EADDRINUSE", "DistNetworkError", "Connection reset")


def _run(command, output):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command + ["train", "--output", str(output)] + ARGS, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _run_distributed(output):
    """torchrun on a free port; once more on another port if the rendezvous itself failed (the port
    taken between asking for it and binding it), never for a failure of the training."""
    for attempt in range(2):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(_free_port()), "-m", "tensorfuse"]
        try:
            return _run(command, output)
        except AssertionError as error:
            if attempt or not any(text in str(error) for text in NETWORK_TROUBLE):
                raise
            import shutil

            shutil.rmtree(output, ignore_errors=True)


def _free_port() -> int:
    # a fixed port can still be held (TIME_WAIT, another run): ask the OS for an unused one
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_a_single_process(tmp_path):
    single = _run([sys.executable, "-m", "tensorfuse"], tmp_path / "single")
    ddp = _run_distributed(tmp_path / "ddp")
    assert "2 process(es)" in ddp and "1 process(es)" in single
    assert ddp.count("epoch    2") == 1  # only rank 0 prints
    a = load_model(tmp_path / "single" / "model.pt").state_dict()
    b = load_model(tmp_path / "ddp" / "model.pt").state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-9, atol=1e-11), key
