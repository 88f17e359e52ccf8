"""``nb201``: the NAS-Bench-201 network (3 stages of cells with 6 edges, one shared logit array)."""

from asose_jax.spaces.nb201.genotype import NB201_BEST, NB201Genotype
from asose_jax.spaces.nb201.network import NB201Cell, NB201Net
from asose_jax.spaces.nb201.space import NB201, NB201Space
from asose_jax.spaces.nb201.supernet import NODES, NB201Network, ResidualBlock, SearchCell, edge_inputs, macro_network

__all__ = ["NB201", "NB201_BEST", "NODES", "NB201Cell", "NB201Genotype", "NB201Net", "NB201Network", "NB201Space",
           "ResidualBlock", "SearchCell", "edge_inputs", "macro_network"]  # fmt: skip
