"""Files written so that a kill at any moment leaves either the old file or the new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO


def current_umask() -> int:
    """The process's file-creation mask, read without changing it where the system allows
    (``/proc/self/status`` on Linux): ``os.umask`` can only be read by setting it, which would
    briefly give other threads' new files the wrong mode."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[IO], None], binary: bool = True) -> None:
    """Call ``write(file)`` on a temporary file in the same folder, flush it to disk, then rename
    it over ``path``: a kill mid-write leaves the previous file intact, never a truncated one (and
    a ``.NAME.*.tmp`` file that the next writer may remove). The file gets the mode an ordinary
    ``open`` would give it (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``, so
    that a group folder's members can read a colleague's model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def unwritable_reason(path, error: BaseException, folder: bool = False) -> str:
    """Why ``path`` (a file, or with ``folder`` a folder, to create) could not be written, said the
    same way by every command: a file where a folder must be is named (the OS says "File exists"
    for one call and "Not a directory" for another), otherwise the OS's reason."""
    path = Path(path)
    for ancestor in ([path] if folder else []) + list(path.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, not a folder"
            break
    reason = getattr(error, "strerror", None) or str(error).strip()
    return reason.splitlines()[0] if reason else type(error).__name__
