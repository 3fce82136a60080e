"""Many-body product basis: weighted sums of products of the atomic density ``A`` with itself.

For correlation order ``nu``, every variant spans equivariant polynomials of degree ``1..nu`` in
``A`` (body order ``nu + 1``). Products are built by iterated two-factor products
``P_nu = P_(nu-1) ⊗ A`` (ICTP's scheme, or equivalently caterpillar fusion trees), so nothing of
size ``dim(A)**nu`` is ever formed and correlation 4-5 stay cheap to build. Variants (ICTP,
Zaverkin et al. 2024):

* ``"full"``: every ordered path kept, one weight per species, channel and path;
* ``"symmetric"``: as full, but the first product ``A ⊗ A`` keeps one of each pair of swapped
  paths and drops those that vanish for identical factors (odd couplings of an irrep with itself);
* ``"latent"``: symmetric products in a smaller latent channel space (``A`` projected down), then
  weights that couple latent channels, paths and species to the output channels;
* ``"reduced"``: as symmetric, but after each product the copies of every irrep (one per path) are
  mixed, channel by channel with learned weights, down to ``level_copies`` copies, so every level
  has the same width: parameters and cost grow linearly with the correlation order instead of
  geometrically (a low-rank form of the symmetric basis, which it equals in span only when
  ``level_copies`` reaches the number of paths).

The paths and their execution (kernel or tensor path) are :class:`~tensorfuse.nn._product_paths.ProductPaths`;
this module holds the variants' weights.
"""

from __future__ import annotations

import math

import torch

from tensorfuse.nn._linear import IrrepsLinear
from tensorfuse.nn._product_paths import ProductPaths
from tensorfuse.o3 import Irreps, ManyBodySpec, get_basis

VARIANTS = ("full", "symmetric", "latent", "reduced")


class ProductBasis(torch.nn.Module):
    """``B = sum_nu sum_paths w[species, channel, path] P_nu`` (ICTP's product basis).

    Input ``A``: ``[N, C, irreps_a.dim]``, species ``[N]``. Output ``[N, C, irreps_out.dim]`` with
    ``irreps_out`` per channel (each irrep once). ``l_internal`` optionally caps the degree of
    intermediate products (a smaller, cheaper basis).
    """

    def __init__(
        self,
        irreps_a,
        irreps_out,
        channels: int,
        correlation: int,
        num_species: int,
        variant: str = "symmetric",
        basis="spherical",
        l_internal: int | None = None,
        latent_channels: int | None = None,
        level_copies: int | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"product basis variant must be one of {VARIANTS}, got {variant!r}")
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        self.irreps_a, self.irreps_out = Irreps(irreps_a), Irreps(irreps_out)
        for mul, ir in self.irreps_out:
            if mul != 1:
                raise ValueError(f"irreps_out must hold each irrep once per channel, got {self.irreps_out}")
        self.basis, self.variant, self.correlation = get_basis(basis), variant, correlation
        self.channels, self.num_species = channels, num_species
        self.latent = variant == "latent"
        self.work_channels = (latent_channels or max(channels // 4, 1)) if self.latent else channels
        if level_copies is not None and (variant != "reduced" or level_copies < 1):
            raise ValueError(f"level_copies must be >= 1 and needs variant='reduced', got {level_copies} ({variant})")
        self.level_copies = (level_copies or 2) if variant == "reduced" else None
        spec = ManyBodySpec(self.irreps_a, self.irreps_out, correlation, variant != "full", l_internal,
                            self.level_copies)
        self.paths = ProductPaths(spec, self.basis, dtype=dtype)
        dtype = dtype or torch.get_default_dtype()

        if self.latent:
            # every materialized path that is an output irrep, then a species-dependent linear map,
            # in the order _latent_forward concatenates them
            out_types = [ir for _, ir in self.irreps_out]
            terms = [(len(offs), ir) for offsets in self.paths.plan.layer_offsets for ir, offs in offsets.items()
                     if ir in out_types]
            terms += [(len(g.q_copies), g.ir_out) for g in self.paths.plan.final_groups()]
            self._latent_irreps = Irreps(terms)
            self.down = IrrepsLinear(self.irreps_a, self.irreps_a, channels, self.work_channels, dtype=dtype)
            self.mix = IrrepsLinear(self._latent_irreps, self.irreps_out, self.work_channels, channels, num_species,
                                    dtype=dtype)
            return

        self.num_paths = self.paths.num_paths
        self.weights = torch.nn.Parameter(torch.randn(num_species, channels, self.num_paths, dtype=dtype))
        # reduced variant: mixing weights per step and irrep, [C, copies_out * copies_in] each (shared
        # by the species), scaled so that mixed copies keep unit variance
        if self.paths.num_mixing:
            K = self.level_copies
            self.mixing = torch.nn.Parameter(torch.randn(channels, self.paths.num_mixing, dtype=dtype))
            mix_scale = [1 / math.sqrt(j) for *_, j in self.paths.plan.mix_chunks for _ in range(K * j)]
            self.register_buffer("mixing_scale", torch.tensor(mix_scale, dtype=dtype), persistent=False)

    @property
    def path_scale(self) -> torch.Tensor:
        return self.paths.path_scale

    def species_axes(self) -> dict[str, int]:
        """Species-indexed tensors (name -> species axis): see :mod:`tensorfuse.model._transfer`. The
        latent variant has none of its own (its species-dependent map ``mix`` declares its weights)."""
        return {} if self.latent else {"weights": 0}

    def scaled_weights(self) -> torch.Tensor:
        """``[Z, C, P (+ mixing)]``: the weights the paths take (the reduced variant's mixing weights,
        the same for every species, appended)."""
        W = self.weights * self.paths.path_scale
        if self.paths.num_mixing:
            mixing = (self.mixing * self.mixing_scale).expand(W.shape[0], -1, -1)
            W = torch.cat([W, mixing], dim=-1)
        return W

    def forward(self, A: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if A.dim() != 3 or A.shape[1:] != (self.channels, self.irreps_a.dim):
            raise ValueError(f"A must have shape [N, {self.channels}, {self.irreps_a.dim}], got {tuple(A.shape)}")
        if self.latent:
            A = self.down(A)
            return self._latent_forward(A, self.paths.products(A), species)
        return self.paths(A, species, self.scaled_weights())

    def _latent_forward(self, A, layers, species):
        n, c = A.shape[:2]
        out_types = {ir for _, ir in self.irreps_out}
        pieces = [x.reshape(n, c, -1) for layer in layers for ir, x in layer.items() if ir in out_types]
        plan = self.paths.plan
        last_step = len(plan.steps) - 1
        for k, bundle in enumerate(plan.final):
            outputs = self.paths.bundle_products(layers[-1][bundle.ir_q], A, last_step, k, bundle)
            pieces.extend(y.reshape(n, c, -1) for y in outputs)
        return self.mix(torch.cat(pieces, dim=-1), species)

    def extra_repr(self) -> str:
        return (
            f"A={self.channels}x({self.irreps_a}) -> {self.irreps_out}, correlation={self.correlation}, "
            f"variant={self.variant}, basis={self.basis.name}"
            + (f", level_copies={self.level_copies}" if self.level_copies else "")
        )
