"""Training a discrete network from scratch as plain, validated data, and the two recipes.

* ``standard``: the DARTS evaluation protocol (SGD momentum 0.9, lr 0.025 cosine, weight decay 3e-4,
  batch 96, 600 epochs, cutout 16, auxiliary weight 0.4, drop-path 0.2, gradient clip 5), for
  comparison with published numbers.
* ``fast``: accuracy per accelerator-second, after the fastest CIFAR-10 trainers: large batches with a
  scaled learning rate and a short warm-up, Nesterov momentum, label smoothing, an EMA copy of the
  weights for evaluation, flip test-time augmentation, bfloat16 compute on GPU/TPU, data resident on
  the device with augmentation inside jit, and several steps per dispatch (``jax.lax.scan``).
"""

from __future__ import annotations

import dataclasses

from asose_jax.runtime.cli import setting
from asose_jax.runtime.input_pipeline import DATA_DIR_HELP, DATA_HELP, check_source
from asose_jax.runtime.memory import check_seed, check_size_limits
from asose_jax.runtime.rundir import MAX_SKIPPED_DEFAULT, MAX_SKIPPED_HELP, NAN_POLICIES, NAN_POLICY_HELP
from asose_jax.spaces.genotypes import PUBLISHED

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run of a discrete network. Errors name the command-line flag.

    The learning rate rises linearly over ``warmup_epochs`` and then follows a cosine to ``lr_min``.
    ``drop_path`` grows linearly from 0 to its value over the run (DARTS). ``ema_decay`` 0 disables
    the EMA copy; ``grad_clip`` 0 disables clipping. ``compute_dtype`` ``auto`` is bfloat16 on GPU and
    TPU and float32 on CPU; weights, optimiser state and BatchNorm statistics stay float32.
    """

    genotype: str = setting(
        "DARTS_V2", f"a genotype.json, a search's run directory, or a published cell: {', '.join(PUBLISHED)}",
        metavar="GENOTYPE",
    )  # fmt: skip
    recipe: str = "standard"  # chosen by --recipe, which sets the other defaults
    data: str = setting("cifar10", DATA_HELP, metavar="SOURCE")
    data_dir: str | None = setting(None, DATA_DIR_HELP, metavar="DIR")
    train_limit: int | None = setting(None, "keep only the first N training images")
    init_channels: int | None = setting(None, "channels of the first stage (default: darts 36, nb201 16, chain 32)")
    layers: int | None = setting(None, "cells (darts, default 20) or cells per stage (nb201, default 5)")
    scan_cells: bool = setting(True, "a stage's cells through one compiled body (nb201); --no-scan-cells unrolls them")
    epochs: int = setting(600, "training epochs")
    batch_size: int = setting(96, "images per step")
    lr: float = setting(0.025, "peak SGD learning rate")
    lr_min: float = setting(0.0, "final learning rate of the cosine")
    warmup_epochs: float = setting(0.0, "linear learning-rate warm-up, in epochs")
    momentum: float = setting(0.9, "SGD momentum")
    nesterov: bool = setting(False, "Nesterov momentum (fast: on)")
    weight_decay: float = setting(3e-4, "coupled L2 on the weights")
    grad_clip: float = setting(5.0, "global-norm gradient clip (0: off)")
    cutout: int = setting(16, "cutout square side in pixels (0: off)")
    auxiliary_weight: float = setting(0.4, "weight of the auxiliary head's loss (darts; 0: no head)")
    drop_path: float = setting(0.2, "final drop-path probability (grows linearly from 0)")
    label_smoothing: float = setting(0.0, "label smoothing")
    ema_decay: float = setting(0.0, "decay of the evaluated EMA copy of the weights (0: evaluate the raw weights)")
    compute_dtype: str = setting("auto", "auto: bfloat16 on GPU/TPU", choices=COMPUTE_DTYPES)
    steps_per_dispatch: int = setting(1, "training steps per jitted call (lax.scan)")
    log_every: int = setting(50, "steps between progress lines and metrics.jsonl step records")
    checkpoint_every: int = setting(200, "steps between checkpoints, besides every epoch's end (0: only those)")
    nan_policy: str = setting("stop", NAN_POLICY_HELP, choices=NAN_POLICIES)
    max_skipped_steps: int = setting(MAX_SKIPPED_DEFAULT, MAX_SKIPPED_HELP)
    seed: int = setting(0, "random seed (weights, data order, augmentation, drop-path)")

    def __post_init__(self):
        for name in ("epochs", "batch_size", "steps_per_dispatch", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{_flag(name)} must be a positive integer, got {value!r}")
        for name in ("init_channels", "layers", "train_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"--{_flag(name)} must be a positive integer, got {value!r}")
        check_size_limits(self, ("init_channels", "layers", "batch_size"))
        check_seed(self.seed)
        if not self.lr > 0 or not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"learning rates need --lr > 0 and 0 <= --lr-min <= --lr, got {self.lr}, {self.lr_min}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"--warmup-epochs must lie in [0, --epochs {self.epochs}), got {self.warmup_epochs}")
        for name, low, high in (("momentum", 0, 1), ("drop_path", 0, 1), ("label_smoothing", 0, 1),
                                ("ema_decay", 0, 1)):  # fmt: skip
            if not low <= getattr(self, name) < high:
                raise ValueError(f"--{_flag(name)} must lie in [{low}, {high}), got {getattr(self, name)!r}")
        for name in ("weight_decay", "grad_clip", "auxiliary_weight", "cutout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{_flag(name)} must be non-negative, got {getattr(self, name)!r}")
        for name in ("checkpoint_every", "max_skipped_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"--{_flag(name)} must be a non-negative integer, got {value!r}")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"unknown --nan-policy {self.nan_policy!r}; use one of {', '.join(NAN_POLICIES)}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"unknown --compute-dtype {self.compute_dtype!r}; use one of {', '.join(COMPUTE_DTYPES)}")
        if self.recipe not in RECIPE_NAMES:
            raise ValueError(f"unknown --recipe {self.recipe!r}; use one of {', '.join(RECIPE_NAMES)}")
        check_source(self.data)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _flag(name: str) -> str:
    return name.replace("_", "-")


RECIPE_NAMES = ("standard", "fast")
# The flags of experiments/cifar10_train.py in --help, by group (field names).
HELP_GROUPS: dict[str, tuple[str, ...]] = {
    "network": ("genotype", "init_channels", "layers", "scan_cells", "auxiliary_weight", "drop_path"),
    "data": ("data", "data_dir", "train_limit", "batch_size", "cutout"),
    "schedule": ("epochs", "lr", "lr_min", "warmup_epochs", "momentum", "nesterov", "weight_decay", "grad_clip",
                 "label_smoothing", "ema_decay", "seed"),
    "run directory": ("log_every", "checkpoint_every", "nan_policy", "max_skipped_steps"),
    "devices": ("compute_dtype", "steps_per_dispatch"),
}  # fmt: skip
# Settings that may change when a run continues: they change neither its results nor its metrics.jsonl.
RESUMABLE_CHANGES = ("data_dir", "checkpoint_every", "nan_policy", "max_skipped_steps", "lr")


def recipe(name: str) -> TrainConfig:
    """The named recipe's settings (see the module docstring)."""
    if name == "standard":
        return TrainConfig(recipe="standard")
    if name == "fast":
        return TrainConfig(
            recipe="fast", epochs=30, batch_size=512, lr=0.2, warmup_epochs=1.0, nesterov=True, weight_decay=5e-4,
            grad_clip=0.0, cutout=0, auxiliary_weight=0.0, drop_path=0.0, label_smoothing=0.1, ema_decay=0.99,
            steps_per_dispatch=4, log_every=20,
        )  # fmt: skip
    raise ValueError(f"unknown --recipe {name!r}; use one of {', '.join(RECIPE_NAMES)}")
