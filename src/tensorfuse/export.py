"""Deployment as a ``torch.export`` program (``.pt2``): see :mod:`tensorfuse.model` (``export_model``,
``load_exported``); this module keeps the names where the command line and older code find them."""

from tensorfuse.model._export import EXPORT_FORMAT, EXPORT_VERSION, ExportedEnergy, export_model, load_exported

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "ExportedEnergy", "export_model", "load_exported"]
