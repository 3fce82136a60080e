"""Process-level helpers (allocation tuning) used by the command line and the benchmarks."""

from tensorfuse.utils._malloc import tune_malloc

__all__ = ["tune_malloc"]
