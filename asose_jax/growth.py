"""Function-preserving growth of the search network, with optimiser-state surgery, and the growth rule.

The chain space has three mutations of its ``ChainArchitecture`` (``mutate_architecture``):

* ``depth``: insert a gated block ``x + g * F(x)`` (``g = 0``) at the end of a stage; it gets its own row
  of architecture logits, drawn like the others;
* ``width``: widen a stage by a factor, Net2WiderNet style: new channel ``j`` copies old channel
  ``mapping[j]`` everywhere in the stage (stem or preprocessing conv, every candidate op, BatchNorm
  parameters and statistics), and every weight that reads the stage's channels (inside the stage, the next
  stage's preprocessing conv, the classifier) is divided by the replication count of its input channel;
  optional noise on the copies' incoming weights breaks their symmetry;
* ``branch``: add a zero-gated parallel mixed op to a block, with its own logit row.

The nb201 space has ``depth``: a gated cell ``x + g * cell(x)`` appended to a stage, sharing the cell's
logits. The darts space has none (``growth_kinds`` says why).

``grow`` applies one to the whole search state, as a pure function
``(model, state, mutation, key) -> (grown model, grown state)``. The grown network computes exactly the
old function (width with noise 0 up to float rounding), in training and in evaluation mode. Old
architecture logits and the optimiser states of old parameters (momentum, Adam moments, Adam's step
count) are carried over bit for bit; new parameters get zero optimiser state; the global step, and with
it the learning rate and the temperature, continue along the run's schedule.

The rule (``next_mutation``): growth is due at the cycles that ``--grow-at`` forces, or (``--growth auto``)
when the cycle-final validation accuracy has plateaued over ``--growth-window`` cycles since the last
growth. The kind is ``--growth-strategy``, or with ``auto`` the next in the rotation depth -> width ->
branch after the previous growth's kind, skipping kinds the space lacks or whose result would pass a cap
(``--max-depth`` blocks, or cells per stage for nb201; ``--max-width`` times the initial channels of any
stage; ``--max-branches`` per block; ``--max-params`` weights). Where: depth goes to the stage with the
fewest blocks (nb201: grown cells), width to the stage with the smallest width relative to its initial
one, a branch to the block with the fewest branches; ties go to the later stage or block (lower
resolution, cheaper).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from asose_jax.initializers import init_variables
from asose_jax.spaces import init_arch_logits, uniform_arch_weights
from asose_jax.spaces.chain import ChainArchitecture, ChainBlockSpec, ChainNetwork
from asose_jax.spaces.nb201 import NB201Network

GROWTH_KINDS = ("depth", "width", "branch")
GROWTH_MODES = ("auto", "off")
STRATEGIES = ("auto", *GROWTH_KINDS)


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One growth step. ``target``: the insertion index of the new block (depth), the stage (width) or the
    block index (branch); ``factor``: the width multiplier (width only)."""

    kind: str
    target: int
    factor: float = 1.0

    def __post_init__(self):
        if self.kind not in GROWTH_KINDS:
            raise ValueError(f"unknown growth kind {self.kind!r}; use one of {', '.join(GROWTH_KINDS)}")


def _new_block_name(arch: ChainArchitecture) -> str:
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
        blocks.insert(t, ChainBlockSpec(_new_block_name(arch), stage, gated=True))
        return dataclasses.replace(arch, blocks=tuple(blocks))
    if mutation.kind == "width":
        if not 0 <= t < len(arch.stage_channels):
            raise ValueError(f"width growth: stage {t} outside 0..{len(arch.stage_channels) - 1}")
        if not mutation.factor > 1:
            raise ValueError(f"width growth needs a factor > 1, got {mutation.factor}")
        channels = list(arch.stage_channels)
        channels[t] = widened_channels(channels[t], mutation.factor)
        return dataclasses.replace(arch, stage_channels=tuple(channels))
    if not 0 <= t < len(blocks):
        raise ValueError(f"branch growth: block {t} outside 0..{len(blocks) - 1}")
    blocks[t] = dataclasses.replace(blocks[t], branches=blocks[t].branches + 1)
    return dataclasses.replace(arch, blocks=tuple(blocks))


