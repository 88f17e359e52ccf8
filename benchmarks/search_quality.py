"""Search quality on NAS-Bench-201: a method x seed matrix of searches, each found cell scored on the table.

Each run is ``experiments/cifar10_search.py --preset P --method M --seed S --nb201-table T`` in its own
workdir (a finished workdir is reused, an unfinished one continues). Writes one JSON (per run: method,
seed, cell string, table accuracy and rank, ``skip_connect`` / ``none`` edges, whether the output is
cut off from the input, wall time, images/s; per method: mean and range) and one plot of the table
accuracy of the cell derived at each epoch end, a line per run. Prints a table. Example:

    python benchmarks/search_quality.py --preset nb201-cpu --data npz:data/cifar10.npz \\
        --methods darts gdas aso_se beta_darts drnas --seeds 0 1 2 --parallel 2 \\
        --out benchmarks/results/search_quality_nb201_cpu.json

A method is a name from ``asose_jax.search.methods`` or ``preset`` (the preset's own settings), optionally with
flags after a colon: ``darts:--arch-lr=1e-3``. ``--arch-epochs-scale 3`` runs the preset's architecture
phase three times as long (the collapse check).
With ``--parallel N`` runs go N at a time, each pinned to its own core (``taskset``) when the machine has
N cores or more.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asose_jax.runtime.metrics_log import read_metrics, write_json  # noqa: E402
from asose_jax.runtime.plots import plot_table_accuracy  # noqa: E402
from asose_jax.search.methods import METHODS  # noqa: E402
from asose_jax.search.nb201_table import cell_statistics, load_nb201_table  # noqa: E402
from asose_jax.search.run_config import preset  # noqa: E402
from benchmarks.timing import environment  # noqa: E402

DEFAULT_TABLE = ROOT / "benchmarks/tables/nb201_cifar10.csv.gz"


def method_flags(method: str) -> list[str]:
    """``name[:--flag=value,...]`` as search flags: ``--method name`` (none for ``preset``) and the extras."""
    name, _, extra = method.partition(":")
    if name != "preset" and name not in METHODS:
        raise SystemExit(f"error: unknown method {name!r}; use preset or one of {', '.join(METHODS)}")
    flags = [] if name == "preset" else ["--method", name]
    return flags + [part for flag in filter(None, extra.split(",")) for part in flag.split("=", 1)]


def search_command(args, method: str, seed: int, workdir: pathlib.Path) -> list[str]:
    command = [sys.executable, str(ROOT / "experiments/cifar10_search.py"), "--preset", args.preset,
               *method_flags(method), "--seed", str(seed), "--data", args.data, "--nb201-table", str(args.table),
               "--workdir", str(workdir)]  # fmt: skip
    if args.arch_epochs_scale != 1:
        command += ["--arch-epochs", str(preset(args.preset).arch_epochs * args.arch_epochs_scale)]
    return command


def method_label(method: str) -> str:
    """A file-name-safe label: ``darts:--arch-lr=1e-3`` -> ``darts_arch-lr=1e-3``."""
    return method.replace(":--", "_").replace(",--", "_").replace(":", "_")


def run_one(args, method: str, seed: int, slot: int) -> pathlib.Path:
    """Runs (or continues) one search; returns its workdir."""
    workdir = args.runs_dir / f"{method_label(method)}-seed{seed}"
    if (workdir / "summary.json").exists():
        return workdir
    command = search_command(args, method, seed, workdir)
    if args.parallel > 1 and shutil.which("taskset") and (os.cpu_count() or 1) >= args.parallel:
        command = ["taskset", "-c", str(slot), *command]
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with open(workdir.parent / f"{workdir.name}.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}; see {workdir.parent / workdir.name}.log")
    return workdir


def run_record(workdir: pathlib.Path, method: str, seed: int) -> tuple[dict, list[dict]]:
    """The run's row of the results, and its epoch records (for the plot)."""
    summary = json.loads((workdir / "summary.json").read_text())
    records = list(read_metrics(workdir / "metrics.jsonl"))
    epochs = [r for r in records if r.get("event") == "epoch"]
    rates = [r["images_per_s"] for r in records if r.get("event") == "step" and r.get("phase") == "arch"]
    row = {"method": method, "seed": seed, "arch_str": summary["arch_str"], "table_acc": summary["table_acc"],
           "table_rank": summary["table_rank"], **cell_statistics(summary["arch_str"]),
           "val_measure": summary["val_measure"], "val_acc": summary["val_acc"],
           "wall_time_s": round(summary["wall_time_s"], 1),
           "arch_images_per_s": round(float(np.mean(rates)), 1) if rates else None,
           "table_acc_per_epoch": [r["table_acc"] for r in epochs]}  # fmt: skip
    return row, epochs


