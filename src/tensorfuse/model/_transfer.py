"""A trained model's weights in a model of the same architecture on the same or more elements.

Fine-tuning to new elements builds the model anew with the union of the species and copies the
trained weights into it. Tensors whose shape does not depend on the species copy whole; a
species-indexed tensor (one row per element: the embedding, per-species product-basis, fusion and
residual weights) is declared by the module that owns it, in a method ``species_axes()`` returning
``{name: species axis}``, and its old elements' rows go to their positions in the new species
list, while the new elements' rows keep their fresh initialization. Declared, never guessed from
shapes: a channel count equal to the number of elements would fool a guess.

The per-element statistics (E0s, energy shifts) are no weights: they live in the configuration,
keyed by atomic number, and the priors' buffers are derived from them.
"""

from __future__ import annotations

import torch


def species_axes(model: torch.nn.Module) -> dict[str, int]:
    """Every species-indexed tensor of ``model``: its state-dict name -> its species axis."""
    axes = {}
    for prefix, module in model.named_modules():
        declared = getattr(module, "species_axes", None)
        if callable(declared):
            axes.update({(f"{prefix}.{name}" if prefix else name): axis for name, axis in declared().items()})
    return axes


@torch.no_grad()
def transfer_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Copy the weights of ``source`` into ``target``, an energy model of the same architecture whose
    species include those of ``source`` (in any order): the rows of ``target``'s other elements stay
    as they are. On structures of ``source``'s elements, and with its statistics, ``target`` then
    computes what ``source`` computes."""
    old, new = tuple(source.config.species), tuple(target.config.species)
    lacking = [z for z in old if z not in new]
    if lacking:
        raise ValueError(f"cannot transfer weights: element(s) {lacking} of the source model are not in {list(new)}")
    rows = torch.tensor([new.index(z) for z in old])
    axes = species_axes(target)
    source_state, target_state = source.state_dict(), target.state_dict()
    if set(source_state) != set(target_state):
        differing = sorted(set(source_state) ^ set(target_state))
        raise ValueError(f"cannot transfer weights: the architectures differ ({', '.join(differing[:4])} ...)")
    merged = {}
    for name, weights in source_state.items():
        current = target_state[name]
        weights = weights.to(current.device, current.dtype)
        if name in axes:
            merged[name] = current.clone().index_copy_(axes[name], rows.to(current.device), weights)
        elif weights.shape == current.shape:
            merged[name] = weights
        else:  # a species-indexed tensor its module does not declare: mapping it would be a guess
            raise ValueError(f"cannot transfer weights: {name} changes shape with the species "
                             f"({tuple(weights.shape)} -> {tuple(current.shape)}) but declares no species axis")
    target.load_state_dict(merged)
