"""Run an ASO-SE architecture search on CIFAR-10.

    python experiments/cifar10_search.py --preset smoke                # about 10 minutes on a 2-core CPU
    python experiments/cifar10_search.py --preset smoke --data npz:data/cifar10.npz
    python experiments/cifar10_search.py --preset darts --space darts --batch-size 96
    python experiments/cifar10_search.py --preset nb201-cpu --data npz:data/cifar10.npz \\
        --nb201-table benchmarks/tables/nb201_cifar10.csv.gz        # scored on NAS-Bench-201

Every flag left out takes the preset's value (the defaults shown are the chosen preset's: reference, the
original's full-size search for a GPU, unless --preset names another).
Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from asose_jax.search.methods import METHODS, with_method
from asose_jax.search.run_config import HELP_GROUPS, PRESETS, RunConfig, preset
from asose_jax.search.step_config import SearchConfig, check_given_settings

_MODEL_FIELDS = ("init_channels", "depth", "op_names")  # dropped when --space changes the base's space


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The flags, in groups; their help shows the defaults of the preset that ``argv`` names (``--preset``)."""
    name = chosen(argv, "--preset", "reference")
    shown = PRESETS.get(name, PRESETS["reference"])
    presets = "; ".join(f"{n} ({p.search.space}, {p.cycles} cycle{'s' * (p.cycles != 1)})" for n, p in PRESETS.items())
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=f"presets: {presets}")  # fmt: skip
    parser.add_argument(
        "--preset",
        metavar="{" + ",".join(PRESETS) + "}",
        help="named settings that the flags override; the defaults shown are this preset's (default: reference; "
        "when --workdir holds a run, its settings)",
    )
    parser.add_argument(
        "--method",
        metavar="{" + ",".join(METHODS) + "}",
        help=f"search method: {', '.join(METHODS)}; sets the sampler, temperatures and logit regulariser, "
        "which the method flags override (default: the preset's)",
    )
    groups = add_config_flags(parser, RunConfig, shown, HELP_GROUPS)
    add_run_directory_flags(
        groups["run directory"], "runs/<preset>-<space>-<time>-<pid>", "build everything, write config.json and "
        "summary.json and print an estimate of the run's time"
    )  # fmt: skip
    add_runtime_flags(groups["devices"])
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser(argv).parse_args(argv)


def build_config(args: argparse.Namespace, saved: RunConfig | None = None) -> RunConfig:
    """The preset (or, when continuing a run and no preset is named, the run's ``saved`` settings) with every
    given flag applied. A ``--space`` other than the base's drops its model size and op set, so the new
    space's own defaults apply unless given."""
    base = saved if saved is not None and args.preset is None else preset(args.preset or "reference")
    run_fields = given_settings(args, RunConfig)
    search_fields = run_fields.pop("search", {})
    if search_fields.get("space", base.search.space) != base.search.space:
        search_fields = {**{f: None for f in _MODEL_FIELDS}, **search_fields}
    base_search = with_method(base.search, args.method) if args.method else base.search
    search: SearchConfig = dataclasses.replace(base_search, **search_fields)
    check_given_settings(search, set(search_fields))
    return dataclasses.replace(base, search=search, **run_fields)


def saved_config(workdir: str | None) -> RunConfig | None:
    """The settings of the run in ``workdir``, if it holds one (its ``config.json``)."""
    path = pathlib.Path(workdir) / "config.json" if workdir else None
    if path is None or not path.is_file():
        return None
    try:
        return RunConfig.from_json(json.loads(path.read_text()))
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"cannot read {path} ({err}); choose a new --workdir") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> tuple[str, dict]:
        config = build_config(args, saved_config(args.workdir))
        workdir = args.workdir or default_workdir(f"{args.preset or 'reference'}-{config.search.space}")
        setup_runtime(args)

        from asose_jax.search.driver import train_and_evaluate

        return workdir, train_and_evaluate(config, workdir, dry_run=args.dry_run, resume=args.resume,
                                           exact_train_limit=args.train_limit is not None)  # fmt: skip

    result = run_command(work)
    if isinstance(result, int):
        return result
    workdir, summary = result
    if args.dry_run:
        print(f"dry run: {summary['params']['weights']:,} weights, {summary['params']['arch']} logits; wrote {workdir}")
    else:
        print(done_line(summary, workdir))
    return 0


def done_line(summary: dict, workdir: pathlib.Path | str) -> str:
    """The console line a finished search ends with: wall time, accuracies, table score, growth, where the cell is.
    After a perturbation selection the table score leads: the validation and test accuracies are those of the cell's
    path through the supernet, whose weights were trained as a mixture, not as that cell's network."""
    grown = "".join(f"; grew {g['kind']} at cycle {g['cycle']} ({g['where']})" for g in summary["growth"])
    table = (f"NAS-Bench-201 table {summary['table_acc']:.2f}% (rank {summary['table_rank']:,})"
             if "table_acc" in summary else "")  # fmt: skip
    accuracies = f"val {summary['val_acc']:.2f}% test {summary['test_acc']:.2f}%"
    if summary["selection"] == "perturbation":
        path = f"the cell's path through the supernet (weights trained as a mixture): {accuracies}"
        figures = f"{table}; {path}" if table else path
    else:
        figures = f"{accuracies} ({summary['val_measure']})" + (f"; {table}" if table else "")
    return f"done in {summary['wall_time_s']:.0f} s: {figures}{grown}; genotype in {workdir}/genotype.json"


if __name__ == "__main__":
    sys.exit(main())
