"""The three search spaces and the architecture-logit pytree that goes with each.

Every search model is a Linen module applied functionally as

    model.apply(variables, images, arch_weights, train=..., single_path=...)

with ``variables = {"params": weights, "batch_stats": bn_state}`` and
``arch_weights`` a dict of ``[E, K]`` arrays (one row per edge, one column per op)
shaped like ``model.arch_shapes()``. Nothing architecture-related is a Flax
variable: the logits live in their own pytree (``init_arch_logits``).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.operations import OP_SETS, check_op_names
from asose_jax.spaces.chain import ChainArchitecture, ChainNetwork
from asose_jax.spaces.darts import DartsNetwork
from asose_jax.spaces.nb201 import NB201Network

# space name -> (module class, name of its depth field, default op set, default channels, default depth)
SPACES: dict[str, tuple[type[nn.Module], str, str, int, int]] = {
    "chain": (ChainNetwork, "depth", "aso_se", 32, 4),
    "darts": (DartsNetwork, "layers", "darts", 16, 8),
    "nb201": (NB201Network, "cells_per_stage", "nb201", 16, 5),
}


def build_search_model(
    space: str,
    init_channels: int | None = None,
    depth: int | None = None,
    num_classes: int = 10,
    op_names: Sequence[str] | None = None,
) -> nn.Module:
    """The search network of ``space``; ``None`` arguments take the space's defaults.

    ``depth`` is the block count (chain), cell count (darts) or cells per stage (nb201).
    """
    if space not in SPACES:
        raise ValueError(f"unknown search space {space!r}; use one of {', '.join(SPACES)}")
    cls, depth_field, op_set, default_channels, default_depth = SPACES[space]
    channels = default_channels if init_channels is None else init_channels
    depth = default_depth if depth is None else depth
    for name, value in (("init_channels", channels), ("depth", depth), ("num_classes", num_classes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    ops = check_op_names(OP_SETS[op_set] if op_names is None else op_names)
    if space == "chain":
        return ChainNetwork(ChainArchitecture.initial(channels, depth), num_classes, ops)
    return cls(init_channels=channels, num_classes=num_classes, op_names=ops, **{depth_field: depth})


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
