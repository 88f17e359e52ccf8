"""The DARTS genotype: per node the two inputs whose strongest non-``none`` op weighs most, and on each that op;
and the published DARTS-space cells."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from asose_jax.spaces.base import best_op, pairs
from asose_jax.spaces.darts.supernet import STEPS, edge_inputs

CONCAT = tuple(range(2, 2 + STEPS))


@dataclasses.dataclass(frozen=True)
class DartsGenotype:
    """Normal and reduction cells as ``(op, input state)`` pairs, two per node, and the states they concatenate."""

    space: ClassVar[str] = "darts"
    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]


def darts_genotype(normal: list, reduce: list) -> DartsGenotype:
    """A genotype that concatenates all four intermediate nodes, as every published DARTS cell does."""
    return DartsGenotype(pairs(normal), CONCAT, pairs(reduce), CONCAT)


def derive_cell(weights: np.ndarray, op_names) -> tuple[tuple[str, int], ...]:
    """One cell from its edge weights ``[14, K]``, strongest input first per node, as DARTS lists them."""
    cell = []
    for node in range(STEPS):
        rows = [(j, best_op(weights[e], op_names, True)) for e, (i, j) in enumerate(edge_inputs()) if i == node]
        rows.sort(key=lambda r: -r[1][1])
        cell.extend((op, j) for j, (op, _) in rows[:2])
    return tuple(cell)


# Published cells, as their authors' code lists them (normal / reduce: (op, input state) pairs, two per node).
PUBLISHED: dict[str, DartsGenotype] = {
    # DARTS (Liu et al., ICLR 2019): first order (V1) and second order (V2), 3.3M parameters at 20 cells / 36 channels.
    "DARTS_V1": darts_genotype(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    ),
    "DARTS_V2": darts_genotype(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    ),
    # GDAS (Dong & Yang, CVPR 2019), as in D-X-Y/AutoDL-Projects.
    "GDAS": darts_genotype(
        [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_5x5", 4), ("sep_conv_3x3", 3)],
        [("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
         ("dil_conv_5x5", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
    ),
    # PC-DARTS (Xu et al., ICLR 2020), the CIFAR-10 cell.
    "PC_DARTS": darts_genotype(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    ),
}  # fmt: skip