def growth_kinds(model: nn.Module) -> tuple[str, ...]:
    """The mutations ``model``'s space supports: all three for chain, depth for nb201 (a gated cell at the end
    of a stage), none for darts (a cell reads the two cells before it, so an inserted cell would rewire the
    next one: no function-preserving form)."""
    if isinstance(model, ChainNetwork):
        return GROWTH_KINDS
    return ("depth",) if isinstance(model, NB201Network) else ()


def architecture_json(model: nn.Module) -> dict | None:
    """What growth can change about ``model``, as JSON (None for spaces without growth)."""
    if isinstance(model, ChainNetwork):
        return model.arch.to_json()
    return {"grown_cells": list(model.grown_cells)} if isinstance(model, NB201Network) else None


def with_architecture(model: nn.Module, data: dict | None) -> nn.Module:
    """``model`` rebuilt with the grown architecture ``data`` (``architecture_json``'s output)."""
    if data is None:
        return model
    if isinstance(model, ChainNetwork):
        return model.clone(arch=ChainArchitecture.from_json(data))
    return model.clone(grown_cells=tuple(int(n) for n in data["grown_cells"]))


def grown_model(model: nn.Module, mutation: Mutation) -> nn.Module:
    """``model`` with ``mutation`` applied to its architecture (no weights involved)."""
    if mutation.kind not in growth_kinds(model):
        raise ValueError(f"{mutation.kind} growth does not apply to {type(model).__name__}")
    if isinstance(model, ChainNetwork):
        return model.clone(arch=mutate_architecture(model.arch, mutation))
    if not 0 <= mutation.target < len(model.grown_cells):
        raise ValueError(f"depth growth: stage {mutation.target} outside 0..{len(model.grown_cells) - 1}")
    cells = list(model.grown_cells)
    cells[mutation.target] += 1
    return model.clone(grown_cells=tuple(cells))


def depth_of(model: nn.Module) -> int:
    """Blocks (chain) or the deepest stage's cells (nb201): what ``--max-depth`` caps."""
    if isinstance(model, ChainNetwork):
        return model.arch.depth
    return model.cells_per_stage + max(model.grown_cells)


def describe(model: nn.Module, mutation: Mutation) -> str:
    """A short description, e.g. ``"block_4 (gated) after block_1"`` or ``"stage 0: 16 -> 24 channels"``."""
    t = mutation.target
    if isinstance(model, NB201Network):
        return f"stage_{t}_grown_{model.grown_cells[t]} (gated) at the end of stage {t}"
    arch = model.arch
    if mutation.kind == "depth":
        where = f"after {arch.blocks[t - 1].name}" if t > 0 else "after the stem"
        return f"{_new_block_name(arch)} (gated) {where}"
    if mutation.kind == "width":
        old = arch.stage_channels[t]
        return f"stage {t}: {old} -> {widened_channels(old, mutation.factor)} channels"
    return f"{arch.blocks[t].name}: branch_{arch.blocks[t].branches}"


