"""Discrete networks built from a genotype, for training from scratch (``experiments/cifar10_train.py``).

Every network is applied functionally as

    (logits, aux_logits), updates = net.apply(variables, images, train=True, drop_rate=r,
                                              rngs={"drop_path": key}, mutable=["batch_stats"])

``aux_logits`` is the auxiliary head's output in training when the network has one, else ``None``.
``drop_rate`` (a scalar, may be traced) is the drop-path probability; it acts only in training.
Ops carry affine BatchNorm, as in the evaluation networks of DARTS and NAS-Bench-201.

* ``chain``: the ASO-SE line of blocks, each edge (a block's op, its branches) its one chosen op;
* ``darts``: DARTS's ``NetworkCIFAR`` (stem 3C, reductions at 1/3 and 2/3, auxiliary head at 2/3);
* ``nb201``: the NAS-Bench-201 network (3 stages of cells, residual blocks between them).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.genotypes import ChainGenotype, DartsGenotype, Genotype, NB201Genotype, check_genotype
from asose_jax.operations import Identity, batch_norm, conv, make_op
from asose_jax.spaces.chain import chain_body
from asose_jax.spaces.darts import preprocess_inputs
from asose_jax.spaces.nb201 import macro_network

# space -> (default initial channels, default depth: blocks (chain: the genotype's), cells, cells per stage)
EVAL_DEFAULTS = {"chain": (32, None), "darts": (36, 20), "nb201": (16, 5)}


def drop_path(x: jax.Array, rate: jax.Array | float, key: jax.Array) -> jax.Array:
    """Zeroes whole examples with probability ``rate`` and rescales the rest by ``1 / (1 - rate)``.

    x: [B, ...]; one Bernoulli draw per example. ``rate = 0`` returns ``x`` exactly.
    """
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


class ChainNet(nn.Module):
    """The chain network of a genotype (``spaces.chain.chain_body``, each edge its chosen op), then a linear head.

    Grown genotypes keep their layout: stages and their relative widths, gated blocks (``x + g * F(x)``) and
    zero-gated branches, the gates initialised to zero and learned (ReZero style).
    """

    genotype: ChainGenotype
    init_channels: int = 32
    num_classes: int = 10

    @nn.compact
    def __call__(self, images: jax.Array, train: bool, drop_rate: jax.Array | float | None = None):
        arch = self.genotype.architecture(self.init_channels)
        features = chain_body(images, arch, self.genotype.edge_ops(), None, train)
        return nn.Dense(self.num_classes, name="classifier")(features), None


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
                op = make_op(name, c, 2 if self.reduction and j < 2 else 1, affine=True, op_name=f"op_{p}")
                h = op(states[j], train)
                if train and drop_rate is not None and not isinstance(op, Identity):
                    h = drop_path(h, drop_rate, self.make_rng("drop_path"))
                total = h if total is None else total + h
            states.append(total)
        return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier for 8x8 features: ReLU, 5x5 avg pool (stride 3), 1x1 conv 128,
    BN, ReLU, 2x2 conv 768, BN, ReLU, linear."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
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

    @nn.compact
    def __call__(self, images: jax.Array, train: bool, drop_rate: jax.Array | float | None = None):
        c = self.init_channels
        s0 = s1 = batch_norm(train, affine=True, name="stem_bn")(conv(3 * c, (3, 3), name="stem_conv")(images))
        reductions = {self.layers // 3, 2 * self.layers // 3}
        reduction_prev, aux_logits = False, None
        for i in range(self.layers):
            reduction = i in reductions
            c = c * 2 if reduction else c
            cell, concat = (
                (self.genotype.reduce, self.genotype.reduce_concat)
                if reduction
                else (self.genotype.normal, self.genotype.normal_concat)
            )
            s0, s1 = (
                s1,
                DartsCell(cell, concat, c, reduction, reduction_prev, name=f"cell_{i}")(s0, s1, train, drop_rate),
            )
            reduction_prev = reduction
            if i == 2 * self.layers // 3 and self.auxiliary and (train or self.is_initializing()):
                aux_logits = AuxiliaryHead(self.num_classes, name="auxiliary_head")(s1, train)
        logits = nn.Dense(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))
        return logits, aux_logits if train else None


class NB201Cell(nn.Module):
    """Node i = sum over its (op, j) of op(node j); ``none`` edges contribute nothing. Output: the last node."""

    genotype: NB201Genotype
    channels: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        nodes = [x]
        for i, node in enumerate(self.genotype.nodes, start=1):
            outs = [
                make_op(op, self.channels, 1, affine=True, op_name=f"edge_{i}_{j}")(nodes[j], train)
                for op, j in node
                if op != "none"
            ]
            nodes.append(sum(outs[1:], outs[0]) if outs else jnp.zeros_like(x))
        return nodes[-1]


class NB201Net(nn.Module):
    """Stem conv3x3 + BN, 3 stages of ``cells_per_stage`` cells at C, 2C, 4C with residual blocks
    between, BN, ReLU, pool, linear (the NAS-Bench-201 evaluation network)."""

    genotype: NB201Genotype
    init_channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10

    @nn.compact
    def __call__(self, images: jax.Array, train: bool, drop_rate: jax.Array | float | None = None):
        def cell(x, channels, name):
            return NB201Cell(self.genotype, channels, name=name)(x, train)

        return macro_network(images, self.init_channels, self.cells_per_stage, self.num_classes, cell, train), None


def build_network(
    genotype: Genotype,
    init_channels: int | None = None,
    depth: int | None = None,
    num_classes: int = 10,
    auxiliary: bool = False,
) -> nn.Module:
    """The discrete network of ``genotype``; ``None`` sizes take the space's evaluation defaults
    (``EVAL_DEFAULTS``). ``depth``: cells (darts) or cells per stage (nb201); a chain's depth is its
    genotype's. ``auxiliary`` exists only for darts."""
    genotype = check_genotype(genotype)
    space = {ChainGenotype: "chain", DartsGenotype: "darts", NB201Genotype: "nb201"}[type(genotype)]
    default_channels, default_depth = EVAL_DEFAULTS[space]
    channels = default_channels if init_channels is None else init_channels
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"init_channels must be a positive integer, got {channels!r}")
    if auxiliary and space != "darts":
        raise ValueError(f"the auxiliary head exists only for darts networks, not {space}; set auxiliary weight 0")
    if space == "chain":
        if depth is not None and depth != len(genotype.ops):
            raise ValueError(f"a chain network's depth is its genotype's ({len(genotype.ops)} ops), got {depth}")
        return ChainNet(genotype, channels, num_classes)
    depth = default_depth if depth is None else depth
    if not isinstance(depth, int) or depth < (3 if space == "darts" else 1):
        raise ValueError(f"depth must be an integer >= {3 if space == 'darts' else 1} for {space}, got {depth!r}")
    if space == "darts":
        return DartsNet(genotype, channels, depth, num_classes, auxiliary)
    return NB201Net(genotype, channels, depth, num_classes)
