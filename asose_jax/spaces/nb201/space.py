"""The NAS-Bench-201 space behind the ``SearchSpace`` interface, with its one growth: ``depth``, a gated cell
``x + g * cell(x)`` appended to the stage with the fewest grown cells (ties: the later stage), sharing the
cell's logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import flax.linen as nn
import numpy as np

from asose_jax.nn.operations import check_op_names
from asose_jax.spaces.base import Mutation, SearchSpace, best_op, one_hot_edges, softmax
from asose_jax.spaces.nb201.genotype import NB201Genotype
from asose_jax.spaces.nb201.network import NB201Net
from asose_jax.spaces.nb201.supernet import NODES, NB201Network, edge_inputs

if TYPE_CHECKING:  # it imports every space
    from asose_jax.spaces.genotypes import GenotypeJson


class NB201Space(SearchSpace):
    name, op_set, depth_field = "nb201", "nb201", "cells_per_stage"
    nas_bench_201 = one_op_per_row = True
    search_defaults, eval_defaults = (16, 5), (16, 5)
    growth_kinds = ("depth",)
    scans_cells = ("supernet", "network")

    def edge_label(self, model, name, row) -> str:
        """``"3<-0"``: the edge from node 0 into node 3 (as NAS-Bench-201 strings order them)."""
        node, source = edge_inputs()[row]
        return f"{node}<-{source}"

    def supernet(self, channels, depth, num_classes, op_names) -> nn.Module:
        return NB201Network(init_channels=channels, cells_per_stage=depth, num_classes=num_classes, op_names=op_names)

    def derive_genotype(self, logits, op_names, model=None) -> NB201Genotype:
        ops = [best_op(row, op_names, False)[0] for row in softmax(logits["cell"])]
        nodes, e = [], 0
        for i in range(1, NODES):
            nodes.append(tuple((ops[e + j], j) for j in range(i)))
            e += i
        return NB201Genotype(tuple(nodes))

    def genotype_from_json(self, data: GenotypeJson) -> NB201Genotype:
        """From ``nodes``, else from the NAS-Bench-201 string ``arch_str``."""
        if "nodes" in data:
            return NB201Genotype(data.op_pair_lists("nodes"))
        if "arch_str" in data:
            return NB201Genotype.from_string(data.string("arch_str"))
        raise ValueError("genotype JSON for space 'nb201' lacks the key 'nodes' (or 'arch_str')")

    def check_genotype(self, genotype: NB201Genotype) -> None:
        expected = [tuple(range(i)) for i in range(1, NODES)]
        if [tuple(j for _, j in node) for node in genotype.nodes] != expected:
            raise ValueError(f"NAS-Bench-201 cell must have node i read nodes 0..i-1, got {genotype.to_string()}")
        check_op_names([op for node in genotype.nodes for op, _ in node])

    def genotype_edge_weights(self, genotype: NB201Genotype, op_names: Sequence[str]) -> dict[str, np.ndarray]:
        edge_of = {edge: e for e, edge in enumerate(edge_inputs())}
        chosen = {edge_of[(i + 1, j)]: op for i, node in enumerate(genotype.nodes) for op, j in node}
        return {"cell": one_hot_edges(len(edge_of), chosen, op_names)}

    def network(self, genotype, channels, depth, num_classes, auxiliary) -> nn.Module:
        return NB201Net(genotype, channels, depth, num_classes)

    def architecture_json(self, model: NB201Network) -> dict:
        return {"grown_cells": list(model.grown_cells)}

    def with_architecture(self, model: NB201Network, data: dict | None) -> NB201Network:
        return model if data is None else model.clone(grown_cells=tuple(int(n) for n in data["grown_cells"]))

    def grown_model(self, model: NB201Network, mutation: Mutation) -> NB201Network:
        if not 0 <= mutation.target < len(model.grown_cells):
            raise ValueError(f"depth growth: stage {mutation.target} outside 0..{len(model.grown_cells) - 1}")
        cells = list(model.grown_cells)
        cells[mutation.target] += 1
        return model.clone(grown_cells=tuple(cells))

    def depth_of(self, model: NB201Network) -> int:
        return model.cells_per_stage + max(model.grown_cells)

    def describe(self, model: NB201Network, mutation: Mutation) -> str:
        t = mutation.target
        return f"stage_{t}_grown_{model.grown_cells[t]} (gated) at the end of stage {t}"

    def choose_target(self, model: NB201Network, kind: str) -> int:
        return min(range(len(model.grown_cells)), key=lambda s: (model.grown_cells[s], -s))


NB201 = NB201Space()