@dataclasses.dataclass(frozen=True)
class Widening:
    """Net2WiderNet spreading of one stage's channels: new channel ``j`` copies old channel ``mapping[j]``
    (``mapping[:old] = 0..old-1``). ``noise``: relative Gaussian noise on the copies' incoming weights."""

    old: int
    mapping: np.ndarray
    noise: float = 0.0
    key: jax.Array | None = None

    @classmethod
    def random(cls, old: int, new: int, key: jax.Array, noise: float = 0.0) -> Widening:
        """Copies of distinct random channels while ``new <= 2 * old``, with repetition beyond."""
        map_key, noise_key = jax.random.split(key)
        extra = np.asarray(jax.random.choice(map_key, old, (new - old,), replace=new - old > old))
        return cls(old, np.concatenate([np.arange(old), extra]), noise, noise_key)

    def apply(self, path: tuple[str, ...], leaf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """``leaf`` spread to ``shape`` along every axis whose size changed (old -> new channels).

        A kernel's input axis (second to last) is divided by the replication counts, so each old input
        channel contributes once in total; every other axis is copied.
        """
        new = len(self.mapping)
        counts = np.bincount(self.mapping, minlength=self.old)[self.mapping].astype(leaf.dtype)
        out, changed = np.asarray(leaf), [a for a in range(leaf.ndim) if leaf.shape[a] != shape[a]]
        for axis in changed:
            if (leaf.shape[axis], shape[axis]) != (self.old, new):
                raise ValueError(
                    f"width growth: {'/'.join(path)} axis {axis} goes {leaf.shape[axis]} -> {shape[axis]}, "
                    f"not {self.old} -> {new}"
                )
            out = np.take(out, self.mapping, axis=axis)
            if path[-1] == "kernel" and axis == leaf.ndim - 2:
                out = out / counts.reshape((-1,) + (1,) * (leaf.ndim - 1 - axis))
        if self.noise and path[-1] == "kernel" and leaf.ndim - 1 in changed:
            leaf_key = jax.random.fold_in(self.key, zlib.crc32("/".join(path).encode()) % 2**31)  # stable across runs
            eps = np.asarray(jax.random.normal(leaf_key, out.shape))
            out = out.copy()
            out[..., self.old :] *= 1 + self.noise * eps[..., self.old :]
        return out.astype(leaf.dtype)


def carry_over(old: dict, fresh: dict, widening: Widening | None = None) -> dict:
    """``fresh`` (the grown network's initial variables) with every entry the old network had set to its
    old value: copied where the shape is unchanged, spread by ``widening`` where a stage grew."""
    old_flat, out = flatten_dict(old), {}
    for path, new in flatten_dict(fresh).items():
        if path not in old_flat:
            out[path] = np.asarray(new)
        elif old_flat[path].shape == new.shape:
            out[path] = old_flat[path]
        elif widening is None:
            raise ValueError(f"growth changed the shape of {'/'.join(path)} without a width mutation")
        else:
            out[path] = widening.apply(path, old_flat[path], new.shape)
    if missing := set(old_flat) - set(out):
        raise ValueError(f"growth lost entries: {sorted('/'.join(p) for p in missing)}")
    return unflatten_dict(out)


def place(old: dict, base: dict, rows: dict[tuple[str, ...], np.ndarray] | None = None) -> dict:
    """``base`` (a params-shaped tree of the grown network) with each old entry written at its old position:
    the leading indices along every axis, or for a path in ``rows`` the given new row of each old row."""
    old_flat, out = flatten_dict(old), {}
    for path, new in flatten_dict(base).items():
        out[path] = np.array(new)
        if path in old_flat:
            value = np.asarray(old_flat[path])
            index = (rows[path],) if rows and path in rows else tuple(slice(0, n) for n in value.shape)
            out[path][index] = value
    return unflatten_dict(out)


def zeros_like(tree: dict) -> dict:
    return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), tree)


def carry_optimizer_state(opt_state, params_like, place: Callable[[dict], dict]):
    """``place`` applied to every params-shaped subtree of an optax state (momentum, Adam moments); other
    leaves (Adam's step count) are kept."""
    treedef = jax.tree.structure(params_like)

    def is_params(x) -> bool:
        return isinstance(x, dict) and jax.tree.structure(x) == treedef

    return jax.tree.map(lambda x: place(x) if is_params(x) else x, opt_state, is_leaf=is_params)


def _row_positions(old: nn.Module, new: nn.Module) -> dict[tuple[str, ...], np.ndarray]:
    """For a chain, the row of the grown logits that each old logit row (edge) moves to; nb201 cells share
    the one logit array, which growth leaves as it is."""
    if not isinstance(old, ChainNetwork):
        return {}
    new_rows = {edge: r for r, edge in enumerate(new.arch.edge_rows())}
    return {("blocks",): np.array([new_rows[edge] for edge in old.arch.edge_rows()])}


def grow(
    model: nn.Module,
    state: dict,
    mutation: Mutation,
    key: jax.Array,
    arch_init_scale: float = 1e-3,
    noise: float = 0.0,
) -> tuple[nn.Module, dict]:
    """The grown model and search state (see the module docstring). ``state``: the dict of ``steps``."""
    grown = grown_model(model, mutation)
    init_key, logit_key, widen_key = jax.random.split(key, 3)
    fresh = init_variables(grown, init_key, (8, 8, 3), uniform_arch_weights(grown), train=False)
    widening = None
    if mutation.kind == "width":
        old, new = (m.arch.stage_channels[mutation.target] for m in (model, grown))
        widening = Widening.random(old, new, widen_key, noise)
    params = carry_over(jax.device_get(state["params"]), fresh["params"], widening)
    batch_stats = carry_over(jax.device_get(state["batch_stats"]), fresh["batch_stats"], widening)
    rows = _row_positions(model, grown)
    drawn = init_arch_logits(grown, logit_key, arch_init_scale)
    logits = place(jax.device_get(state["arch"]), jax.device_get(drawn), rows)
    weight_opt = carry_optimizer_state(jax.device_get(state["weight_opt"]), state["params"],
                                       lambda t: place(t, zeros_like(params)))  # fmt: skip
    arch_opt = carry_optimizer_state(jax.device_get(state["arch_opt"]), state["arch"],
                                     lambda t: place(t, zeros_like(logits), rows))  # fmt: skip
    grown_parts = {"params": params, "batch_stats": batch_stats, "arch": logits, "weight_opt": weight_opt,
                   "arch_opt": arch_opt}  # fmt: skip
    return grown, {**state, **jax.tree.map(jnp.asarray, grown_parts)}


