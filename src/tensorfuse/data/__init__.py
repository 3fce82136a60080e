"""Atomic structures as graphs: neighbour lists with periodic images, batching."""

from tensorfuse.data._graph import AtomicGraph, batch_graphs
from tensorfuse.data._neighbors import neighbor_list

__all__ = ["AtomicGraph", "batch_graphs", "neighbor_list"]
