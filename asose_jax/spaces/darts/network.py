"""DARTS's evaluation network ``NetworkCIFAR`` (stem 3C, reductions at 1/3 and 2/3, auxiliary head at 2/3)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.nn.initializers import SCANNED
from asose_jax.nn.operations import Identity, Pool, batch_norm, conv, make_op
from asose_jax.nn.scanned import stacked_scan
from asose_jax.spaces.darts.genotype import DartsGenotype
from asose_jax.spaces.darts.supernet import preprocess_inputs


def drop_path(x: jax.Array, rate: jax.Array | float, key: jax.Array) -> jax.Array:
    """Zeroes whole examples with probability ``rate`` and rescales the rest by ``1 / (1 - rate)``.

    x: [B, ...]; one Bernoulli draw per example. ``rate = 0`` returns ``x`` exactly.
    """
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


def _evaluation_op(name: str, channels: int, stride: int, op_name: str) -> nn.Module:
    """An op of DARTS's evaluation network: affine BatchNorm, and pools without the BatchNorm after them that the
    search's mixed op adds (so DARTS_V2 has DARTS's 3,349,342 weights at C=36, 20 cells)."""
    if name in ("avg_pool_3x3", "max_pool_3x3"):
        return Pool(name[:3], stride, normalize=False, name=op_name)
    return make_op(name, channels, stride, affine=True, op_name=op_name)


class DartsCell(nn.Module):
    """A DARTS evaluation cell: node i = op_a(state_a) + op_b(state_b), outputs concatenated."""

    cell: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]
    channels: int
    reduction: bool
    reduction_prev: bool

    @nn.compact
    def __call__(self, s0, s1, train: bool, drop_rate):
        c = self.channels
        states = list(preprocess_inputs(s0, s1, c, self.reduction_prev, True, train))
        for node in range(len(self.cell) // 2):
            total = None
            for p in (2 * node, 2 * node + 1):
                name, j = self.cell[p]
                op = _evaluation_op(name, c, 2 if self.reduction and j < 2 else 1, f"op_{p}")
                h = op(states[j], train)
                if train and drop_rate is not None and not isinstance(op, Identity):
                    h = drop_path(h, drop_rate, self.make_rng("drop_path"))
                total = h if total is None else total + h
            states.append(total)
        return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class DartsCellStep(DartsCell):
    """A normal cell as a scan body over the carry ``(s0, s1) -> (s1, cell(s0, s1))``."""

    def __call__(self, carry, train: bool, drop_rate):
        s0, s1 = carry
        return (s1, super().__call__(s0, s1, train, drop_rate)), None


def _repeats(i: int, reductions: set[int]) -> bool:
    """Whether cell ``i`` and the two before it are normal cells (of one stage): then cell ``i`` reads two ``4C``
    inputs and writes one, like every other such cell of its stage."""
    return i >= 2 and not {i, i - 1, i - 2} & reductions


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier for 8x8 features: ReLU, 5x5 avg pool (stride 3), 1x1 conv 128,
    BN, ReLU, 2x2 conv 768, BN, ReLU, linear."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if min(x.shape[1:3]) < 5:
            raise ValueError(
                f"the auxiliary head needs feature maps of at least 5x5 after two reductions (images of at least "
                f"20x20), got {x.shape[1]}x{x.shape[2]}; use --auxiliary-weight 0 for images this small"
            )
        x = nn.avg_pool(nn.relu(x), (5, 5), (3, 3), "VALID")
        x = nn.relu(batch_norm(train, affine=True)(conv(128, (1, 1))(x)))
        x = nn.relu(batch_norm(train, affine=True)(conv(768, (2, 2))(x)))
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class DartsNet(nn.Module):
    """DARTS ``NetworkCIFAR``: stem conv3x3 to 3C + BN, ``layers`` cells, pool, linear; the auxiliary
    head reads the cell at ``2 * layers // 3`` (created whenever ``auxiliary``, used only in training)."""

    genotype: DartsGenotype
    init_channels: int = 36
    layers: int = 20
    num_classes: int = 10
    auxiliary: bool = False
    scan_cells: bool = True

    @nn.compact
    def __call__(self, images: jax.Array, train: bool, drop_rate: jax.Array | float | None = None):
        c = self.init_channels
        s0 = s1 = batch_norm(train, affine=True, name="stem_bn")(conv(3 * c, (3, 3), name="stem_conv")(images))
        reductions = {self.layers // 3, 2 * self.layers // 3}
        aux_logits, i = None, 0
        while i < self.layers:
            reduction = i in reductions
            c = c * 2 if reduction else c
            # Cells whose inputs are both normal cells of their stage have one shape: a run of them is scanned.
            run = 1
            while (
                self.scan_cells and i + run < self.layers and _repeats(i, reductions) and _repeats(i + run, reductions)
            ):
                run += 1
            if run > 1:
                step = stacked_scan(DartsCellStep, run, (nn.broadcast, nn.broadcast), static_argnums=(2,),
                                    split_rngs=("params", "drop_path"))  # fmt: skip
                cell = step(self.genotype.normal, self.genotype.normal_concat, c, False, False,
                            name=f"cell_{i}_to_{i + run - 1}{SCANNED}")  # fmt: skip
                (s0, s1), _ = cell((s0, s1), train, drop_rate)
            else:
                ops, concat = ((self.genotype.reduce, self.genotype.reduce_concat) if reduction
                               else (self.genotype.normal, self.genotype.normal_concat))  # fmt: skip
                cell = DartsCell(ops, concat, c, reduction, i - 1 in reductions, name=f"cell_{i}")
                s0, s1 = s1, cell(s0, s1, train, drop_rate)
            i += run
            if i - 1 == 2 * self.layers // 3 and self.auxiliary and (train or self.is_initializing()):
                aux_logits = AuxiliaryHead(self.num_classes, name="auxiliary_head")(s1, train)
        logits = nn.Dense(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))
        return logits, aux_logits if train else None
