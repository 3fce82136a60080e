"""Neural-network layers built on :mod:`tensorfuse.o3`, runnable in either basis."""

from tensorfuse.nn._tensor_product import ChannelwiseTensorProduct

__all__ = ["ChannelwiseTensorProduct"]
