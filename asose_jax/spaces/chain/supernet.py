"""``chain``: the ASO-SE network, a line of blocks with one mixed op each, and its growable architecture.

The architecture description (``ChainArchitecture``) is plain, hashable data: the channels of each stage
and the blocks in order, each with a stable name (its parameters live under that name, so inserting a
block renames nothing), its stage, whether it is gated and how many branches it has. Growth
(``asose_jax.search.growth``) edits this description; the network is rebuilt from it.

A block (``h = preprocess(x)``, the preprocessing only where the stride or channel count changes)::

    m = edge_0(h) + sum_b gate_b * edge_b(h)        # edge 0: the block's op; edges 1..: its branches
    y = ReLU(BN(conv1x1(m + h)))
    out = x + gate * y   if gated (grown by depth)   else y

Gates are scalar weights initialised to zero, so grown blocks and branches start as exact no-ops. In the
search network every edge is a mixed op with its own row of architecture logits
(``{"blocks": [E, K]}``, rows in block order, each block's op before its branches); in the discrete
network (``asose_jax.spaces.chain.network``) every edge is its one chosen op.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.nn.mixed_op import MixedOp
from asose_jax.nn.operations import ASO_SE_OPS, Gate, batch_norm, conv, make_op


@dataclasses.dataclass(frozen=True)
class ChainBlockSpec:
    """One block: stable ``name``, ``stage`` index, ``gated`` (``x + g * F(x)``), number of ``branches``."""

    name: str
    stage: int
    gated: bool = False
    branches: int = 0

    @property
    def edges(self) -> int:
        return 1 + self.branches


@dataclasses.dataclass(frozen=True)
class ChainArchitecture:
    """The shape of a chain network.

    ``init_channels``: the width the search started with (genotypes express stage widths relative to it);
    ``stage_channels[s]``: channels of stage ``s`` (stage 0 includes the stem); ``blocks`` in order, with
    non-decreasing stages. The first block of a stage ``s > 0`` halves the resolution.
    """

    init_channels: int
    stage_channels: tuple[int, ...]
    blocks: tuple[ChainBlockSpec, ...]

    def __post_init__(self):
        stages = [b.stage for b in self.blocks]
        if stages != sorted(stages) or any(not 0 <= s < len(self.stage_channels) for s in stages):
            raise ValueError(f"chain blocks need non-decreasing stages in 0..{len(self.stage_channels) - 1}: {stages}")
        if len({b.name for b in self.blocks}) != len(self.blocks):
            raise ValueError("chain block names must be unique")
        if any(c < 1 for c in self.stage_channels):
            raise ValueError(f"stage channels must be positive, got {self.stage_channels}")
        for i, block in enumerate(self.blocks):
            if block.gated and self.stride(i) != 1:
                raise ValueError(f"gated block {block.name} cannot start a stage (x + g * F(x) needs stride 1)")

    @classmethod
    def initial(cls, init_channels: int, depth: int) -> ChainArchitecture:
        """The ungrown network: ``depth`` blocks; from block ``depth // 2`` on, stage 1 at twice the channels."""
        blocks = tuple(ChainBlockSpec(f"block_{i}", int(i >= depth // 2)) for i in range(depth))
        return cls(init_channels, (init_channels, 2 * init_channels), blocks)

    def stride(self, index: int) -> int:
        stage = self.blocks[index].stage
        first = index == 0 or self.blocks[index - 1].stage != stage
        return 2 if stage > 0 and first else 1

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def num_edges(self) -> int:
        return sum(b.edges for b in self.blocks)

    def edge_rows(self) -> list[tuple[str, int]]:
        """``(block name, edge index)`` of every row of the architecture logits, in order."""
        return [(b.name, e) for b in self.blocks for e in range(b.edges)]

    def to_json(self) -> dict:
        """Plain JSON values (lists, not tuples), so a description compares equal to its saved copy."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict) -> ChainArchitecture:
        blocks = tuple(ChainBlockSpec(**b) for b in data["blocks"])
        return cls(int(data["init_channels"]), tuple(int(c) for c in data["stage_channels"]), blocks)


class ChainBlock(nn.Module):
    """One block (see the module docstring). ``edge_ops[e]``: the candidate ops of edge ``e`` (``search``:
    a mixed op weighted by ``weights[e]``, ``weights: [edges, K]``) or its one chosen op (discrete, affine BN,
    ``weights`` None)."""

    channels: int
    stride: int
    edge_ops: tuple[tuple[str, ...], ...]
    gated: bool = False
    search: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, weights: jax.Array | None, train: bool, single_path: bool = False):
        h = x
        if self.stride != 1 or x.shape[-1] != self.channels:
            h = conv(self.channels, (1, 1), (self.stride, self.stride), name="preprocess_conv")(x)
            h = batch_norm(train, affine=True, name="preprocess_bn")(h)

        def edge(e: int) -> jax.Array:
            if self.search:
                name = "mixed_op" if e == 0 else f"branch_{e - 1}"
                return MixedOp(self.channels, 1, self.edge_ops[e], name=name)(h, weights[e], train, single_path)
            name = "op" if e == 0 else f"branch_{e - 1}"
            return make_op(self.edge_ops[e][0], self.channels, 1, affine=True, op_name=name)(h, train)

        m = edge(0)
        for e in range(1, len(self.edge_ops)):
            m = m + Gate(name=f"branch_{e - 1}_gate")(edge(e))
        y = conv(self.channels, (1, 1), name="final_conv")(m + h)
        y = nn.relu(batch_norm(train, affine=True, name="final_bn")(y))
        return x + Gate(name="gate")(y) if self.gated else y


def chain_body(
    images: jax.Array,
    arch: ChainArchitecture,
    edge_ops: Sequence[tuple[tuple[str, ...], ...]],
    arch_weights: jax.Array | None,
    train: bool,
    single_path: bool = False,
) -> jax.Array:
    """Stem conv3x3 -> BN -> ReLU, the blocks of ``arch``, global average pool: features ``[N, C_last]``.

    ``edge_ops[i]``: block i's per-edge ops (see ``ChainBlock``); ``arch_weights``: ``[E, K]`` rows in
    ``arch.edge_rows()`` order (search), or None (discrete). Call inside a compact module.
    """
    search = arch_weights is not None
    x = conv(arch.stage_channels[0], (3, 3), name="stem_conv")(images)
    x = nn.relu(batch_norm(train, affine=True, name="stem_bn")(x))
    row = 0
    for i, block in enumerate(arch.blocks):
        weights = arch_weights[row : row + block.edges] if search else None
        x = ChainBlock(arch.stage_channels[block.stage], arch.stride(i), tuple(edge_ops[i]), block.gated, search,
                       name=block.name)(x, weights, train, single_path)  # fmt: skip
        row += block.edges
    return jnp.mean(x, axis=(1, 2))


class ChainNetwork(nn.Module):
    """The chain search network: ``chain_body`` with a mixed op on every edge, then a linear head.

    Architecture weights: ``{"blocks": [E, K]}``, one row per edge (``arch.edge_rows()``).
    """

    space: ClassVar[str] = "chain"
    arch: ChainArchitecture
    num_classes: int = 10
    op_names: Sequence[str] = ASO_SE_OPS

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        return {"blocks": (self.arch.num_edges, len(self.op_names))}

    @nn.compact
    def __call__(self, images: jax.Array, arch_weights: dict, train: bool, single_path: bool = False):
        ops = tuple(self.op_names)
        edge_ops = [(ops,) * block.edges for block in self.arch.blocks]
        features = chain_body(images, self.arch, edge_ops, arch_weights["blocks"], train, single_path)
        return nn.Dense(self.num_classes, name="classifier")(features)