def aggregate(rows: list[dict]) -> dict:
    """Per method: mean, min and max of the table accuracy; skip counts; runs cut off from the input."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        accs = [r["table_acc"] for r in rows if r["method"] == method]
        out[method] = {"runs": len(accs), "table_acc_mean": round(float(np.mean(accs)), 2),
                       "table_acc_min": min(accs), "table_acc_max": max(accs),
                       "skip_connect": [r["skip_connect"] for r in rows if r["method"] == method],
                       "disconnected_runs": sum(not r["connected"] for r in rows if r["method"] == method)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="nb201-cpu")
    parser.add_argument("--methods", nargs="+", default=["preset", *METHODS], help="name[:--flag=value,...]")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data", required=True, help="npz:PATH or tfds")
    parser.add_argument("--table", type=pathlib.Path, default=DEFAULT_TABLE, help="NAS-Bench-201 table (CSV)")
    parser.add_argument("--arch-epochs-scale", type=int, default=1, help="multiply the preset's arch epochs")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--runs-dir", type=pathlib.Path, help="workdirs (default: runs/search_quality/<out stem>)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="results JSON; the plot goes beside it")
    args = parser.parse_args(argv)
    load_nb201_table(args.table)  # a bad table fails here, before any search
    args.runs_dir = args.runs_dir or ROOT / "runs/search_quality" / args.out.stem
    jobs = [(m, s) for m in args.methods for s in args.seeds]
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        slots = [pool.submit(run_one, args, m, s, i % args.parallel) for i, (m, s) in enumerate(jobs)]
        workdirs = [f.result() for f in slots]
    rows, curves = [], {}
    for (method, seed), workdir in zip(jobs, workdirs, strict=True):
        row, epochs = run_record(workdir, method_label(method), seed)
        rows.append(row)
        curves[f"{method_label(method)} seed {seed}"] = epochs
    arch_epochs = preset(args.preset).arch_epochs * args.arch_epochs_scale
    per_method = aggregate(rows)
    commands = {}  # each method's search command, paths relative to the repository
    for m in args.methods:
        commands[method_label(m)] = [a.replace(f"{ROOT}/", "") for a in search_command(args, m, 0, ROOT / "RUN")[1:]]
    write_json(args.out, {"preset": args.preset, "arch_epochs": arch_epochs, "data": args.data,
                          "parallel": args.parallel, "environment": environment(), "commands": commands,
                          "methods": per_method, "runs": rows})  # fmt: skip
    title = f"{args.preset}, {arch_epochs} arch epochs: NAS-Bench-201 accuracy of the derived cell"
    plot_table_accuracy(curves, args.out.with_suffix(".png"), title)
    print(f"{'method':<12}{'seed':>5}{'table %':>9}{'rank':>7}{'skip':>6}{'none':>6}{'wall s':>8}  cell")
    for r in rows:
        print(f"{r['method']:<12}{r['seed']:>5}{r['table_acc']:>9.2f}{r['table_rank']:>7}{r['skip_connect']:>6}"
              f"{r['none']:>6}{r['wall_time_s']:>8.0f}  {r['arch_str']}")  # fmt: skip
    for method, agg in per_method.items():
        low, high = agg["table_acc_min"], agg["table_acc_max"]
        print(f"{method:<12} mean {agg['table_acc_mean']:.2f} range {low:.2f}-{high:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
