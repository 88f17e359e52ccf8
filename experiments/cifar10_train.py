"""Train a discovered (or published) architecture from scratch on CIFAR-10.

    python experiments/cifar10_train.py --genotype runs/smoke/genotype.json --data npz:data/cifar10.npz
    python experiments/cifar10_train.py --genotype DARTS_V2                  # the DARTS protocol, 600 epochs
    python experiments/cifar10_train.py --genotype NB201_BEST --recipe fast  # accuracy per GPU-second

Flags left out take the recipe's value (``standard`` defaults shown below). Bad input ends with one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asose_jax.runtime.cli import ArgumentParser, add_runtime_flags, setup_runtime  # noqa: E402
from asose_jax.train.config import COMPUTE_DTYPES, RECIPE_NAMES, TrainConfig, recipe  # noqa: E402

# (flag, field, type, help)
FLAGS = (
    ("--genotype", "genotype", str, "a genotype.json (or a search's run directory), or a published name"),
    ("--data", "data", str, "data source: tfds (CIFAR-10 via tensorflow-datasets) or npz:PATH"),
    ("--data-dir", "data_dir", str, "tensorflow-datasets directory (default: ~/tensorflow_datasets)"),
    ("--train-limit", "train_limit", int, "keep only the first N training images"),
    ("--init-channels", "init_channels", int, "channels of the first stage (default: darts 36, nb201 16, chain 32)"),
    ("--layers", "layers", int, "cells (darts, default 20) or cells per stage (nb201, default 5)"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--batch-size", "batch_size", int, "images per step"),
    ("--lr", "lr", float, "peak SGD learning rate"),
    ("--lr-min", "lr_min", float, "final learning rate of the cosine"),
    ("--warmup-epochs", "warmup_epochs", float, "linear learning-rate warm-up, in epochs"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--weight-decay", "weight_decay", float, "coupled L2 on the weights"),
    ("--grad-clip", "grad_clip", float, "global-norm gradient clip (0: off)"),
    ("--cutout", "cutout", int, "cutout square side in pixels (0: off)"),
    ("--auxiliary-weight", "auxiliary_weight", float, "weight of the auxiliary head's loss (darts; 0: no head)"),
    ("--drop-path", "drop_path", float, "final drop-path probability (grows linearly from 0)"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing"),
    ("--ema-decay", "ema_decay", float, "decay of the evaluated EMA copy of the weights (0: evaluate the raw weights)"),
    ("--compute-dtype", "compute_dtype", str, f"{', '.join(COMPUTE_DTYPES)} (auto: bfloat16 on GPU/TPU)"),
    ("--steps-per-dispatch", "steps_per_dispatch", int, "training steps per jitted call (lax.scan)"),
    ("--log-every", "log_every", int, "steps between progress lines and metrics.jsonl step records"),
    ("--seed", "seed", int, "random seed (weights, data order, augmentation, drop-path)"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="standard", help=f"{' or '.join(RECIPE_NAMES)} (default: %(default)s)")
    parser.add_argument("--workdir", help="run directory, new or empty (default: runs/train-<genotype>-<time>)")
    parser.add_argument(
        "--nesterov", action=argparse.BooleanOptionalAction, default=None, help="Nesterov momentum (fast: on)"
    )
    add_runtime_flags(parser)
    standard = TrainConfig()
    for flag, field, kind, text in FLAGS:
        parser.add_argument(flag, dest=field, type=kind, default=None,
                            help=f"{text} (default: {getattr(standard, field)})")  # fmt: skip
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe with every given flag applied."""
    given = {field: getattr(args, field) for _, field, _, _ in FLAGS if getattr(args, field) is not None}
    if args.nesterov is not None:
        given["nesterov"] = args.nesterov
    return dataclasses.replace(recipe(args.recipe), **given)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
        label = pathlib.Path(config.genotype).parent.name if config.genotype.endswith(".json") else config.genotype
        workdir = args.workdir or f"runs/train-{label}-{config.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
        setup_runtime(args)

        from asose_jax.train.driver import train_and_evaluate

        summary = train_and_evaluate(config, workdir)
    except (ValueError, FloatingPointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done in {summary['wall_time_s']:.0f} s: test {summary['test_acc']:.2f}% with flip TTA, "
          f"{summary['test_acc_no_tta']:.2f}% without; {summary['params']:,} parameters; wrote {workdir}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
