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

from asose_jax.runtime.cli import (  # noqa: E402
    ArgumentParser,
    add_config_flags,
    add_run_directory_flags,
    add_runtime_flags,
    given_settings,
    setup_runtime,
)
from asose_jax.runtime.rundir import Interrupted  # noqa: E402
from asose_jax.train.config import RECIPE_NAMES, TrainConfig, recipe  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="standard", metavar="{" + ",".join(RECIPE_NAMES) + "}",
                        help="named settings that the flags below override (default: %(default)s)")  # fmt: skip
    add_run_directory_flags(
        parser,
        "runs/train-<genotype>-<recipe>-<time>",
        "build the network, write config.json and summary.json (weights, FLOPs)",
    )
    add_runtime_flags(parser)
    add_config_flags(parser, TrainConfig, TrainConfig())
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe with every given flag applied."""
    return dataclasses.replace(recipe(args.recipe), **given_settings(args, TrainConfig))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
        label = pathlib.Path(config.genotype).parent.name if config.genotype.endswith(".json") else config.genotype
        workdir = args.workdir or f"runs/train-{label}-{config.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
        setup_runtime(args)

        from asose_jax.train.driver import train_and_evaluate

        summary = train_and_evaluate(config, workdir, dry_run=args.dry_run, resume=args.resume)
    except (ValueError, FloatingPointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_code
    if args.dry_run:
        print(f"dry run: {summary['params']:,} weights (+ {summary['params_auxiliary']:,} auxiliary head), "
              f"{summary['flops_per_image'] or 0:,.0f} FLOPs per image; wrote {workdir}")  # fmt: skip
        return 0
    print(f"done in {summary['wall_time_s']:.0f} s: test {summary['test_acc']:.2f}% with flip TTA, "
          f"{summary['test_acc_no_tta']:.2f}% without; {summary['params']:,} parameters; wrote {workdir}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
