"""Helpers: process-level allocation tuning (command line, benchmarks), configuration type checks,
device names."""

from tensorfuse.utils._dataclasses import check_field_types
from tensorfuse.utils._device import resolve_device
from tensorfuse.utils._malloc import tune_malloc

__all__ = ["check_field_types", "resolve_device", "tune_malloc"]
