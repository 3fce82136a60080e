"""How a multi-state model turns per-atom readouts into ordered adiabatic energies (an output head).

Three constructions, chosen by ``ModelConfig.state_energies``:

* ``"diabatic"`` (DANN, Axelrod et al. 2022): the readouts are the elements of a small symmetric
  matrix per atom, summed per structure into a diabatic Hamiltonian ``H [B, S, S]``; the adiabatic
  energies are its eigenvalues (ascending: ordered for every input, with the cone of a conical
  intersection where two of them meet), the forces ``-U_k^T ∇H U_k`` and the couplings
  ``ΔE_kl d_kl = U_k^T ∇H U_l`` (Hellmann–Feynman, exact): finite at a crossing, and free of
  rigid translations and rotations (gradients of invariants).
* ``"gaps"``: a ground state and non-negative gaps, ``E_k = E_{k-1} + softplus(R_k - E_{k-1})``
  with ``R_k`` the k-th readout's energy (softness :data:`GAP_SOFTNESS` eV): ordered, smooth, but
  never exactly degenerate (no cone).
* ``"independent"``: one readout per state, as tensorfuse 0.1 did; states may cross (its files
  load as this).

The head returns the adiabatic ``energy [B, S]`` and ``node_energy [N, S]`` (summing to it), and
for ``"diabatic"`` what :class:`~tensorfuse.model.Potential` needs for Hellmann–Feynman
derivatives: the unique elements of ``H`` as ``derivative_columns [B, K]`` and the coefficients
that turn their gradients into every state's energy gradient ``[B, S, K]`` and every pair's
coupling ``[B, P, K]``.
"""

from __future__ import annotations

import torch

STATE_ENERGIES = ("diabatic", "gaps", "independent")
GAP_SOFTNESS = 0.1  # eV: the width of the soft ordering of the "gaps" head
EIGEN_BROADENING = 1e-9  # eV: 1/(λ_j - λ_i) in the eigenvectors' backward becomes finite at a crossing


def readout_columns(kind: str, num_states: int) -> int:
    """Per-atom numbers the readouts produce for ``num_states`` states."""
    return num_states * (num_states + 1) // 2 if kind == "diabatic" and num_states > 1 else num_states


def upper_pairs(num_states: int) -> list[tuple[int, int]]:
    """The off-diagonal elements ``(a, b)``, ``a < b``, in the order of the readout columns after the diagonal."""
    return [(a, b) for a in range(num_states) for b in range(a + 1, num_states)]


class _SymmetricEigh(torch.autograd.Function):
    """``torch.linalg.eigh`` whose backward stays finite where eigenvalues meet: the eigenvectors'
    ``1 / (λ_j - λ_i)`` is broadened to ``Δ / (Δ² + ε²)`` (``ε`` = :data:`EIGEN_BROADENING`, far below
    any gap a model resolves). Only training differentiates through the eigenvectors; forces and
    couplings never do (Hellmann–Feynman)."""

    @staticmethod
    def forward(ctx, matrix):
        values, vectors = torch.linalg.eigh(matrix)
        ctx.save_for_backward(values, vectors)
        return values, vectors

    @staticmethod
    def backward(ctx, grad_values, grad_vectors):
        values, vectors = ctx.saved_tensors
        inner = torch.zeros_like(vectors)
        if grad_values is not None:
            inner = inner + torch.diag_embed(grad_values)
        if grad_vectors is not None:
            gap = values.unsqueeze(-2) - values.unsqueeze(-1)  # [..., i, j] = λ_j - λ_i
            inner = inner + gap / (gap**2 + EIGEN_BROADENING**2) * (vectors.mT @ grad_vectors)
        grad = vectors @ inner @ vectors.mT
        return 0.5 * (grad + grad.mT)


