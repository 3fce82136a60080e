"""Model files: weights, configuration (with statistics) and version, in plain data only.

A model file is ``torch.save`` of a dict of strings, numbers, lists and tensors, so it loads with
``torch.load(weights_only=True)``: opening a model can never run code (a pickled module could).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tensorfuse.utils._files import atomic_write

MODEL_FORMAT = "tensorfuse-model"
MODEL_VERSION = 2  # 2: architecture options in sections, priors derived from the statistics


def atomic_save(obj, path) -> None:
    """``torch.save`` that never leaves a truncated file (see :func:`tensorfuse.utils.atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def without_priors(state_dict: dict) -> dict:
    """A state dict without the priors' buffers, which files of format 1 (models and checkpoints,
    EMA shadows included) stored; they are now derived from the statistics in the configuration."""
    return {k: v for k, v in state_dict.items() if not k.startswith("energy_model.priors.")}


def model_to_dict(model) -> dict:
    from tensorfuse import __version__

    param = next(model.parameters())
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_VERSION,
        "tensorfuse_version": __version__,
        "config": model.config.to_dict(),
        "dtype": str(param.dtype).replace("torch.", ""),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_model(model, path) -> None:
    """Save a :class:`~tensorfuse.Potential` (weights, configuration, statistics, version)."""
    atomic_save(model_to_dict(model), path)


def load_model(path, device=None, dtype: torch.dtype | None = None):
    """Load a model file written by :func:`save_model` (``.pt``) or :func:`tensorfuse.export.export_model`
    (``.pt2``); clear errors for foreign or newer files."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"model file {path} is a folder")
    if path.suffix == ".pt2":
        from tensorfuse.model._export import load_exported

        model = load_exported(path)
        return model.to(device) if device is not None else model
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickled modules, corrupt files, other formats
        raise ValueError(
            f"{path} is not a tensorfuse model file (it cannot be read as plain data: {type(error).__name__}). "
            "tensorfuse never loads pickled code; re-export the model with tensorfuse."
        ) from None
    return model_from_dict(data, str(path), device, dtype)


def load_potential(model, device="cpu", dtype: torch.dtype | None = None):
    """Any model for inference, on ``device`` and in ``dtype`` (``None``: as stored): a file
    (``.pt``, an exported ``.pt2``, or a ``.pt2`` compiled ahead of time by ``tensorfuse export
    --for lammps``, a :class:`~tensorfuse.model.CompiledPotential`: CPU, its own dtype, one state;
    its weights need no gradients) or a :class:`~tensorfuse.Potential` (copied first where it must
    move, so that the caller's stays as it is). The one way the calculator, ``md``, ``namd``,
    LAMMPS and i-PI take a model."""
    import copy
    from os import PathLike

    from tensorfuse.model._compiled import CompiledPotential, is_compiled_package
    from tensorfuse.model._potential import Potential

    if isinstance(model, (str, PathLike)) and Path(model).suffix == ".pt2" and is_compiled_package(model):
        return CompiledPotential(model).to(device=device, dtype=dtype)
    if isinstance(model, (str, PathLike)):
        loaded = load_model(model, device=device, dtype=dtype)
        for p in loaded.parameters():
            p.requires_grad_(False)
        return loaded
    if isinstance(model, Potential):
        parameter = next(model.parameters())
        if (dtype is not None and dtype != parameter.dtype) or parameter.device != torch.device(device):
            model = copy.deepcopy(model)  # Module.to works in place
        model = model.to(device)
        return model.to(dtype) if dtype is not None else model
    raise ValueError(f"expected a tensorfuse Potential or a model file path, got {type(model).__name__}")


def model_from_dict(data, source: str, device=None, dtype: torch.dtype | None = None):
    from tensorfuse.model._build import build_model
    from tensorfuse.model._config import ModelConfig

    if not isinstance(data, dict) or data.get("format") not in (MODEL_FORMAT, "tensorfuse-checkpoint"):
        raise ValueError(f"{source} is not a tensorfuse model file (format {data.get('format') if isinstance(data, dict) else type(data).__name__!r})")
    if data.get("format") == "tensorfuse-checkpoint":
        raise ValueError(f"{source} is a training checkpoint: use `tensorfuse train --resume` or the run's model.pt")
    version = data.get("format_version")
    if not isinstance(version, int) or version > MODEL_VERSION:
        raise ValueError(f"{source} has model format version {version!r}; this tensorfuse reads up to "
                         f"{MODEL_VERSION}: upgrade tensorfuse")
    try:
        config = ModelConfig.from_dict(data["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{source}: the stored configuration is invalid: {error}") from None
    if data.get("dtype", "float64") not in ("float32", "float64"):
        raise ValueError(f"{source}: unknown dtype {data.get('dtype')!r} (float32 or float64)")
    stored = getattr(torch, data.get("dtype", "float64"))
    model = build_model(config, dtype=dtype or stored)
    try:
        model.load_state_dict(without_priors(data["state_dict"]))
    except (KeyError, RuntimeError, AttributeError) as error:
        raise ValueError(f"{source}: the weights do not match the configuration: {error}") from None
    return model.to(device) if device is not None else model
