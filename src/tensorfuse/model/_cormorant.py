"""The Cormorant-style level (Anderson, Hy & Kondor 2019), optionally with a fusion block.

One level of :class:`CormorantLevel` does what Cormorant's ``CormorantEdgeLevel`` and
``CormorantAtomLevel`` do together, in either basis:

* **edge level**: per-edge scalars from the radial basis and the channel-wise dot products of the
  two atoms' features (one per channel and irrep), through an MLP, times the smooth cutoff: the
  weights of the edge product;
* **atom level**: ``cg_aggregate`` (the neighbours' features times the edge harmonics, weighted
  and summed: the message ``M_i``), the atom's own features ``F_i`` and ``cg_power``
  (``F_i ⊗ F_i``, channel-wise, one weight per channel and path) are concatenated and mixed
  channel-wise (``CatMixReps``) into the next features. The first level mixes only the messages
  (its own features are the bare species embedding), so isolated atoms keep their reference energy.

``cormorant.fusion`` adds a fusion block to the atom level (Li, Pengmei et al.): the trees
``M ⊗ M'`` and ``(M ⊗ M') ⊗ F_i`` with per-species, per-channel, per-path weights, where ``M'`` is a
second message with its own edge weights (``second_message="distinct"``) or ``M`` itself
(``"shared"``). That raises the body order of a level from two to three (four with ``F_i``)
instead of stacking more levels. Cormorant's nonlinearity is the products themselves; the energy is
read out from the scalars of every level as in the MACE-style model.
"""

from __future__ import annotations

import math

import torch

from tensorfuse.nn import ChannelwiseTensorProduct, FusionBlock, Interaction, IrrepsLinear
from tensorfuse.o3 import FusionSpec, Irreps, get_basis
from tensorfuse.o3._fusion import make_shape


class CormorantLevel(torch.nn.Module):
    """One Cormorant level: ``[N, C, irreps_in.dim] -> [N, C, irreps_out.dim]``."""

    def __init__(self, config, irreps_in: Irreps, irreps_edge: Irreps, irreps_msg: Irreps, irreps_out: Irreps,
                 first: bool, dtype: torch.dtype):
        super().__init__()
        c, num_species, basis, options = config.channels, len(config.species), get_basis(config.basis), config.cormorant
        self.irreps_in, self.irreps_out, self.channels = irreps_in, irreps_out, c
        # channel-wise dot products per irrep of the two atoms' features, normalized per component
        blocks = torch.zeros(irreps_in.dim, len(irreps_in), dtype=dtype)
        for k, s in enumerate(irreps_in.slices()):
            blocks[s, k] = 1.0 / math.sqrt(s.stop - s.start)
        self.register_buffer("dot_blocks", blocks, persistent=False)
        num_edge_scalars = config.num_bessel + c * len(irreps_in)
        self.num_messages = config.densities_per_layer()
        self.aggregate = Interaction(
            irreps_in, irreps_edge, irreps_msg, c, num_edge_scalars, config.radial_mlp,
            config.statistics.avg_num_neighbors, basis, num_densities=self.num_messages, dtype=dtype,
        )
        # The first level's own features are the bare species embedding: like MACE's first layer it
        # passes on only what the neighbours bring, so an isolated atom has exactly its E0.
        self.power = None
        concat = irreps_msg
        if not first:
            self.power = ChannelwiseTensorProduct(
                irreps_in, irreps_in, irreps_out, channels=c, basis=basis, weights="internal", x2_has_channels=True,
                dtype=dtype,
            )
            concat = concat + irreps_in + self.power.irreps_out
        self.fusion = None
        if options.fusion:
            # leaves: 0 = the atom's features, 1 and 2 = messages; trees M ⊗ M' and (M ⊗ M') ⊗ F
            full = make_shape(options.fusion_shape, 3, leaves=[1, 2, 0])
            spec = FusionSpec([irreps_in, irreps_msg, irreps_msg], irreps_out, [(1, 2), full], options.l_internal)
            self.fusion = FusionBlock(spec, c, num_species, basis, dtype=dtype)
            concat = concat + irreps_out
        self.mix = IrrepsLinear(concat, irreps_out, c, c, dtype=dtype)

    def many_body_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.fusion.parameters()) if self.fusion is not None else []

    def forward(self, h, species, edges, receivers=None):
        """``receivers``: update only the first ``receivers`` atoms (the edges' receivers)."""
        sender, receiver = edges.index
        dots = ((h[sender] * h[receiver]) @ self.dot_blocks).flatten(1) * edges.envelope.unsqueeze(-1)
        messages = self.aggregate(h, edges.harmonics, torch.cat([edges.radial, dots], dim=-1), edges.index, receivers)
        h, species = h[:receivers], species[:receivers]
        if self.num_messages == 1:
            messages = [messages]
        parts = [messages[0]] if self.power is None else [messages[0], h, self.power(h, h)]
        if self.fusion is not None:
            second = messages[1] if len(messages) > 1 else messages[0]
            parts.append(self.fusion([h, messages[0], second], species))
        return self.mix(torch.cat(parts, dim=-1))