def symmetric_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending eigenvalues ``[..., S]`` and eigenvectors ``[..., S, S]`` (columns) of symmetric
    matrices, each eigenvector's sign fixed by its largest component (positive), so that the same
    matrix gives the same vectors whatever the rounding of its elements."""
    values, vectors = _SymmetricEigh.apply(matrix)
    largest = vectors.detach().abs().argmax(-2, keepdim=True)  # [..., 1, S]
    sign = torch.where(vectors.detach().gather(-2, largest) < 0, -1.0, 1.0).to(vectors.dtype)
    return values, vectors * sign


class StateEnergies(torch.nn.Module):
    """Per-atom readouts ``[N, C]`` (energies above the atoms' reference energies) and the reference
    energies ``[N]`` -> adiabatic energies; see the module's description."""

    def __init__(self, kind: str, num_states: int, pairs: tuple[tuple[int, int], ...] = ()):
        super().__init__()
        if kind not in STATE_ENERGIES:
            raise ValueError(f"state_energies must be one of {STATE_ENERGIES}, got {kind!r}")
        self.kind, self.num_states, self.pairs = kind, num_states, tuple(pairs)
        self.columns = readout_columns(kind, num_states)
        self._upper = upper_pairs(num_states)
        column = torch.diag(torch.arange(num_states))  # element (a, b) of H <- readout column
        for p, (a, b) in enumerate(self._upper):
            column[a, b] = column[b, a] = num_states + p
        self.register_buffer("_element_column", column, persistent=False)

    def forward(self, excess: torch.Tensor, reference: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> dict:
        s = self.num_states
        if s == 1 or self.kind == "independent":
            node = excess + (reference.unsqueeze(-1) if s > 1 else reference)
            return {"energy": per_structure_sum(node, batch, num_graphs), "node_energy": node}
        # the atoms' reference energies are common to every state: added after the ordering, which
        # then works on numbers of a few eV (float32 resolves their differences)
        references = per_structure_sum(reference, batch, num_graphs)  # [B]
        if self.kind == "gaps":
            return self._gaps(excess, reference, references, batch, num_graphs)
        return self._diabatic(excess, reference, references, batch, num_graphs)

    def _gaps(self, excess, reference, references, batch, num_graphs) -> dict:
        raw = per_structure_sum(excess, batch, num_graphs)  # [B, S]
        energies = [raw[:, 0]]
        for k in range(1, self.num_states):
            gap = torch.nn.functional.softplus(raw[:, k] - energies[-1], beta=1.0 / GAP_SOFTNESS)
            energies.append(energies[-1] + gap)
        energy = torch.stack(energies, dim=1)  # [B, S]
        atoms = torch.zeros(num_graphs, dtype=excess.dtype, device=excess.device).index_add_(
            0, batch, torch.ones_like(reference))
        # per atom: its ground-state energy, and an equal share of its structure's excitation energies
        excitation = (energy - energy[:, :1]) / atoms.clamp_min(1.0).unsqueeze(-1)
        node = excess[:, :1] + excitation[batch] + reference.unsqueeze(-1)
        return {"energy": energy + references.unsqueeze(-1), "node_energy": node}

    def _diabatic(self, excess, reference, references, batch, num_graphs) -> dict:
        s = self.num_states
        node_matrix = excess[:, self._element_column.flatten()].reshape(-1, s, s)  # [N, S, S], symmetric
        columns = per_structure_sum(excess, batch, num_graphs)  # [B, K]: the unique elements of H
        matrix = columns[:, self._element_column.flatten()].reshape(-1, s, s)  # [B, S, S]
        values, vectors = symmetric_eigh(matrix)
        fixed = vectors.detach()[batch]  # [N, S, S]
        # per atom: its share <U_k|H_i|U_k> of each adiabatic energy (eigenvectors as constants:
        # the shares add up to the eigenvalues, and their gradients to the Hellmann–Feynman forces)
        node = ((node_matrix @ fixed) * fixed).sum(-2) + reference.unsqueeze(-1)
        out = {"energy": values + references.unsqueeze(-1), "node_energy": node, "derivative_columns": columns,
               "energy_coefficients": self._coefficients(vectors, [(k, k) for k in range(s)])}
        if self.pairs:
            out["coupling_coefficients"] = self._coefficients(vectors, list(self.pairs))
        return out

    def _coefficients(self, vectors: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
        """``[B, len(pairs), K]``: ``U_k^T ∂H U_l`` of each pair ``(k, l)`` as a sum over the unique
        elements' derivatives ``∂H_aa`` and ``∂H_ab`` (which stands for both ``ab`` and ``ba``)."""
        k, l = (torch.tensor(x, device=vectors.device) for x in zip(*pairs))
        uk, ul = vectors[:, :, k], vectors[:, :, l]  # [B, S, P]: the a-th component of U_k, U_l
        diagonal = uk * ul
        parts = [diagonal]
        if self._upper:
            a, b = (torch.tensor(x, device=vectors.device) for x in zip(*self._upper))
            parts.append(uk[:, a] * ul[:, b] + uk[:, b] * ul[:, a])
        return torch.cat(parts, dim=1).transpose(1, 2)  # [B, P, K]


def per_structure_sum(values: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """``[N, ...]`` per-atom values summed per structure: ``[B, ...]``."""
    if torch.compiler.is_compiling():
        # inductor's multi-threaded CPU code for a scatter-add into a one-element float64 buffer
        # fails to generate (InductorError, torch 2.13, B = 1): a product with the one-hot
        # structure membership instead, which has no scatter in its forward or backward
        members = (batch.unsqueeze(0) == torch.arange(num_graphs, device=batch.device).unsqueeze(1)).to(values.dtype)
        return (members @ values.reshape(values.shape[0], -1)).reshape((num_graphs,) + values.shape[1:])
    return values.new_zeros((num_graphs,) + values.shape[1:]).index_add_(0, batch, values)
