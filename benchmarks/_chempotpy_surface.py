"""Methylamine's analytic S0/S1 surface (chempotpy ``CH3NH2_APRP``) as a surface for the hopping engine.

chempotpy lives in its own environment (numpy < 2, MKL), so it runs in a subprocess,
``scripts/methylamine_chempotpy.py serve``, spoken to over a pipe in raw float64; nothing here
imports it. Atom order is chempotpy's: H1 H2 N3 C4 H5 H6 H7 (only H1 may dissociate).

    surface = ChempotpySurface()
    engine = SurfaceHopping(surface, surface.masses, method="fssh", dt=0.5 * FS, seed=0)
    ensemble = engine.run(x, v, 1, steps=400)      # x [T, 21] bohr, v bohr / (ħ/hartree)
    surface.close()
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from tensorfuse.namd import AMU, BOHR, HARTREE, SurfacePoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "methylamine_chempotpy.py"
SYMBOLS = ("H", "H", "N", "C", "H", "H", "H")
NUMBERS = (1, 1, 7, 6, 1, 1, 1)
MASSES_AMU = (1.008, 1.008, 14.007, 12.011, 1.008, 1.008, 1.008)  # the server's (ASE's standard weights)


class ChempotpySurface:
    """``surface(x [T, 21] bohr) -> SurfacePoint`` (hartree, hartree/bohr, 1/bohr) on two states.

    Couplings ``d_ij = <i|∇j>`` are antisymmetric; their sign is kept continuous per trajectory
    (a new ``d_01`` is flipped when its dot product with the trajectory's previous one is negative);
    :meth:`reset` forgets the previous ones (call it between independent runs)."""

    num_states = 2
    symbols = SYMBOLS
    numbers = torch.tensor(NUMBERS)

    def __init__(self, python: str = "/work/cpenv/bin/python", script: str | Path = SCRIPT,
                 library: str | None = None):
        self.natoms = len(SYMBOLS)
        self.dof = 3 * self.natoms
        self.masses = torch.tensor(MASSES_AMU, dtype=torch.float64).repeat_interleave(3) * AMU
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        library = library or str(Path(python).parent.parent / "lib")
        env["LD_LIBRARY_PATH"] = library + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env.pop("PYTHONPATH", None)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (the server's stderr, kept until close)
        self._process = subprocess.Popen([python, str(script), "serve"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._log, env=env)
        self.sign_memory: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> SurfacePoint:
        t = x.shape[0]
        geometry = (x.detach().to(torch.float64).cpu().numpy() * BOHR).reshape(t, self.natoms, 3)
        s, n = self.num_states, self.natoms
        self._send(np.array([t], dtype="<i8").tobytes() + np.ascontiguousarray(geometry, dtype="<f8").tobytes())
        sizes = (t * s, t * s * n * 3, t * s * s * n * 3)
        data = np.frombuffer(self._receive(8 * sum(sizes)), dtype="<f8")
        e = data[: sizes[0]].reshape(t, s)
        g = data[sizes[0]: sizes[0] + sizes[1]].reshape(t, s, 3 * n)
        d = data[sizes[0] + sizes[1]:].reshape(t, s, s, 3 * n)
        self.calls += 1
        energies = torch.tensor(e / HARTREE)
        forces = torch.tensor(-g * BOHR / HARTREE)
        couplings = torch.tensor(d * BOHR)  # 1/Å -> 1/bohr
        couplings = self._continuous(couplings)
        return SurfacePoint(energies.to(x.device), forces.to(x.device), couplings.to(x.device))

    def _continuous(self, d: torch.Tensor) -> torch.Tensor:
        """Flip ``d_ij`` (and ``d_ji``) of a trajectory whose dot product with the previous is negative."""
        s = self.num_states
        upper = torch.triu_indices(s, s, 1)
        pairs = d[:, upper[0], upper[1]]  # [T, P, D]
        if self.sign_memory is not None and self.sign_memory.shape == pairs.shape:
            sign = torch.where((pairs * self.sign_memory).sum(-1) < 0, -1.0, 1.0).to(d.dtype)
            pairs = pairs * sign[..., None]
        self.sign_memory = pairs.clone()
        out = torch.zeros_like(d)
        out[:, upper[0], upper[1]] = pairs
        out[:, upper[1], upper[0]] = -pairs
        return out

    def reset(self) -> None:
        self.sign_memory = None

    # -- the pipe -------------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        try:
            self._process.stdin.write(data)
            self._process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise RuntimeError(f"the chempotpy server died: {self._tail()}") from error

    def _receive(self, count: int) -> bytes:
        chunks, left = [], count
        while left:
            chunk = self._process.stdout.read(left)
            if not chunk:
                raise RuntimeError(f"the chempotpy server died: {self._tail()}")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._process.stdin.write(np.array([0], dtype="<i8").tobytes())
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
