"""The chain space behind the ``SearchSpace`` interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import flax.linen as nn
import numpy as np

from asose_jax.nn.operations import check_op_names
from asose_jax.spaces.base import GROWTH_KINDS, GrowthCaps, Mutation, SearchSpace, best_op, one_hot_edges, softmax
from asose_jax.spaces.chain import growth
from asose_jax.spaces.chain.genotype import MAX_STAGE_WIDTH, ChainGenotype
from asose_jax.spaces.chain.network import ChainNet
from asose_jax.spaces.chain.supernet import ChainArchitecture, ChainNetwork

if TYPE_CHECKING:  # it imports every space
    from asose_jax.spaces.genotypes import GenotypeJson


class ChainSpace(SearchSpace):
    name, op_set, depth_field = "chain", "aso_se", "depth"
    search_defaults, eval_defaults = (32, 4), (32, None)
    growth_kinds = GROWTH_KINDS

    def supernet(self, channels, depth, num_classes, op_names) -> nn.Module:
        return ChainNetwork(ChainArchitecture.initial(channels, depth), num_classes, op_names)

    def derive_genotype(self, logits, op_names, model=None) -> ChainGenotype:
        """Per edge the strongest op other than ``none``; a grown ``model`` says which rows are branches."""
        ops = [best_op(row, op_names, True)[0] for row in softmax(logits["blocks"])]
        if model is None:
            return ChainGenotype(tuple(ops))
        arch = model.arch
        if len(ops) != arch.num_edges:
            raise ValueError(f"{len(ops)} logit rows for a chain architecture of {arch.num_edges} edges")
        starts = np.cumsum([0] + [b.edges for b in arch.blocks])
        return ChainGenotype(
            tuple(ops[s] for s in starts[:-1]),
            tuple(b.stage for b in arch.blocks),
            tuple(b.gated for b in arch.blocks),
            tuple(tuple(ops[s + 1 : s + b.edges]) for s, b in zip(starts, arch.blocks, strict=False)),
            tuple(c / arch.init_channels for c in arch.stage_channels),
        )

    def genotype_from_json(self, data: GenotypeJson) -> ChainGenotype:
        return ChainGenotype(
            data.op_names("ops"),
            data.integers("stages", 0, default=()),
            data.booleans("gated", default=()),
            data.op_name_lists("branches", default=()),
            data.numbers("widths", default=()),
        )

    def check_genotype(self, genotype: ChainGenotype) -> None:
        if not genotype.ops:
            raise ValueError("a chain genotype needs at least one op")
        n = len(genotype.ops)
        for name in ("stages", "gated", "branches"):
            if (got := len(getattr(genotype, name))) != n:
                raise ValueError(f"a chain genotype needs one {name} entry per op ({n}), got {got}")
        if any(not 0 < w <= MAX_STAGE_WIDTH for w in genotype.widths):
            raise ValueError(f"chain stage widths must lie in (0, {MAX_STAGE_WIDTH:g}], got {list(genotype.widths)}")
        check_op_names([*genotype.ops, *(op for branches in genotype.branches for op in branches)])
        genotype.architecture(1)  # stage order and gates

    def genotype_edge_weights(self, genotype: ChainGenotype, op_names: Sequence[str]) -> dict[str, np.ndarray]:
        ops = [op for edges in genotype.edge_ops() for (op,) in edges]  # rows: each block's op, then its branches'
        return {"blocks": one_hot_edges(len(ops), dict(enumerate(ops)), op_names)}

    def network(self, genotype, channels, depth, num_classes, auxiliary) -> nn.Module:
        if depth is not None and depth != len(genotype.ops):
            raise ValueError(f"a chain network's depth is its genotype's ({len(genotype.ops)} ops), got {depth}")
        return ChainNet(genotype, channels, num_classes)

    def edge_names(self, model: ChainNetwork) -> dict[str, list[str]]:
        """``block_3`` for a block's op, ``block_3.branch_0`` for its branches."""
        return {"blocks": [name if e == 0 else f"{name}.branch_{e - 1}" for name, e in model.arch.edge_rows()]}

    def architecture_json(self, model: ChainNetwork) -> dict:
        return model.arch.to_json()

    def with_architecture(self, model: ChainNetwork, data: dict | None) -> ChainNetwork:
        return model if data is None else model.clone(arch=ChainArchitecture.from_json(data))

    def grown_model(self, model: ChainNetwork, mutation: Mutation) -> ChainNetwork:
        return model.clone(arch=growth.mutate_architecture(model.arch, mutation))

    def depth_of(self, model: ChainNetwork) -> int:
        return model.arch.depth

    def describe(self, model: ChainNetwork, mutation: Mutation) -> str:
        return growth.describe(model.arch, mutation)

    def choose_target(self, model: ChainNetwork, kind: str) -> int:
        return growth.choose_target(model.arch, kind)

    def stage_channels(self, model: ChainNetwork, stage: int) -> int:
        return model.arch.stage_channels[stage]

    def exceeded_layout_cap(self, grown: ChainNetwork, caps: GrowthCaps) -> str | None:
        return growth.exceeded_layout_cap(grown.arch, caps)

    def logit_rows(self, old: ChainNetwork, new: ChainNetwork) -> dict[tuple[str, ...], np.ndarray]:
        new_rows = {edge: r for r, edge in enumerate(new.arch.edge_rows())}
        return {("blocks",): np.array([new_rows[edge] for edge in old.arch.edge_rows()])}


CHAIN = ChainSpace()
