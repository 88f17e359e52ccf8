"""Repeated modules through one compiled body: ``nn.scan`` over variables stacked along a leading axis.

Cells of one shape (a NAS-Bench-201 stage's, a run of DARTS normal cells) or a DARTS cell's edges are traced and
compiled once instead of once per copy. The scanned module's variables (``params``, ``batch_stats``, and the
``ACTIVATIONS`` that ``ReLU`` sows where a caller collects them) gain a leading axis of ``length``.

With the CPU implementation (``resolve_impl("auto") == "cpu"``) the body is rematerialised (``nn.remat``): its
backward pass recomputes the body's forward pass instead of reading every intermediate that the scan would stack
for it. XLA's CPU backend writes and reads those stacks slowly (docs/performance.md). On GPU and TPU the scan is
left as it is (the stacking is cheap there and remat would add a forward pass).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from asose_jax.nn.conv import resolve_impl
from asose_jax.nn.operations import ACTIVATIONS


def stacked_scan(
    body: type[nn.Module],
    length: int,
    in_axes: Sequence,
    static_argnums: tuple[int, ...],
    split_rngs: Sequence[str] = ("params",),
) -> type[nn.Module]:
    """``body`` scanned ``length`` times over its stacked variables. ``body.__call__(self, carry, *xs)`` returns
    ``(carry, None)``; ``in_axes`` maps the ``xs`` (``nn.broadcast`` or an axis); ``static_argnums`` are the
    arguments (self is 0, the carry 1) that are Python values (``train``), static under remat."""
    if resolve_impl("auto") == "cpu":
        body = nn.remat(body, static_argnums=static_argnums, prevent_cse=False)
    stacked = {"params": 0, "batch_stats": 0, ACTIVATIONS: 0}
    return nn.scan(body, variable_axes=stacked, split_rngs=dict.fromkeys(split_rngs, True), in_axes=tuple(in_axes),
                   length=length)  # fmt: skip
