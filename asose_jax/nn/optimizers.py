"""The two optimisers, as optax transformations over separate pytrees.

PyTorch's ``SGD(weight_decay=wd)`` and ``Adam(weight_decay=wd)`` add ``wd * p``
to the gradient before the momentum or moment update (coupled L2), which is
``add_decayed_weights`` placed before ``trace`` / ``adam`` (not AdamW).
"""

from __future__ import annotations

import jax
import optax

from asose_jax.search.config import SearchConfig


def weight_optimizer(config: SearchConfig) -> optax.GradientTransformation:
    """Clip to global norm, add ``wd * w``, momentum. The learning rate is applied by the step.

    ``u = trace(clip(g) + wd * w)``; the step then sets ``w <- w - lr(t) * u``,
    so the learning rate is a pure function of the global step ``t``.
    """
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.add_decayed_weights(config.weight_decay),
        optax.trace(decay=config.momentum),
    )


def arch_optimizer(config: SearchConfig) -> optax.GradientTransformation:
    """Adam on the logits with coupled L2 (DARTS: lr 3e-4, betas (0.5, 0.999), wd 1e-3)."""
    return optax.chain(
        optax.add_decayed_weights(config.arch_weight_decay),
        optax.adam(config.arch_lr, b1=config.arch_b1, b2=config.arch_b2),
    )


def descend(params, updates, lr: jax.Array):
    """``params - lr * updates``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
