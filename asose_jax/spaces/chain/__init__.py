"""``chain``: the ASO-SE line of blocks, growable in depth, width and branches (see ``supernet``)."""

from asose_jax.spaces.chain.genotype import ChainGenotype
from asose_jax.spaces.chain.network import ChainNet
from asose_jax.spaces.chain.space import CHAIN, ChainSpace
from asose_jax.spaces.chain.supernet import ChainArchitecture, ChainBlock, ChainBlockSpec, ChainNetwork, chain_body

__all__ = ["CHAIN", "ChainArchitecture", "ChainBlock", "ChainBlockSpec", "ChainGenotype", "ChainNet",
           "ChainNetwork", "ChainSpace", "chain_body"]  # fmt: skip
