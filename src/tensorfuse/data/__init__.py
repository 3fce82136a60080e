"""Atomic structures as graphs: neighbour lists with periodic images, batching; data sets on disk."""

from tensorfuse.data._graph import AtomicGraph, batch_graphs
from tensorfuse.data._neighbors import neighbor_list
from tensorfuse.data._preprocess import preprocess

__all__ = ["AtomicGraph", "batch_graphs", "neighbor_list", "preprocess"]
