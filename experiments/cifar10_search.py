"""Run an ASO-SE architecture search on CIFAR-10.

    python experiments/cifar10_search.py                          # the reference preset, tfds data
    python experiments/cifar10_search.py --preset smoke --data npz:data/cifar10.npz
    python experiments/cifar10_search.py --preset darts --space darts --batch-size 96
    python experiments/cifar10_search.py --preset nb201-cpu --data npz:data/cifar10.npz \
        --nb201-table benchmarks/tables/nb201_cifar10.csv.gz        # scored on NAS-Bench-201

Every flag left out takes the preset's value (shown as the default below, for the reference preset).
Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asose_jax.nn.operations import OP_SETS  # noqa: E402
from asose_jax.runtime.cli import ArgumentParser, add_runtime_flags, setup_runtime  # noqa: E402
from asose_jax.search.config import SearchConfig  # noqa: E402
from asose_jax.search.methods import METHODS, with_method  # noqa: E402
from asose_jax.search.run_config import PRESETS, RunConfig, preset  # noqa: E402

# (flag, field, type, help); fields of RunConfig, or of SearchConfig when prefixed "search.".
FLAGS = (
    ("--data", "data", str, "data source: tfds (CIFAR-10 via tensorflow-datasets) or npz:PATH"),
    ("--data-dir", "data_dir", str, "tensorflow-datasets directory (default: ~/tensorflow_datasets)"),
    ("--train-limit", "train_limit", int, "keep only the first N training images"),
    ("--arch-split", "arch_split", float, "fraction of the training images held out for architecture steps"),
    ("--batch-size", "batch_size", int, "images per step (per split in the architecture phase)"),
    ("--cutout", "cutout", int, "cutout square side in pixels (0: off)"),
    ("--cycles", "cycles", int, "maximum number of warm-up/arch/mutation/re-train cycles"),
    ("--warmup-epochs", "warmup_epochs", int, "weight warm-up epochs per cycle (every op trained)"),
    ("--arch-epochs", "arch_epochs", int, "architecture epochs per cycle"),
    ("--retrain-epochs", "retrain_epochs", int, "weight re-training epochs per cycle"),
    ("--arch-phase", "arch_phase", str, "alternate: arch + weight step per iteration; alpha-only: weights frozen"),
    ("--plateau-window", "plateau_window", int, "stop when the last N cycles do not improve validation (0: off)"),
    ("--plateau-threshold", "plateau_threshold", float, "improvement in percentage points that counts"),
    ("--log-every", "log_every", int, "steps between progress lines and metrics.jsonl step records"),
    (
        "--checkpoint-every",
        "checkpoint_every",
        int,
        "steps between checkpoints, besides phase boundaries (0: only those)",
    ),
    ("--keep-checkpoints", "keep_checkpoints", int, "how many of the newest checkpoints to keep"),
    ("--nan-policy", "nan_policy", str, "stop: end the run at a non-finite loss or gradient; skip: drop that update"),
    ("--growth", "growth", str, "auto: grow the chain network when validation plateaus; off: never grow"),
    ("--grow-at", "grow_at", str, "force growth at cycles instead: CYCLE:KIND[,...], KIND depth, width or branch"),
    ("--growth-window", "growth_window", int, "cycles since the last growth over which a plateau triggers growth"),
    ("--growth-threshold", "growth_threshold", float, "validation gain in percentage points that is no plateau"),
    ("--growth-strategy", "growth_strategy", str, "auto: rotate depth, width, branch; or always one of them"),
    ("--width-factor", "width_factor", float, "channel multiplier of a width growth"),
    ("--width-noise", "width_noise", float, "relative noise on widened channels' copies (0: exact function)"),
    ("--max-depth", "max_depth", int, "growth cap: blocks"),
    ("--max-width", "max_width", float, "growth cap: any stage's channels over its initial channels"),
    ("--max-branches", "max_branches", int, "growth cap: branches per block"),
    ("--max-params", "max_params", int, "growth cap: weights of the grown network"),
    ("--space", "search.space", str, "search space: chain (ASO-SE), darts or nb201"),
    ("--init-channels", "search.init_channels", int, "channels of the first stage"),
    ("--depth", "search.depth", int, "blocks (chain), cells (darts) or cells per stage (nb201); alias --layers"),
    ("--ops", "search.op_names", str, f"candidate ops: an op set ({', '.join(OP_SETS)}) or comma-separated names"),
    ("--sampler", "search.sampler", str, "softmax (DARTS), gumbel_soft (ASO-SE), gumbel_hard (GDAS) or dirichlet"),
    ("--tau-max", "search.tau_max", float, "initial Gumbel temperature"),
    ("--tau-min", "search.tau_min", float, "final Gumbel temperature"),
    ("--tau-schedule", "search.tau_schedule", str, "temperature schedule: exponential, linear or constant"),
    ("--arch-init-scale", "search.arch_init_scale", float, "std of the initial architecture logits"),
    ("--weight-lr", "search.weight_lr", float, "initial SGD learning rate (cosine schedule)"),
    ("--weight-lr-min", "search.weight_lr_min", float, "final SGD learning rate"),
    ("--momentum", "search.momentum", float, "SGD momentum"),
    ("--weight-decay", "search.weight_decay", float, "coupled L2 on the weights"),
    ("--grad-clip", "search.grad_clip", float, "global-norm clip of the weight gradients"),
    ("--arch-lr", "search.arch_lr", float, "Adam learning rate of the architecture logits"),
    ("--arch-b1", "search.arch_b1", float, "Adam beta1 of the logits"),
    ("--arch-b2", "search.arch_b2", float, "Adam beta2 of the logits"),
    ("--arch-weight-decay", "search.arch_weight_decay", float, "coupled L2 on the logits"),
    ("--arch-order", "search.arch_order", int, "1: first-order DARTS; 2: unrolled (second order)"),
    ("--arch-regularizer", "search.arch_regularizer", str, "logit regulariser: none, beta or dirichlet_kl"),
    ("--arch-reg-weight", "search.arch_reg_weight", float, "its coefficient (beta: ramped from 0 to this)"),
    ("--nb201-table", "nb201_table", str, "NAS-Bench-201 table (CSV) that scores the derived cell every epoch"),
    ("--seed", "search.seed", int, "random seed (weights, logits, data order, samples)"),
)
_MODEL_FIELDS = ("init_channels", "depth", "op_names")


def _get(config: RunConfig, field: str):
    return getattr(config.search, field[7:]) if field.startswith("search.") else getattr(config, field)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        description="ASO-SE architecture search on CIFAR-10.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets: " + "; ".join(f"{name} ({p.search.space}, {p.cycles} cycles)" for name, p in PRESETS.items()),
    )  # fmt: skip
    parser.add_argument(
        "--preset",
        help=f"named settings: {', '.join(PRESETS)} (default: reference; when --workdir holds a run, its settings)",
    )
    parser.add_argument(
        "--workdir",
        help="run directory (default: runs/<preset>-<space>-<time>); one that holds an unfinished run continues it",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --workdir from its newest checkpoint"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="build everything, write config.json and summary.json, do not train"
    )
    parser.add_argument(
        "--method",
        help=f"search method: {', '.join(METHODS)}; sets the sampler, temperatures and logit regulariser, "
        "which the flags below override (default: the preset's)",
    )
    add_runtime_flags(parser)
    reference = PRESETS["reference"]
    for flag, field, kind, text in FLAGS:
        names = (flag, "--layers") if flag == "--depth" else (flag,)
        dest = field.replace(".", "__")
        parser.add_argument(*names, dest=dest, type=kind, default=None,
                            help=f"{text} (default: {_get(reference, field)})")  # fmt: skip
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace, saved: RunConfig | None = None) -> RunConfig:
    """The preset (or, when continuing a run and no preset is named, the run's ``saved`` settings) with every
    given flag applied. A ``--space`` other than the base's drops its model size and op set, so the new
    space's own defaults apply unless given."""
    base = saved if saved is not None and args.preset is None else preset(args.preset or "reference")
    run_fields, search_fields = {}, {}
    for _, field, _, _ in FLAGS:
        value = getattr(args, field.replace(".", "__"))
        if value is None:
            continue
        if field == "search.op_names":
            value = tuple(OP_SETS[value]) if value in OP_SETS else tuple(v.strip() for v in value.split(","))
        if field.startswith("search."):
            search_fields[field[7:]] = value
        else:
            run_fields[field] = value
    if search_fields.get("space", base.search.space) != base.search.space:
        search_fields = {**{f: None for f in _MODEL_FIELDS}, **search_fields}
    base_search = with_method(base.search, args.method) if args.method else base.search
    search: SearchConfig = dataclasses.replace(base_search, **search_fields)
    return dataclasses.replace(base, search=search, **run_fields)


def saved_config(workdir: str | None) -> RunConfig | None:
    """The settings of the run in ``workdir``, if it holds one (its ``config.json``)."""
    path = pathlib.Path(workdir) / "config.json" if workdir else None
    if path is None or not path.is_file():
        return None
    try:
        return RunConfig.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path} ({err}); choose a new --workdir") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args, saved_config(args.workdir))
        workdir = (
            args.workdir or f"runs/{args.preset or 'reference'}-{config.search.space}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        setup_runtime(args)

        from asose_jax.runtime.rundir import Interrupted
        from asose_jax.search.driver import train_and_evaluate

        summary = train_and_evaluate(config, workdir, dry_run=args.dry_run, resume=args.resume)
    except (ValueError, FloatingPointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_code
    if args.dry_run:
        print(f"dry run: {summary['params']['weights']:,} weights, {summary['params']['arch']} logits; wrote {workdir}")
    else:
        grown = "".join(f"; grew {g['kind']} at cycle {g['cycle']} ({g['where']})" for g in summary["growth"])
        table = (f"; NAS-Bench-201 table {summary['table_acc']:.2f}% (rank {summary['table_rank']:,})"
                 if "table_acc" in summary else "")  # fmt: skip
        print(f"done in {summary['wall_time_s']:.0f} s: val {summary['val_acc']:.2f}% test {summary['test_acc']:.2f}% "
              f"({summary['val_measure']}){table}{grown}; genotype in {workdir}/genotype.json")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
