"""Building the fused CPU kernels (``*.cpp`` beside this file) once per machine, with a fallback.

On CPU the tensor paths of the product basis and of message passing are bound by memory traffic
(and, for small molecules, those of the linear maps by the dispatch of their many small operations):
each of their many operations streams an ``[N, C, ...]`` (or ``[E, C, ...]``) intermediate through
memory. The kernels compute the same sums atom by atom (edge by edge), with the intermediates in
per-thread buffers and the innermost loops over channels. They are compiled together on first use
with ``torch.utils.cpp_extension``, as one extension whose sources build in parallel (a C++
compiler; tens of seconds, then cached per source, torch, environment and CPU: see
:func:`extension_name`), each kernel a submodule of it (``_kernels_module.cpp``); where that fails
the tensor paths run instead, with one warning. ``TENSORFUSE_NO_KERNELS=1`` turns them off
(debugging).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_loaded: dict[str, object] = {}
_failed: dict[str, str] = {}


KERNELS = ("message", "product", "linear")


def load_kernel(name: str):
    """The compiled kernel ``name`` (a submodule of the extension built from every
    ``_<kernel>_kernel.cpp``), or ``None`` where it cannot be built."""
    if name not in KERNELS:
        raise ValueError(f"no kernel {name!r}; the kernels are {KERNELS}")
    if name in _loaded or name in _failed:
        return _loaded.get(name)
    if os.environ.get("TENSORFUSE_NO_KERNELS"):
        _failed.update(dict.fromkeys(KERNELS, "TENSORFUSE_NO_KERNELS is set"))
        return None
    sources = [_HERE / f"_{kernel}_kernel.cpp" for kernel in KERNELS] + [_HERE / "_kernels_module.cpp"]
    try:
        import torch  # noqa: F401
        from torch.utils.cpp_extension import _get_build_directory, load

        extension = extension_name("kernels", b"".join(p.read_bytes() for p in sources), cpu_features())
        _remove_stale_lock(Path(_get_build_directory(extension, verbose=False)) / "lock")
        module = load(name=extension, sources=[str(p) for p in sources],
                      extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
        from tensorfuse.nn._kernel_ops import register

        for kernel in KERNELS:
            _loaded[kernel] = getattr(module, kernel)
            register(kernel)  # its C++ operators' shapes and derivatives
    except Exception as error:  # no compiler or headers: the tensor paths still work
        text = str(error).strip().splitlines()
        _loaded.clear()
        _failed.update(dict.fromkeys(KERNELS, f"{type(error).__name__}: {text[0] if text else ''}"))
        warnings.warn(f"tensorfuse: the fused kernels could not be built ({_failed[name]}); "
                      "using the (slower) tensor paths", RuntimeWarning, stacklevel=2)
    return _loaded.get(name)


def _cpuinfo() -> tuple[str, str]:
    """The CPU's model name and instruction-set flags (``/proc/cpuinfo``; empty elsewhere)."""
    flags = model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
            elif key.strip() == "model name" and not model:
                model = value.strip()
    except OSError:  # not Linux
        pass
    return model, flags


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (empty where the system does not say)."""
    return frozenset(_cpuinfo()[1].split())


def cpu_features() -> str:
    """What ``-march=native`` compiles for: PyTorch's CPU capability level and the CPU's model and
    instruction-set flags. A library built on one node of a cluster whose home is shared is then
    never loaded on a node without those instructions (it would die with SIGILL there)."""
    import platform

    import torch

    model, flags = _cpuinfo()
    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} {model} {flags}"


def extension_name(name: str, source: bytes, cpu: str) -> str:
    """The cached build's name: one per kernel source, torch, environment and CPU. Environments
    sharing the cache would otherwise rebuild each other's library (different include paths) on
    every load, and CPUs would load each other's instructions."""
    import torch

    key = source + f"{torch.__version__} {sys.prefix} {cpu}".encode()
    return f"tensorfuse_{name}_{hashlib.sha1(key).hexdigest()[:12]}"


def _remove_stale_lock(lock: Path, minutes: float = 10.0) -> None:
    """A build takes under a minute; a lock this old was left by a killed build, and torch would
    wait for it forever."""
    try:
        if lock.exists() and time.time() - lock.stat().st_mtime > 60 * minutes:
            lock.unlink()
    except OSError:
        pass


def is_loaded(name: str) -> bool:
    """Whether the kernel is built and loaded (compiled graphs use it only then, never building it)."""
    return name in _loaded


@contextlib.contextmanager
def tensor_paths(module):
    """The tensor paths instead of the kernels inside ``module`` (restored afterwards): for graphs
    that differentiate twice (the kernels' backward operators have no backward) and for exported
    programs, which must run without this package's operators."""
    fused = [m for m in module.modules() if getattr(m, "fused", False)]
    for m in fused:
        m.fused = False
    try:
        yield
    finally:
        for m in fused:
            m.fused = True
