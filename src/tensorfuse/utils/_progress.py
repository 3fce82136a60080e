"""Progress bars for long loops (training epochs, ``eval``, ``md``, ``namd``).

A bar is drawn on stderr only, so stdout, logs and files stay exactly as they are without it. It
shows when stderr is a terminal; ``TENSORFUSE_PROGRESS=0`` turns bars off everywhere and
``TENSORFUSE_PROGRESS=1`` draws them even when stderr is not a terminal (a file, a pipe, a test).
A caller's ``enabled=False`` (``progress=False`` in the API, a rank other than 0) always wins.
"""

from __future__ import annotations

import os
import sys
import warnings

from tqdm import tqdm

PROGRESS_VARIABLE = "TENSORFUSE_PROGRESS"
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def progress_enabled(enabled: bool = True) -> bool:
    """Whether a bar would be drawn now: the caller allows it, and the environment or a terminal says so."""
    if not enabled:
        return False
    setting = os.environ.get(PROGRESS_VARIABLE, "").strip().lower()
    if setting in _ON:
        return True
    if setting in _OFF:
        return False
    if setting:  # a cosmetic setting: a typo should not stop a long run
        warnings.warn(f"{PROGRESS_VARIABLE}={os.environ[PROGRESS_VARIABLE]!r} is neither 1 (bars on) nor 0 (off); "
                      "showing bars at a terminal only", stacklevel=2)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(description: str, *, total: int | None = None, iterable=None, enabled: bool = True,
                 unit: str = "it", initial: int = 0, leave: bool = False) -> tqdm:
    """A tqdm bar on stderr over ``iterable`` (or ``total`` steps counted with ``update``); disabled, and
    so free, when :func:`progress_enabled` says no.

    ``leave=False`` clears the bar when it closes, so the lines printed after it (an epoch's summary, a
    run's result) stand alone. Use it as a context manager, so that it also closes on an error.
    """
    # tqdm redraws at most every `mininterval` seconds; in between an update only adds to a counter
    return tqdm(iterable, desc=description, total=total, unit=unit, initial=initial, leave=leave, file=sys.stderr,
                disable=not progress_enabled(enabled), dynamic_ncols=True, mininterval=0.2)
