"""Search configuration as plain, validated data."""

from __future__ import annotations

import dataclasses

from asose_jax.nn.schedules import TEMPERATURE_SCHEDULES
from asose_jax.search.regularizers import ARCH_REGULARIZERS
from asose_jax.search.sampling import check_sampler
from asose_jax.spaces import SPACES

EVAL_WEIGHTS = ("softmax", "argmax")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything the pure search steps need. Defaults follow DARTS / ASO-SE.

    ``depth`` is blocks (chain), cells (darts) or cells per stage (nb201);
    ``None`` model fields take the space's defaults. ``total_steps`` is the
    length of the global learning-rate and temperature schedules.
    """

    space: str = "chain"
    init_channels: int | None = None
    depth: int | None = None
    num_classes: int = 10
    op_names: tuple[str, ...] | None = None
    # Architecture sampling.
    sampler: str = "gumbel_soft"
    tau_max: float = 5.0
    tau_min: float = 0.1
    tau_schedule: str = "exponential"
    eval_weights: str = "softmax"
    arch_init_scale: float = 1e-3
    # Schedules.
    total_steps: int = 1000
    # Weights: SGD with momentum, coupled L2 (PyTorch style), global-norm clipping, cosine LR.
    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # Architecture: Adam with coupled L2 (DARTS values); first or second order (unrolled).
    arch_lr: float = 3e-4
    arch_b1: float = 0.5
    arch_b2: float = 0.999
    arch_weight_decay: float = 1e-3
    arch_order: int = 1
    # Anti-collapse regulariser on the logits, added to the held-out loss (``asose_jax.search.regularizers``).
    arch_regularizer: str = "none"
    arch_reg_weight: float = 0.0
    # Randomness: "rbg" compiles much faster than "threefry2x32" on CPU; both are deterministic.
    seed: int = 0
    prng_impl: str = "rbg"

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"unknown search space {self.space!r}; use one of {', '.join(SPACES)}")
        check_sampler(self.sampler)
        if self.tau_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(f"unknown tau_schedule {self.tau_schedule!r}; use one of {TEMPERATURE_SCHEDULES}")
        if not 0 < self.tau_min <= self.tau_max:
            raise ValueError(f"temperatures need 0 < tau_min <= tau_max, got {self.tau_min}, {self.tau_max}")
        if self.eval_weights not in EVAL_WEIGHTS:
            raise ValueError(f"unknown eval_weights {self.eval_weights!r}; use one of {EVAL_WEIGHTS}")
        if self.arch_regularizer not in ARCH_REGULARIZERS:
            raise ValueError(
                f"unknown --arch-regularizer {self.arch_regularizer!r}; use one of {', '.join(ARCH_REGULARIZERS)}"
            )
        if not self.arch_reg_weight >= 0:
            raise ValueError(f"--arch-reg-weight must be >= 0, got {self.arch_reg_weight!r}")
        if self.arch_order not in (1, 2):
            raise ValueError(f"arch_order must be 1 (first order) or 2 (unrolled), got {self.arch_order}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("total_steps", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("weight_lr", "arch_lr", "grad_clip", "arch_init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("momentum", "arch_b1", "arch_b2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)!r}")
