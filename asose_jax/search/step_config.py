"""The maths of one search step (``SearchConfig``) as plain, validated data; the run around it is ``RunConfig``."""

from __future__ import annotations

import dataclasses

from asose_jax.nn.operations import OP_SETS
from asose_jax.nn.schedules import TEMPERATURE_SCHEDULES
from asose_jax.runtime.cli import setting
from asose_jax.runtime.memory import check_seed, check_size_limits
from asose_jax.search.regularizers import ARCH_REGULARIZERS
from asose_jax.search.sampling import SAMPLERS, check_sampler, uses_temperature
from asose_jax.spaces import SPACES

COMPUTED = ("num_classes", "total_steps")  # set by the search driver from the data and the cycle, not by the user


def parse_op_names(text: str) -> tuple[str, ...]:
    """``--ops``: an op set's name (``darts``) or comma-separated op names."""
    return tuple(OP_SETS[text]) if text in OP_SETS else tuple(name.strip() for name in text.split(","))


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything the pure search steps need. Defaults follow DARTS / ASO-SE.

    ``depth`` is blocks (chain), cells (darts) or cells per stage (nb201);
    ``None`` model fields take the space's defaults. ``total_steps`` (the length of the global
    learning-rate and temperature schedules) and ``num_classes`` are ``COMPUTED``: the search driver
    sets them from the data and the cycle, and saves them apart from the user's settings.
    """

    space: str = setting("chain", "search space", choices=SPACES)
    init_channels: int | None = setting(None, "channels of the first stage")
    depth: int | None = setting(None, "blocks (chain), cells (darts) or cells per stage (nb201)", aliases=("--layers",))
    num_classes: int = 10  # computed: set by the driver from the data
    scan_cells: bool | None = setting(
        None,
        "one compiled body for a stage's cells (nb201) or for a DARTS cell's edges: compiles 4-7x faster; unset: "
        "scanned, or a resumed run's own layout",
    )
    op_names: tuple[str, ...] | None = setting(
        None, f"candidate ops: an op set ({', '.join(OP_SETS)}) or comma-separated names", flag="--ops",
        metavar="OPS", parse=parse_op_names,
    )  # fmt: skip
    # Architecture sampling.
    sampler: str = setting(
        "gumbel_soft", "softmax (DARTS), gumbel_soft (ASO-SE), gumbel_hard (GDAS) or dirichlet", choices=SAMPLERS
    )
    tau_max: float = setting(5.0, "initial Gumbel temperature")
    tau_min: float = setting(0.1, "final Gumbel temperature")
    tau_schedule: str = setting("exponential", "temperature schedule", choices=TEMPERATURE_SCHEDULES)
    arch_init_scale: float = setting(1e-3, "std of the initial architecture logits")
    # Schedules.
    total_steps: int = 1000  # computed: set by the driver from the data size and the cycle
    # Weights: SGD with momentum, coupled L2 (PyTorch style), global-norm clipping, cosine LR.
    weight_lr: float = setting(0.025, "initial SGD learning rate (cosine schedule)")
    weight_lr_min: float = setting(0.001, "final SGD learning rate")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(3e-4, "coupled L2 on the weights")
    grad_clip: float = setting(5.0, "global-norm clip of the weight gradients")
    # Architecture: Adam with coupled L2 (DARTS values); first or second order (unrolled).
    arch_lr: float = setting(3e-4, "Adam learning rate of the architecture logits")
    arch_b1: float = setting(0.5, "Adam beta1 of the logits")
    arch_b2: float = setting(0.999, "Adam beta2 of the logits")
    arch_weight_decay: float = setting(1e-3, "coupled L2 on the logits")
    arch_order: int = setting(1, "1: first-order DARTS; 2: unrolled (second order)", metavar="{1,2}")
    # Anti-collapse regulariser on the logits, added to the held-out loss (``asose_jax.search.regularizers``).
    arch_regularizer: str = setting("none", "logit regulariser", choices=ARCH_REGULARIZERS)
    arch_reg_weight: float = setting(0.0, "its coefficient (beta: ramped from 0 to this)")
    # Randomness: "rbg" compiles much faster than "threefry2x32" on CPU; both are deterministic.
    seed: int = setting(0, "random seed (weights, logits, data order, samples)")
    prng_impl: str = "rbg"

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"unknown search space {self.space!r}; use one of {', '.join(SPACES)}")
        check_sampler(self.sampler)
        if self.tau_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(f"unknown tau_schedule {self.tau_schedule!r}; use one of {TEMPERATURE_SCHEDULES}")
        if not 0 < self.tau_min <= self.tau_max:
            raise ValueError(f"temperatures need 0 < tau_min <= tau_max, got {self.tau_min}, {self.tau_max}")
        if self.arch_regularizer not in ARCH_REGULARIZERS:
            raise ValueError(
                f"unknown --arch-regularizer {self.arch_regularizer!r}; use one of {', '.join(ARCH_REGULARIZERS)}"
            )
        if not self.arch_reg_weight >= 0:
            raise ValueError(f"--arch-reg-weight must be >= 0, got {self.arch_reg_weight!r}")
        if self.arch_order not in (1, 2):
            raise ValueError(f"arch_order must be 1 (first order) or 2 (unrolled), got {self.arch_order}")
        check_seed(self.seed)
        check_size_limits(self, ("init_channels", "depth"))
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


def check_given_settings(search: SearchConfig, given: set[str]) -> None:
    """Refuses settings the user gave (field names in ``given``) that ``search`` would silently ignore: a
    temperature with a sampler that uses none, a regulariser weight without a regulariser."""
    for name in ("tau_max", "tau_min", "tau_schedule"):
        if name in given and not uses_temperature(search.sampler):
            raise ValueError(
                f"--{name.replace('_', '-')} has no effect with --sampler {search.sampler}, which uses no "
                "temperature; drop it, or use --sampler gumbel_soft or gumbel_hard"
            )
    if "arch_reg_weight" in given and search.arch_regularizer == "none" and search.arch_reg_weight:
        raise ValueError(
            "--arch-reg-weight has no effect with --arch-regularizer none; drop it, or choose beta or dirichlet_kl"
        )
