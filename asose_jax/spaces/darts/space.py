"""The DARTS space behind the ``SearchSpace`` interface. It has no growth: a cell reads the two cells before
it, so an inserted cell would rewire the next one (no function-preserving form)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import flax.linen as nn
import numpy as np

from asose_jax.nn.operations import check_op_names
from asose_jax.spaces.base import SearchSpace, one_hot_edges, softmax
from asose_jax.spaces.darts.genotype import CONCAT, DartsGenotype, derive_cell
from asose_jax.spaces.darts.network import DartsNet
from asose_jax.spaces.darts.supernet import STEPS, DartsNetwork, edge_inputs

if TYPE_CHECKING:  # it imports every space
    from asose_jax.spaces.genotypes import GenotypeJson


class DartsSpace(SearchSpace):
    name, op_set, depth_field = "darts", "darts", "layers"
    scanned_unrecorded = True
    search_defaults, eval_defaults, min_eval_depth = (16, 8), (36, 20), 3
    auxiliary_head = True
    scans_cells = ("supernet", "network")  # the supernet scans edges: its default 8 cells all differ in shape

    def supernet(self, channels, depth, num_classes, op_names) -> nn.Module:
        return DartsNetwork(init_channels=channels, layers=depth, num_classes=num_classes, op_names=op_names)

    def derive_genotype(self, logits, op_names, model=None) -> DartsGenotype:
        normal, reduce = (derive_cell(softmax(logits[name]), op_names) for name in ("normal", "reduce"))
        return DartsGenotype(normal, CONCAT, reduce, CONCAT)

    def genotype_from_json(self, data: GenotypeJson) -> DartsGenotype:
        normal, reduce = data.op_pairs("normal"), data.op_pairs("reduce")
        normal_concat, reduce_concat = (data.integers(key, 2, 1 + STEPS) for key in ("normal_concat", "reduce_concat"))
        return DartsGenotype(normal, normal_concat, reduce, reduce_concat)

    def check_genotype(self, genotype: DartsGenotype) -> None:
        for name, cell in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            if len(cell) != 2 * STEPS:
                raise ValueError(f"a DARTS {name} cell needs {2 * STEPS} (op, input) pairs, got {len(cell)}")
            for p, (_, j) in enumerate(cell):
                if not 0 <= j < 2 + p // 2:
                    raise ValueError(
                        f"DARTS {name} pair {p} (node {p // 2}) reads state {j}; valid are 0..{p // 2 + 1}"
                    )
            check_op_names([op for op, _ in cell])
        for concat in (genotype.normal_concat, genotype.reduce_concat):
            if not concat or not set(concat) <= set(CONCAT):
                raise ValueError(f"DARTS concat {concat} must list nodes among 2..{1 + STEPS}")

    def genotype_edge_weights(self, genotype: DartsGenotype, op_names: Sequence[str]) -> dict[str, np.ndarray]:
        edge_of = {edge: e for e, edge in enumerate(edge_inputs())}
        return {
            name: one_hot_edges(len(edge_of), {edge_of[(p // 2, j)]: op for p, (op, j) in enumerate(cell)}, op_names)
            for name, cell in (("normal", genotype.normal), ("reduce", genotype.reduce))
        }

    def network(self, genotype, channels, depth, num_classes, auxiliary) -> nn.Module:
        return DartsNet(genotype, channels, depth, num_classes, auxiliary)


DARTS = DartsSpace()
