"""The search spaces, each behind the ``SearchSpace`` interface (``base``), and the architecture-logit pytree.

Every search model is a Linen module applied functionally as

    model.apply(variables, images, arch_weights, train=..., single_path=...)

with ``variables = {"params": weights, "batch_stats": bn_state}`` and ``arch_weights`` a dict of ``[E, K]``
arrays (one row per edge, one column per op) shaped like ``model.arch_shapes()``. Nothing
architecture-related is a Flax variable: the logits live in their own pytree (``init_arch_logits``).
Supernets and genotypes name their space (``space`` class attribute); ``space_of`` returns it.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.nn.operations import OP_SETS, check_op_names
from asose_jax.spaces.base import SearchSpace
from asose_jax.spaces.chain import CHAIN
from asose_jax.spaces.darts import DARTS
from asose_jax.spaces.nb201 import NB201

SPACES: dict[str, SearchSpace] = {space.name: space for space in (CHAIN, DARTS, NB201)}


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; use one of {', '.join(SPACES)}")
    return SPACES[name]


def space_of(model_or_genotype) -> SearchSpace:
    """The space a supernet, discrete genotype or space name belongs to."""
    return get_space(model_or_genotype if isinstance(model_or_genotype, str) else model_or_genotype.space)


def build_supernet(
    space: str,
    init_channels: int | None = None,
    depth: int | None = None,
    num_classes: int = 10,
    op_names: Sequence[str] | None = None,
    scan_cells: bool | None = None,
) -> nn.Module:
    """The search network of ``space``; ``None`` arguments take the space's defaults.

    ``depth`` is the block count (chain), cell count (darts) or cells per stage (nb201); ``scan_cells`` runs a
    stage's cells (nb201) or each cell's edges (darts) through one compiled body; both default on.
    """
    found = get_space(space)
    default_channels, default_depth = found.search_defaults
    channels = default_channels if init_channels is None else init_channels
    depth = default_depth if depth is None else depth
    for name, value in (("init_channels", channels), ("depth", depth), ("num_classes", num_classes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    ops = check_op_names(OP_SETS[found.op_set] if op_names is None else op_names)
    model = found.supernet(channels, depth, num_classes, ops)
    return model.clone(scan_cells=scan_cells) if scan_cells is not None and "supernet" in found.scans_cells else model


def init_arch_logits(model: nn.Module, key: jax.Array, scale: float = 1e-3) -> dict[str, jax.Array]:
    """Architecture logits ``{name: [E, K]}`` drawn from N(0, scale^2)."""
    shapes = model.arch_shapes()
    keys = jax.random.split(key, len(shapes))
    return {
        name: scale * jax.random.normal(k, shape) for k, (name, shape) in zip(keys, sorted(shapes.items()), strict=True)
    }


def uniform_arch_weights(model: nn.Module) -> dict[str, jax.Array]:
    """Equal weights ``1/K`` on every op of every edge (used to initialise the weights)."""
    return {name: jnp.full(shape, 1.0 / shape[1]) for name, shape in model.arch_shapes().items()}


def count_params(tree) -> int:
    """Total number of scalars in a pytree."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))
