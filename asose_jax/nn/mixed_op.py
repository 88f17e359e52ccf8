"""The mixed operation on one edge of a search space."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict

from asose_jax.nn.initializers import SCANNED
from asose_jax.nn.operations import check_op_names, make_op
from asose_jax.nn.scanned import stacked_scan


class MixedOp(nn.Module):
    """Weighted sum of candidate ops, or the one op a one-hot weight vector selects.

    ``weights``: [K], one entry per name in ``op_names``.

    * ``single_path=False``: ``y = sum_k weights[k] * op_k(x)`` (DARTS, soft Gumbel).
      ``none`` contributes exact zeros and is not evaluated.
    * ``single_path=True`` (GDAS): ``weights`` must be one-hot in value (a
      straight-through sample). Only ``op_i``, ``i = argmax(weights)``, runs,
      through ``lax.switch``, and, as GDAS computes it,
      ``y = weights[i] * op_i(x) + sum_{k != i} weights[k]``. The added scalars are
      exactly zero in value, but each passes ``sum(dL/dy)`` back to its weight, so
      every logit of the edge gets a gradient whichever op is sampled, ``none``
      (whose output, and so its own weight's gradient, is zero) included.

    Where ``branches_may_deadlock()`` (several CPU devices), the single path is computed without
    ``lax.switch``: every op runs, the chosen one's output is kept by a one-hot mask, and the other ops'
    BatchNorm statistics are put back, so values, gradients and state equal the switch's.
    """

    channels: int
    stride: int
    op_names: Sequence[str]

    def setup(self):
        names = check_op_names(self.op_names)
        self.ops = [make_op(n, self.channels, self.stride, affine=False, op_name=n) for n in names]

    def __call__(self, x: jax.Array, weights: jax.Array, train: bool, single_path: bool = False) -> jax.Array:
        weights = jnp.asarray(weights)  # NumPy weights (a genotype's) cannot be indexed by a traced argmax
        if weights.shape != (len(self.op_names),):
            raise ValueError(f"mixed op expects weights of shape ({len(self.op_names)},), got {weights.shape}")
        if not single_path:
            outs = [
                w_op * op(x, train) for w_op, op, n in zip(weights, self.ops, self.op_names, strict=True) if n != "none"
            ]
            if not outs:
                return self.ops[0](x, train)
            return sum(outs[1:], outs[0])

        if branches_may_deadlock():
            return self._masked_single_path(x, weights, train)
        branches = [lambda mdl, x, k=k: mdl.ops[k](x, train) for k in range(len(self.ops))]
        if self.is_initializing():  # create every op's variables, so that all branches match
            for branch in branches:
                branch(self, x)
        index = jnp.argmax(weights)
        unchosen = jnp.sum(weights) - weights[index]  # 0 in value, gradient 1 for every k != index
        return nn.switch(index, branches, self, x) * weights[index] + unchosen

    def _masked_single_path(self, x: jax.Array, weights: jax.Array, train: bool) -> jax.Array:
        """``lax.switch``'s single path as a masked sum over every op (see the class docstring)."""
        index = jnp.argmax(weights)
        chosen = jax.nn.one_hot(index, len(self.ops), dtype=weights.dtype)
        before = flatten_dict(self.variables.get("batch_stats", {}))  # a snapshot: the view changes as ops run
        outs = [op(x, train) for op in self.ops]
        kept = sum(c * w * out for c, w, out in zip(chosen, weights, outs, strict=True))
        if train and before and self.is_mutable_collection("batch_stats"):
            after = flatten_dict(self.variables["batch_stats"])
            for path, old in before.items():
                scope = self.scope
                for name in path[:-1]:
                    scope = scope.push(name, reuse=True)
                keep_new = chosen[self.op_names.index(path[0])] > 0
                scope.put_variable("batch_stats", path[-1], jnp.where(keep_new, after[path], old))
        return kept + jnp.sum((1.0 - chosen) * weights)


class EdgeStep(MixedOp):
    """A mixed op as a scan body over a cell's edges. Carry ``nodes``: [M, N, H, W, C], each node's sum so far; per
    edge ``(weights [K], source, target)``. Reads ``inputs[source]`` or, when ``inputs`` is None,
    ``nodes[source]``, and adds its output to ``nodes[target]``."""

    def __call__(self, nodes, edge, inputs, train: bool, single_path: bool):
        weights, source, target = edge
        x = (nodes if inputs is None else inputs)[source]
        return nodes.at[target].add(super().__call__(x, weights, train, single_path)), None


def scanned_edges(
    nodes: jax.Array,
    edges: Sequence[tuple[int, int]],
    weights: jax.Array,
    inputs: jax.Array | None,
    mixed_op: dict,
    train: bool,
    single_path: bool,
    name: str,
) -> jax.Array:
    """``nodes[i] += MixedOp_e(x_j)`` for every edge ``e = (i, j)`` in order, through one compiled body (``nn.scan``
    over the edges' stacked variables, module ``{name}_scan``); called inside a compact module.

    ``nodes``: [M, N, H, W, C]; ``x_j`` is ``inputs[j]`` or, if ``inputs`` is None, ``nodes[j]`` (so an edge must come
    after every edge into its source node); ``weights``: [E, K], the edges' rows; ``mixed_op``: the ``MixedOp``
    attributes (``channels``, ``stride``, ``op_names``).
    """
    sources, targets = (jnp.array([edge[k] for edge in edges]) for k in (1, 0))
    scan = stacked_scan(EdgeStep, len(edges), (0, nn.broadcast, nn.broadcast, nn.broadcast), static_argnums=(4, 5))
    return scan(**mixed_op, name=name + SCANNED)(nodes, (weights, sources, targets), inputs, train, single_path)[0]


def branches_may_deadlock() -> bool:
    """Whether ``lax.switch`` branches that hold cross-device collectives are unsafe here.

    XLA's CPU runtime (jaxlib 0.10) runs the collectives inside a conditional branch concurrently with those
    outside it (the BatchNorm statistics of a batch sharded over devices, and the gradients' all-reduces);
    with more devices than cores, the devices then wait at different all-reduces until the rendezvous aborts
    the process after 40 s (seen with 8 CPU devices on 2 cores). GPU and TPU keep the switch.
    """
    return jax.default_backend() == "cpu" and jax.device_count() > 1
