"""The chain genotype: per block the strongest op other than ``none``, with a grown network's layout."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from asose_jax.spaces.chain.supernet import ChainArchitecture, ChainBlockSpec

MAX_STAGE_WIDTH = 1024.0  # a stage's channels over the initial channels: far above any growth, far below overflow


@dataclasses.dataclass(frozen=True)
class ChainGenotype:
    """A discrete chain network: per block its op and, for grown networks, its stage, gate and branch ops.

    ``widths``: the channels of each stage relative to the network's initial channels. Empty fields take
    the ungrown layout: blocks from ``len(ops) // 2`` on in stage 1, widths (1, 2), no gates, no branches.
    """

    space: ClassVar[str] = "chain"
    ops: tuple[str, ...]
    stages: tuple[int, ...] = ()
    gated: tuple[bool, ...] = ()
    branches: tuple[tuple[str, ...], ...] = ()
    widths: tuple[float, ...] = ()

    def __post_init__(self):
        n = len(self.ops)
        defaults = {"stages": tuple(int(i >= n // 2) for i in range(n)), "gated": (False,) * n,
                    "branches": ((),) * n, "widths": (1.0, 2.0)}  # fmt: skip
        for name, default in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, default)

    def architecture(self, init_channels: int) -> ChainArchitecture:
        """The network's layout at ``init_channels`` (stage ``s`` gets ``round(init_channels * widths[s])``)."""
        blocks = tuple(
            ChainBlockSpec(f"block_{i}", stage, gated, len(branches))
            for i, (stage, gated, branches) in enumerate(zip(self.stages, self.gated, self.branches, strict=True))
        )
        channels = tuple(max(1, round(init_channels * w)) for w in self.widths)
        return ChainArchitecture(init_channels, channels, blocks)

    def edge_ops(self) -> list[tuple[tuple[str], ...]]:
        """Per block, its edges' ops (its op, then its branches'), as ``chain_body`` takes them."""
        return [((op,), *((b,) for b in branches)) for op, branches in zip(self.ops, self.branches, strict=True)]
