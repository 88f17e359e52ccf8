"""Learning-rate and temperature schedules: pure functions of the global step."""

from __future__ import annotations

import jax.numpy as jnp
import optax

TEMPERATURE_SCHEDULES = ("exponential", "linear", "constant")


def temperature_schedule(kind: str, tau_max: float, tau_min: float, total_steps: int) -> optax.Schedule:
    """Gumbel temperature at global step ``t``, annealed from ``tau_max`` to ``tau_min``.

    With ``r = min(t / total_steps, 1)``:
    exponential ``tau_max * (tau_min / tau_max) ** r``; linear ``tau_max + (tau_min - tau_max) * r``;
    constant ``tau_max``.
    """
    if kind not in TEMPERATURE_SCHEDULES:
        raise ValueError(f"unknown temperature schedule {kind!r}; use one of {', '.join(TEMPERATURE_SCHEDULES)}")
    if not 0 < tau_min <= tau_max:
        raise ValueError(f"temperatures need 0 < tau_min <= tau_max, got tau_min={tau_min}, tau_max={tau_max}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")

    def schedule(step):
        r = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
        if kind == "exponential":
            return tau_max * (tau_min / tau_max) ** r
        if kind == "linear":
            return tau_max + (tau_min - tau_max) * r
        return jnp.full_like(r, tau_max)

    return schedule


def learning_rate_schedule(lr: float, lr_min: float, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """Linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps``, then cosine decay to
    ``lr_min`` at ``total_steps``, then ``lr_min``."""
    if lr <= 0 or lr_min < 0 or lr_min > lr:
        raise ValueError(f"learning rates need 0 <= lr_min <= lr and lr > 0, got lr={lr}, lr_min={lr_min}")
    if not 0 <= warmup_steps < max(total_steps, 1):
        raise ValueError(f"warmup_steps must lie in [0, total_steps={total_steps}), got {warmup_steps}")
    cosine = optax.cosine_decay_schedule(lr, max(total_steps - warmup_steps, 1), alpha=lr_min / lr)
    if not warmup_steps:
        return cosine
    warmup = optax.linear_schedule(lr / warmup_steps, lr, warmup_steps)
    return optax.join_schedules([warmup, cosine], [warmup_steps])
