"""Helpers: process-level allocation tuning (command line, benchmarks), configuration type checks,
device names, progress bars."""

from tensorfuse.utils._dataclasses import check_field_types
from tensorfuse.utils._device import resolve_device
from tensorfuse.utils._malloc import tune_malloc
from tensorfuse.utils._progress import progress_bar, progress_enabled

__all__ = ["check_field_types", "progress_bar", "progress_enabled", "resolve_device", "tune_malloc"]
