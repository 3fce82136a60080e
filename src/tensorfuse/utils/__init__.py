"""Helpers: process-level allocation tuning (command line, benchmarks) and configuration type checks."""

from tensorfuse.utils._dataclasses import check_field_types
from tensorfuse.utils._malloc import tune_malloc

__all__ = ["check_field_types", "tune_malloc"]
