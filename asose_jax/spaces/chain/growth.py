"""The chain space's three mutations of its ``ChainArchitecture`` and where each goes.

* ``depth``: insert a gated block ``x + g * F(x)`` (``g = 0``) at the end of a stage, with its own logit row;
* ``width``: widen a stage by a factor (the weights are spread by ``asose_jax.search.growth.Widening``);
* ``branch``: add a zero-gated parallel mixed op to a block, with its own logit row.

Where each goes (``choose_target``) follows the growth rule, written once in ``asose_jax.search.growth``.
"""

from __future__ import annotations

import dataclasses

from asose_jax.spaces.base import GrowthCaps, Mutation
from asose_jax.spaces.chain.supernet import ChainArchitecture, ChainBlockSpec


def new_block_name(arch: ChainArchitecture) -> str:
    names, n = {b.name for b in arch.blocks}, len(arch.blocks)
    while f"block_{n}" in names:
        n += 1
    return f"block_{n}"


def widened_channels(channels: int, factor: float) -> int:
    """``round(channels * factor)``, at least one more channel."""
    return max(channels + 1, round(channels * factor))


def mutate_architecture(arch: ChainArchitecture, mutation: Mutation) -> ChainArchitecture:
    """The grown architecture description (a pure function of descriptions)."""
    blocks, t = list(arch.blocks), mutation.target
    if mutation.kind == "depth":
        if not 0 <= t <= len(blocks):
            raise ValueError(f"depth growth: insertion index {t} outside 0..{len(blocks)}")
        stage = blocks[t - 1].stage if t > 0 else 0
        blocks.insert(t, ChainBlockSpec(new_block_name(arch), stage, gated=True))
        return dataclasses.replace(arch, blocks=tuple(blocks))
    if mutation.kind == "width":
        if not 0 <= t < len(arch.stage_channels):
            raise ValueError(f"width growth: stage {t} outside 0..{len(arch.stage_channels) - 1}")
        if not mutation.factor > 1:
            raise ValueError(f"width growth needs a factor > 1, got {mutation.factor}")
        channels = list(arch.stage_channels)
        channels[t] = widened_channels(channels[t], mutation.factor)
        return dataclasses.replace(arch, stage_channels=tuple(channels))
    if mutation.kind != "branch":
        raise ValueError(f"the chain space has no {mutation.kind!r} growth; it grows depth, width or branch")
    if not 0 <= t < len(blocks):
        raise ValueError(f"branch growth: block {t} outside 0..{len(blocks) - 1}")
    blocks[t] = dataclasses.replace(blocks[t], branches=blocks[t].branches + 1)
    return dataclasses.replace(arch, blocks=tuple(blocks))


def describe(arch: ChainArchitecture, mutation: Mutation) -> str:
    """E.g. ``"block_4 (gated) after block_1"``, ``"stage 0: 16 -> 24 channels"``, ``"block_3: branch_0"``."""
    t = mutation.target
    if mutation.kind == "depth":
        where = f"after {arch.blocks[t - 1].name}" if t > 0 else "after the stem"
        return f"{new_block_name(arch)} (gated) {where}"
    if mutation.kind == "width":
        old = arch.stage_channels[t]
        return f"stage {t}: {old} -> {widened_channels(old, mutation.factor)} channels"
    if mutation.kind != "branch":
        raise ValueError(f"the chain space has no {mutation.kind!r} growth; it grows depth, width or branch")
    return f"{arch.blocks[t].name}: branch_{arch.blocks[t].branches}"


def choose_target(arch: ChainArchitecture, kind: str) -> int:
    """Where a growth of ``kind`` goes (the rule in the module docstring)."""
    stages = range(len(arch.stage_channels))
    if kind == "depth":
        counts = [sum(b.stage == s for b in arch.blocks) for s in stages]
        # A stage s > 0 without blocks cannot take a gated block: its first block changes the resolution.
        s = min((s for s in stages if s == 0 or counts[s]), key=lambda s: (counts[s], -s))
        return sum(counts[: s + 1])  # after the stage's last block
    if kind == "width":
        return min(stages, key=lambda s: (arch.stage_channels[s] / (arch.init_channels * 2**s), -s))
    if kind != "branch":
        raise ValueError(f"the chain space has no {kind!r} growth; it grows depth, width or branch")
    return min(range(len(arch.blocks)), key=lambda i: (arch.blocks[i].branches, -i))


def exceeded_layout_cap(arch: ChainArchitecture, caps: GrowthCaps) -> str | None:
    """``--max-width`` or ``--max-branches``, if ``arch`` breaks it."""
    initial = [arch.init_channels * 2**s for s in range(len(arch.stage_channels))]
    if max(c / i for c, i in zip(arch.stage_channels, initial, strict=True)) > caps.max_width:
        return f"--max-width {caps.max_width}x the initial channels"
    if max((b.branches for b in arch.blocks), default=0) > caps.max_branches:
        return f"--max-branches {caps.max_branches} per block"
    return None
