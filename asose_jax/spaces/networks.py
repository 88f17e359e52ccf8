"""Discrete networks built from a genotype, for training from scratch (``experiments/cifar10_train.py``).

Every network is applied functionally as

    (logits, aux_logits), updates = net.apply(variables, images, train=True, drop_rate=r,
                                              rngs={"drop_path": key}, mutable=["batch_stats"])

``aux_logits`` is the auxiliary head's output in training when the network has one, else ``None``.
``drop_rate`` (a scalar, may be traced) is the drop-path probability; it acts only in training.
Ops carry affine BatchNorm, as in the evaluation networks of DARTS and NAS-Bench-201.

* ``chain``: the ASO-SE line of blocks, each edge (a block's op, its branches) its one chosen op;
* ``darts``: DARTS's ``NetworkCIFAR`` (stem 3C, reductions at 1/3 and 2/3, auxiliary head at 2/3);
* ``nb201``: the NAS-Bench-201 network (3 stages of cells, residual blocks between them).
"""

from __future__ import annotations

import flax.linen as nn

from asose_jax.spaces import space_of
from asose_jax.spaces.genotypes import Genotype, check_genotype


def build_network(
    genotype: Genotype,
    init_channels: int | None = None,
    depth: int | None = None,
    num_classes: int = 10,
    auxiliary: bool = False,
    scan_cells: bool = True,
) -> nn.Module:
    """The discrete network of ``genotype``; ``None`` sizes take the space's evaluation defaults
    (``eval_defaults``). ``depth``: cells (darts) or cells per stage (nb201); a chain's depth is its
    genotype's. ``auxiliary`` exists only for darts. ``scan_cells`` False unrolls the cells a space would scan."""
    space = space_of(check_genotype(genotype))
    default_channels, default_depth = space.eval_defaults
    channels = default_channels if init_channels is None else init_channels
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"init_channels must be a positive integer, got {channels!r}")
    if auxiliary and not space.auxiliary_head:
        raise ValueError(f"the auxiliary head exists only for darts networks, not {space.name}; set auxiliary weight 0")
    depth = default_depth if depth is None else depth
    if depth is not None and (not isinstance(depth, int) or depth < space.min_eval_depth):
        raise ValueError(f"depth must be an integer >= {space.min_eval_depth} for {space.name}, got {depth!r}")
    network = space.network(genotype, channels, depth, num_classes, auxiliary)
    return network.clone(scan_cells=scan_cells) if "network" in space.scans_cells else network
