"""The discrete chain network of a genotype."""

from __future__ import annotations

import flax.linen as nn
import jax

from asose_jax.spaces.chain.genotype import ChainGenotype
from asose_jax.spaces.chain.supernet import chain_body


class ChainNet(nn.Module):
    """The chain network of a genotype (``chain_body``, each edge its chosen op), then a linear head.

    Grown genotypes keep their layout: stages and their relative widths, gated blocks (``x + g * F(x)``) and
    zero-gated branches, the gates initialised to zero and learned (ReZero style).
    """

    genotype: ChainGenotype
    init_channels: int = 32
    num_classes: int = 10

    @nn.compact
    def __call__(self, images: jax.Array, train: bool, drop_rate: jax.Array | float | None = None):
        arch = self.genotype.architecture(self.init_channels)
        features = chain_body(images, arch, self.genotype.edge_ops(), None, train)
        return nn.Dense(self.num_classes, name="classifier")(features), None
