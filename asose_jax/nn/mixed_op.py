"""The mixed operation on one edge of a search space."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from asose_jax.nn.operations import check_op_names, make_op


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
    """

    channels: int
    stride: int
    op_names: Sequence[str]

    def setup(self):
        names = check_op_names(self.op_names)
        self.ops = [make_op(n, self.channels, self.stride, affine=False, op_name=n) for n in names]

    def __call__(self, x: jax.Array, weights: jax.Array, train: bool, single_path: bool = False) -> jax.Array:
        if weights.shape != (len(self.op_names),):
            raise ValueError(f"mixed op expects weights of shape ({len(self.op_names)},), got {weights.shape}")
        if not single_path:
            outs = [
                w_op * op(x, train) for w_op, op, n in zip(weights, self.ops, self.op_names, strict=True) if n != "none"
            ]
            if not outs:
                return self.ops[0](x, train)
            return sum(outs[1:], outs[0])

        branches = [lambda mdl, x, k=k: mdl.ops[k](x, train) for k in range(len(self.ops))]
        if self.is_initializing():  # create every op's variables, so that all branches match
            for branch in branches:
                branch(self, x)
        index = jnp.argmax(weights)
        unchosen = jnp.sum(weights) - weights[index]  # 0 in value, gradient 1 for every k != index
        return nn.switch(index, branches, self, x) * weights[index] + unchosen
