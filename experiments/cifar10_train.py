"""Train a discovered (or published) architecture from scratch on CIFAR-10.

    python experiments/cifar10_train.py --genotype runs/smoke --data npz:data/cifar10.npz  # a search's run directory
    python experiments/cifar10_train.py --genotype DARTS_V2                  # the DARTS protocol, 600 epochs
    python experiments/cifar10_train.py --genotype NB201_BEST --recipe fast  # accuracy per GPU-second

Flags left out take the recipe's value (the defaults shown are the chosen recipe's, standard unless --recipe
names another). Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

from asose_jax.runtime.cli import (
    ArgumentParser,
    add_config_flags,
    add_run_directory_flags,
    add_runtime_flags,
    chosen,
    given_settings,
    run_command,
    setup_runtime,
)
from asose_jax.runtime.rundir import default_workdir
from asose_jax.train.config import HELP_GROUPS, RECIPE_NAMES, TrainConfig, recipe


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The flags, in groups; their help shows the defaults of the recipe that ``argv`` names (``--recipe``)."""
    name = chosen(argv, "--recipe", "standard")
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="standard", metavar="{" + ",".join(RECIPE_NAMES) + "}",
                        help="named settings that the flags override; the defaults shown are this recipe's "
                        "(default: %(default)s)")  # fmt: skip
    groups = add_config_flags(parser, TrainConfig, recipe(name if name in RECIPE_NAMES else "standard"), HELP_GROUPS)
    add_run_directory_flags(
        groups["run directory"],
        "runs/train-<genotype>-<recipe>-<time>-<pid>",
        "build the network, write config.json and summary.json (weights, FLOPs) and print an estimate of the run's "
        "time",
    )
    add_runtime_flags(groups["devices"])
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser(argv).parse_args(argv)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe with every given flag applied."""
    return dataclasses.replace(recipe(args.recipe), **given_settings(args, TrainConfig))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> tuple[str, dict]:
        config = build_config(args)
        label = pathlib.Path(config.genotype).parent.name if config.genotype.endswith(".json") else config.genotype
        workdir = args.workdir or default_workdir(f"train-{label}-{config.recipe}")
        setup_runtime(args)

        from asose_jax.train.driver import train_and_evaluate

        return workdir, train_and_evaluate(config, workdir, dry_run=args.dry_run, resume=args.resume)

    result = run_command(work)
    if isinstance(result, int):
        return result
    workdir, summary = result
    if args.dry_run:
        print(f"dry run: {summary['params']:,} weights (+ {summary['params_auxiliary']:,} auxiliary head), "
              f"{summary['flops_per_image'] or 0:,.0f} FLOPs per image; wrote {workdir}")  # fmt: skip
        return 0
    print(f"done in {summary['wall_time_s']:.0f} s: test {summary['test_acc']:.2f}% with flip TTA, "
          f"{summary['test_acc_no_tta']:.2f}% without; {summary['params']:,} parameters; wrote {workdir}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
