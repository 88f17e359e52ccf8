"""``darts``: the DARTS cell network (normal and reduction cells of 4 nodes, 14 edges)."""

from asose_jax.spaces.darts.genotype import PUBLISHED, DartsGenotype
from asose_jax.spaces.darts.network import AuxiliaryHead, DartsCell, DartsNet, drop_path
from asose_jax.spaces.darts.space import DARTS, DartsSpace
from asose_jax.spaces.darts.supernet import NUM_EDGES, STEPS, DartsNetwork, SearchCell, edge_inputs, preprocess_inputs

__all__ = ["DARTS", "NUM_EDGES", "PUBLISHED", "STEPS", "AuxiliaryHead", "DartsCell", "DartsGenotype", "DartsNet",
           "DartsNetwork", "DartsSpace", "SearchCell", "drop_path", "edge_inputs", "preprocess_inputs"]  # fmt: skip
