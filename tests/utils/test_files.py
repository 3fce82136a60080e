"""Files tensorfuse writes: atomic, and with the mode the user's umask asks for."""

from __future__ import annotations

import os
import stat

import pytest

from tensorfuse.utils._files import atomic_write, current_umask


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_mode_of_an_ordinary_open(tmp_path, umask):
    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write(tmp_path / "model.pt", lambda f: f.write(b"x"))
        with open(tmp_path / "plain", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "model.pt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~umask

