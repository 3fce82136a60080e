"""Building the fused CPU kernels (``*.cpp`` beside this file) once per machine, with a fallback.

On CPU the tensor paths of the product basis and of message passing are bound by memory traffic:
each of their many operations streams an ``[N, C, ...]`` (or ``[E, C, ...]``) intermediate through
memory. The kernels compute the same sums atom by atom (edge by edge), with the intermediates in
per-thread buffers and the innermost loops over channels. Each is compiled on first use with
``torch.utils.cpp_extension`` (a C++ compiler; ~30 s, then cached); where that fails the tensor
path runs instead, with one warning. ``TENSORFUSE_NO_KERNELS=1`` turns them off (debugging).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_loaded: dict[str, object] = {}
_failed: dict[str, str] = {}


def load_kernel(name: str):
    """The compiled extension ``_<name>_kernel.cpp``, or ``None`` where it cannot be built."""
    if name in _loaded or name in _failed:
        return _loaded.get(name)
    if os.environ.get("TENSORFUSE_NO_KERNELS"):
        _failed[name] = "TENSORFUSE_NO_KERNELS is set"
        return None
    source = _HERE / f"_{name}_kernel.cpp"
    try:
        from torch.utils.cpp_extension import load

        digest = hashlib.sha1(source.read_bytes()).hexdigest()[:12]
        _loaded[name] = load(name=f"tensorfuse_{name}_{digest}", sources=[str(source)],
                             extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"],
                             verbose=False)
    except Exception as error:  # no compiler or headers: the tensor path still works
        text = str(error).strip().splitlines()
        _failed[name] = f"{type(error).__name__}: {text[0] if text else ''}"
        warnings.warn(f"tensorfuse: the fused {name} kernel could not be built ({_failed[name]}); "
                      "using the (slower) tensor path", RuntimeWarning, stacklevel=2)
    return _loaded.get(name)
