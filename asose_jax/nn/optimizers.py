"""The two optimisers, as optax transformations over separate pytrees, configured by plain numbers.

PyTorch's ``SGD(weight_decay=wd)`` and ``Adam(weight_decay=wd)`` add ``wd * p``
to the gradient before the momentum or moment update (coupled L2), which is
``add_decayed_weights`` placed before ``trace`` / ``adam`` (not AdamW).
"""

from __future__ import annotations

import jax
import optax


def weight_optimizer(
    grad_clip: float, weight_decay: float, momentum: float, nesterov: bool = False
) -> optax.GradientTransformation:
    """Clip to global norm (``grad_clip`` 0: no clip), add ``wd * w``, (Nesterov) momentum; the step applies the
    learning rate.

    ``u = trace(clip(g) + wd * w)``; the step then sets ``w <- w - lr(t) * u``, so the learning rate is a pure
    function of the global step ``t``. The state is always ``(clip, decay, trace)``.
    """
    return optax.chain(
        optax.clip_by_global_norm(grad_clip) if grad_clip else optax.identity(),
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum, nesterov=nesterov),
    )


def arch_optimizer(lr: float, b1: float, b2: float, weight_decay: float) -> optax.GradientTransformation:
    """Adam on the logits with coupled L2 (DARTS: lr 3e-4, betas (0.5, 0.999), wd 1e-3)."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr, b1=b1, b2=b2))


def descend(params, updates, lr: jax.Array):
    """``params - lr * updates``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
