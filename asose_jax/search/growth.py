"""Function-preserving growth of the search network, with optimiser-state surgery, and the growth rule.

Each space says which mutations it has and where they go (``SearchSpace`` growth methods). The chain space
has three mutations of its ``ChainArchitecture`` (``asose_jax.spaces.chain.growth``):

* ``depth``: insert a gated block ``x + g * F(x)`` (``g = 0``) at the end of a stage; it gets its own row
  of architecture logits, drawn like the others;
* ``width``: widen a stage by a factor, Net2WiderNet style: new channel ``j`` copies old channel
  ``mapping[j]`` everywhere in the stage (stem or preprocessing conv, every candidate op, BatchNorm
  parameters and statistics), and every weight that reads the stage's channels (inside the stage, the next
  stage's preprocessing conv, the classifier) is divided by the replication count of its input channel;
  optional noise on the copies' incoming weights breaks their symmetry;
* ``branch``: add a zero-gated parallel mixed op to a block, with its own logit row.

The nb201 space has ``depth``: a gated cell ``x + g * cell(x)`` appended to a stage, sharing the cell's
logits. The darts space has none (``asose_jax.spaces.darts.space`` says why).

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

from asose_jax.nn.initializers import init_variables
from asose_jax.spaces import init_arch_logits, space_of, uniform_arch_weights
from asose_jax.spaces.base import GROWTH_KINDS, GrowthCaps, Mutation

GROWTH_MODES = ("auto", "off")
STRATEGIES = ("auto", *GROWTH_KINDS)


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


def grown_model(model: nn.Module, mutation: Mutation) -> nn.Module:
    """``model`` with ``mutation`` applied by its space; a kind the space does not declare raises ValueError."""
    space = space_of(model)
    if mutation.kind not in space.growth_kinds:
        raise ValueError(
            f"the {space.name} space has no {mutation.kind!r} growth; it has {', '.join(space.growth_kinds) or 'none'}"
        )
    return space.grown_model(model, mutation)


def grow(
    model: nn.Module,
    state: dict,
    mutation: Mutation,
    key: jax.Array,
    arch_init_scale: float = 1e-3,
    noise: float = 0.0,
) -> tuple[nn.Module, dict]:
    """The grown model and search state (see the module docstring). ``state``: the dict of ``steps``."""
    space = space_of(model)
    grown = grown_model(model, mutation)
    init_key, logit_key, widen_key = jax.random.split(key, 3)
    fresh = init_variables(grown, init_key, (8, 8, 3), uniform_arch_weights(grown), train=False)
    widening = None
    if mutation.kind == "width":
        old, new = (space.stage_channels(m, mutation.target) for m in (model, grown))
        widening = Widening.random(old, new, widen_key, noise)
    params = carry_over(jax.device_get(state["params"]), fresh["params"], widening)
    batch_stats = carry_over(jax.device_get(state["batch_stats"]), fresh["batch_stats"], widening)
    rows = space.logit_rows(model, grown)
    drawn = init_arch_logits(grown, logit_key, arch_init_scale)
    logits = place(jax.device_get(state["arch"]), jax.device_get(drawn), rows)
    weight_opt = carry_optimizer_state(jax.device_get(state["weight_opt"]), state["params"],
                                       lambda t: place(t, zeros_like(params)))  # fmt: skip
    arch_opt = carry_optimizer_state(jax.device_get(state["arch_opt"]), state["arch"],
                                     lambda t: place(t, zeros_like(logits), rows))  # fmt: skip
    grown_parts = {"params": params, "batch_stats": batch_stats, "arch": logits, "weight_opt": weight_opt,
                   "arch_opt": arch_opt}  # fmt: skip
    return grown, {**state, **jax.tree.map(jnp.asarray, grown_parts)}


def exceeded_cap(
    model: nn.Module, mutation: Mutation, caps: GrowthCaps, count_weights: Callable[[nn.Module], int]
) -> str | None:
    """The cap that ``mutation`` would break (a one-line description), or None."""
    space = space_of(model)
    grown = grown_model(model, mutation)
    if mutation.kind == "depth" and space.depth_of(grown) > caps.max_depth:
        return f"--max-depth {caps.max_depth}"
    if cap := space.exceeded_layout_cap(grown, caps):
        return cap
    if (weights := count_weights(grown)) > caps.max_params:
        return f"--max-params {caps.max_params} weights (the grown network would have {weights})"
    return None


def planned_mutation(model: nn.Module, kind: str, width_factor: float) -> Mutation:
    """The ``kind`` growth of ``model`` as the rule applies it: the target its space chooses, ``width_factor``
    for a width growth."""
    return Mutation(kind, space_of(model).choose_target(model, kind), width_factor if kind == "width" else 1.0)


def next_mutation(
    model: nn.Module,
    kinds: Sequence[str],
    caps: GrowthCaps,
    count_weights: Callable[[nn.Module], int],
    width_factor: float,
) -> tuple[Mutation | None, list[str]]:
    """The first of ``kinds`` that ``model``'s space supports and whose growth fits the caps, and the reasons
    the ones before it were passed over."""
    refused, space = [], space_of(model)
    for kind in kinds:
        if kind not in space.growth_kinds:
            refused.append(f"{kind}: not a mutation of the {space.name} space")
            continue
        mutation = planned_mutation(model, kind, width_factor)
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
