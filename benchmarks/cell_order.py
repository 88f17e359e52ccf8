"""Does a network of a search's size order NAS-Bench-201 cells as the table does?

The table scores each cell in a network of 5 cells per stage at 16 channels, trained 200 epochs. A search on the
``nb201-cpu`` proxy sees a supernet of one cell per stage at 8 channels trained for an epoch. This benchmark trains
given cells from scratch at a size of one's choosing (``experiments/cifar10_train.py`` flags) over seeds and
reports each cell's test accuracy next to the table's, so one sees whether a search faithful to the small network
could prefer the cells the table prefers:

    FLAGS=--recipe=fast,--init-channels=8,--layers=1,--train-limit=20000,--epochs=6,--batch-size=128,--lr=0.05
    python benchmarks/cell_order.py --data npz:data/cifar10.npz --seeds 0 1 2 --parallel 2 --train-flags=$FLAGS \\
        --cells "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|" \\
                "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|" \\
        --out benchmarks/results/cell_order_depth1.json

Each run trains in its own run directory under ``--runs-dir``, named by its cell and seed: a finished one is
reused and an unfinished one continued if its settings are the ones asked for; every directory is checked before
any training, and one made with other settings is refused. With ``--parallel N`` runs go N at a time, each pinned
to its own core (``taskset``) where the machine has N cores. Prints a markdown table and writes JSON with every
run's accuracy, settings and command, the commit and the data's sha256.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import cifar10_train  # noqa: E402

from asose_jax.runtime.cli import flag_names  # noqa: E402
from asose_jax.runtime.metrics_log import write_json  # noqa: E402
from asose_jax.search.nb201_table import load_nb201_table  # noqa: E402
from asose_jax.spaces.genotypes import NB201Genotype, genotype_to_json  # noqa: E402
from asose_jax.train.config import TrainConfig  # noqa: E402
from benchmarks.render_tables import md_table  # noqa: E402
from benchmarks.search_quality import (  # noqa: E402
    DEFAULT_TABLE,
    check_reusable,
    file_sha256,
    git_state,
    run_logged,
    run_pinned,
)
from benchmarks.timing import environment  # noqa: E402

TRAIN = ROOT / "experiments/cifar10_train.py"


def cell_name(arch: str) -> str:
    """A short name that only this cell gets: ``cell-`` and 10 hex digits of the arch string's sha256."""
    return "cell-" + hashlib.sha256(arch.encode()).hexdigest()[:10]


def train_args(args, arch: str, seed: int, workdir: pathlib.Path) -> list[str]:
    flags = [f for f in args.train_flags.split(",") if f]
    return ["--genotype", str(args.runs_dir / f"{cell_name(arch)}.json"), "--data", args.data, "--seed", str(seed),
            "--workdir", str(workdir), *flags]  # fmt: skip


def requested_training(argv: list[str]) -> dict:
    """The ``config.json`` settings of a training run with ``argv``."""
    return cifar10_train.build_config(cifar10_train.parse_args(argv)).to_json()


def run_dir(args, arch: str, seed: int) -> pathlib.Path:
    return args.runs_dir / f"{cell_name(arch)}-seed{seed}"


def run_one(args, core: int, arch: str, seed: int) -> dict:
    """Trains (or continues, or reuses) one cell at one seed; returns its row."""
    workdir = run_dir(args, arch, seed)
    argv = train_args(args, arch, seed, workdir)
    if not (workdir / "summary.json").exists():
        run_logged([sys.executable, str(TRAIN), *argv], workdir, core, args.parallel)
    summary = json.loads((workdir / "summary.json").read_text())
    return {"arch_str": arch, "seed": seed, "test_acc": summary["test_acc"], "wall_time_s": summary["wall_time_s"],
            "config": json.loads((workdir / "config.json").read_text()),
            "command": [a.replace(f"{ROOT}/", "") for a in [str(TRAIN), *argv]]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", required=True, help="NAS-Bench-201 arch strings")
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--data", required=True, help="npz:PATH")
    parser.add_argument("--train-flags", default="", help="comma-separated cifar10_train.py flags: --flag=value,...")
    parser.add_argument("--table", type=pathlib.Path, default=DEFAULT_TABLE, help="NAS-Bench-201 table (CSV)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--runs-dir", type=pathlib.Path, help="run directories (default: runs/cell_order/<out stem>)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="results JSON")
    args = parser.parse_args(argv)
    if not args.data.startswith("npz:"):
        parser.error(f"--data must be npz:PATH (the file whose sha256 the result records), got {args.data!r}")
    try:
        table = load_nb201_table(args.table)
        genotypes = [NB201Genotype.from_string(arch) for arch in args.cells]
        for arch in args.cells:
            table.score(arch)  # a cell the table lacks fails here, before any training
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    args.runs_dir = args.runs_dir or ROOT / "runs/cell_order" / args.out.stem
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    for arch, genotype in zip(args.cells, genotypes, strict=True):
        write_json(args.runs_dir / f"{cell_name(arch)}.json", genotype_to_json(genotype))
    provenance = {"git": git_state(), "data_sha256": file_sha256(args.data.removeprefix("npz:"))}
    jobs = [(arch, seed) for seed in args.seeds for arch in args.cells]  # seed by seed: cells share the machine alike
    for arch, seed in jobs:  # every run directory checked before any training starts
        workdir = run_dir(args, arch, seed)
        check_reusable(workdir, train_args(args, arch, seed, workdir), requested_training, flag_names(TrainConfig))
    rows = run_pinned(functools.partial(run_one, args), jobs, args.parallel)
    cells = []
    for arch in args.cells:
        accs = [r["test_acc"] for r in rows if r["arch_str"] == arch]
        cells.append({"arch_str": arch, "table_acc": table.score(arch)["table_acc"], "mean": float(np.mean(accs)),
                      "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0, "accs": accs})  # fmt: skip
    result = {"seeds": args.seeds, "train_flags": args.train_flags, "data": args.data, **provenance,
              "parallel": args.parallel, "environment": environment(), "cells": cells, "runs": rows}  # fmt: skip
    write_json(args.out, result)
    header = ["cell", "table accuracy", "trained here: mean ± std", *[f"seed {s}" for s in args.seeds]]
    print(md_table(header, [[f"`{c['arch_str']}`", f"{c['table_acc']:.2f}", f"{c['mean']:.2f} ± {c['std']:.2f}",
                             *[f"{a:.2f}" for a in c["accs"]]] for c in cells]))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