def choose_target(model: nn.Module, kind: str) -> int:
    """Where a growth of ``kind`` goes (the rule in the module docstring)."""
    if isinstance(model, NB201Network):  # depth: the stage with the fewest grown cells
        return min(range(len(model.grown_cells)), key=lambda s: (model.grown_cells[s], -s))
    arch = model.arch
    stages = range(len(arch.stage_channels))
    if kind == "depth":
        counts = [sum(b.stage == s for b in arch.blocks) for s in stages]
        # A stage s > 0 without blocks cannot take a gated block: its first block changes the resolution.
        s = min((s for s in stages if s == 0 or counts[s]), key=lambda s: (counts[s], -s))
        return sum(counts[: s + 1])  # after the stage's last block
    if kind == "width":
        return min(stages, key=lambda s: (arch.stage_channels[s] / (arch.init_channels * 2**s), -s))
    return min(range(len(arch.blocks)), key=lambda i: (arch.blocks[i].branches, -i))


@dataclasses.dataclass(frozen=True)
class GrowthCaps:
    """Limits on the grown network: blocks, any stage's width over its initial one, branches per block, weights."""

    max_depth: int
    max_width: float
    max_branches: int
    max_params: int


def exceeded_cap(
    model: nn.Module, mutation: Mutation, caps: GrowthCaps, count_weights: Callable[[nn.Module], int]
) -> str | None:
    """The cap that ``mutation`` would break (a one-line description), or None."""
    grown = grown_model(model, mutation)
    if mutation.kind == "depth" and depth_of(grown) > caps.max_depth:
        return f"--max-depth {caps.max_depth}"
    if isinstance(grown, ChainNetwork):
        arch = grown.arch
        initial = [arch.init_channels * 2**s for s in range(len(arch.stage_channels))]
        if max(c / i for c, i in zip(arch.stage_channels, initial, strict=True)) > caps.max_width:
            return f"--max-width {caps.max_width}x the initial channels"
        if max((b.branches for b in arch.blocks), default=0) > caps.max_branches:
            return f"--max-branches {caps.max_branches} per block"
    if (weights := count_weights(grown)) > caps.max_params:
        return f"--max-params {caps.max_params} weights (the grown network would have {weights})"
    return None


def next_mutation(
    model: nn.Module,
    kinds: Sequence[str],
    caps: GrowthCaps,
    count_weights: Callable[[nn.Module], int],
    width_factor: float,
) -> tuple[Mutation | None, list[str]]:
    """The first of ``kinds`` that ``model``'s space supports and whose growth fits the caps, and the reasons
    the ones before it were passed over."""
    refused = []
    for kind in kinds:
        if kind not in growth_kinds(model):
            refused.append(f"{kind}: not a mutation of the {type(model).__name__}")
            continue
        mutation = Mutation(kind, choose_target(model, kind), width_factor if kind == "width" else 1.0)
        if (cap := exceeded_cap(model, mutation, caps, count_weights)) is None:
            return mutation, refused
        refused.append(f"{kind}: {cap}")
    return None, refused


def kinds_to_try(strategy: str, previous: str | None) -> tuple[str, ...]:
    """``(strategy,)``, or for ``auto`` the rotation depth -> width -> branch starting after ``previous``."""
    if strategy != "auto":
        return (strategy,)
    start = 0 if previous is None else (GROWTH_KINDS.index(previous) + 1) % len(GROWTH_KINDS)
    return GROWTH_KINDS[start:] + GROWTH_KINDS[:start]
