"""Search quality on NAS-Bench-201: a method x seed matrix of searches, each found cell scored on the table, under
the protocol in ``benchmarks/protocol.json``.

Two stages. ``--stage select`` (default) runs every method on the protocol's selection seeds once per point of the
protocol's grid (the same grid for every method) and chooses per method the point with the highest mean table
accuracy; ``--stage report --selection SELECT.json`` runs the chosen settings on the report seeds. The select
stage refuses report seeds and the report stage any other seed. Each run is ``experiments/cifar10_search.py
--preset P --method M --seed S --nb201-table T`` in its own workdir: a finished one is reused and an unfinished one
continues if its settings (``config.json``) are the ones asked for; a workdir made with other settings is refused.

Writes one JSON: the git commit (and whether the tree was dirty), sha256 of the data and the table, the protocol;
per run its command and settings, the cell, its table accuracy and rank, ``skip_connect`` / ``none`` edges, whether
the output is cut off from the input, the initial logits' cell, the smallest edge margin (and, with perturbation
selection, the smallest lead of a kept op's merit over the runner-up's), wall time, images/s;
per method and per baseline the table accuracy's mean, std, median, min and max and the distinct cells. Beside it a
plot of the table accuracy of the cell derived at each epoch end, a line per run. Prints the tables as markdown,
as ``--render RESULT.json`` (or ``render_markdown``) does from the JSON. Example:

    python benchmarks/search_quality.py --stage select --preset nb201-cpu --data npz:data/cifar10.npz \\
        --methods darts gdas aso_se beta_darts drnas --parallel 2 --out benchmarks/results/select.json
    python benchmarks/search_quality.py --stage report --selection benchmarks/results/select.json \\
        --preset nb201-cpu --data npz:data/cifar10.npz --parallel 2 --out benchmarks/results/report.json

A method is a name from ``asose_jax.search.methods`` or ``preset`` (the preset's own settings), optionally with
flags after a colon: ``darts:--arch-lr=1e-3``. ``--arch-epochs-scale 3`` runs the preset's architecture
phase three times as long (the collapse check).
With ``--parallel N`` runs go N at a time, each pinned to its own core (``taskset``) when the machine has
N cores or more.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import hashlib
import itertools
import json
import os
import pathlib
import queue
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import cifar10_search  # noqa: E402

from asose_jax.runtime.cli import flag_names  # noqa: E402
from asose_jax.runtime.metrics_log import read_metrics, write_json  # noqa: E402
from asose_jax.runtime.plots import plot_table_accuracy  # noqa: E402
from asose_jax.runtime.rundir import COMPUTED, check_same_settings  # noqa: E402
from asose_jax.search.cycle import WARMUP  # noqa: E402
from asose_jax.search.methods import METHODS  # noqa: E402
from asose_jax.search.nb201_table import NB201Table, cell_statistics, load_nb201_table  # noqa: E402
from asose_jax.search.run_config import RunConfig, preset  # noqa: E402
from asose_jax.search.sampling import decisiveness  # noqa: E402
from asose_jax.spaces.genotypes import NB201Genotype  # noqa: E402
from benchmarks.timing import environment  # noqa: E402

DEFAULT_TABLE = ROOT / "benchmarks/tables/nb201_cifar10.csv.gz"
PROTOCOL = ROOT / "benchmarks/protocol.json"
SEARCH = ROOT / "experiments/cifar10_search.py"
SELECT, REPORT = "select", "report"
STAGE_SEEDS = {SELECT: "selection_seeds", REPORT: "report_seeds"}  # the protocol's key of each stage's seeds
CONVOLUTIONS = {"nor_conv_1x1", "nor_conv_3x3"}
# Settings that change no result: a reused run may differ in them (unlike RESUMABLE_CHANGES, the learning rates).
NEUTRAL = ("data_dir", "checkpoint_every", "keep_checkpoints")
T = TypeVar("T")


def method_flags(method: str) -> list[str]:
    """``name[:--flag=value,...]`` as search flags: ``--method name`` (none for ``preset``) and the extras. A
    comma not followed by ``--`` belongs to the value: ``preset:--grow-at=1:depth,2:depth``."""
    name, _, extra = method.partition(":")
    if name != "preset" and name not in METHODS:
        raise SystemExit(f"error: unknown method {name!r}; use preset or one of {', '.join(METHODS)}")
    flags = [] if name == "preset" else ["--method", name]
    return flags + [part for flag in filter(None, re.split(r",(?=--)", extra)) for part in flag.split("=", 1)]


def method_label(method: str) -> str:
    """A file-name-safe label: ``darts:--arch-lr=1e-3`` -> ``darts_arch-lr=1e-3``."""
    return method.replace(":--", "_").replace(",--", "_").replace(":", "_").replace(",", "+")


def load_protocol(path: pathlib.Path) -> dict:
    """The protocol (seeds, budget grid, baselines); refuses report seeds that are selection or excluded seeds
    and unknown baselines."""
    protocol = json.loads(path.read_text())
    spent = {*protocol["selection_seeds"], *map(int, protocol["excluded_seeds"])}
    if reused := sorted(spent & set(protocol["report_seeds"])):
        raise SystemExit(f"error: {path}: report seeds {reused} are selection or excluded seeds; report on fresh seeds")
    if unknown := [b for b in protocol["baselines"] if b not in BASELINES]:
        raise SystemExit(f"error: {path}: unknown baselines {unknown}; use {', '.join(BASELINES)}")
    return protocol


def stage_seeds(protocol: dict, stage: str, seeds: list[int] | None) -> list[int]:
    """The seeds a stage runs: ``seeds`` if given, else the protocol's. The select stage refuses report seeds
    (choosing on them would leak into the reported numbers), the report stage any seed but the report seeds."""
    allowed = protocol[STAGE_SEEDS[stage]]
    if seeds is None:
        return allowed
    if outside := [s for s in seeds if s not in allowed]:
        leak = set(outside) & set(protocol["report_seeds"])
        why = "they are report seeds, never chosen on" if leak else f"the protocol's {STAGE_SEEDS[stage]} are {allowed}"
        raise SystemExit(f"error: --stage {stage} refuses seeds {outside}: {why}")
    return seeds


def grid_variants(method: str, grid: dict[str, list[str]]) -> list[str]:
    """``method`` once per point of the protocol's grid, the point's flags added to its own (the budget rule:
    every method gets the same grid); refuses a method that sets a grid flag itself."""
    if clash := [flag for flag in grid if flag in method_flags(method)]:
        raise SystemExit(f"error: {method} sets {clash[0]}, which the protocol's grid sets for every method")
    points = itertools.product(*([f"{flag}={value}" for value in values] for flag, values in grid.items()))
    joiner = "," if ":" in method else ":"
    return [method + (joiner + ",".join(point) if point else "") for point in points]


def parse_grid(given: list[str] | None, default: dict[str, list[str]]) -> dict[str, list[str]]:
    """``--grid FLAG=V1,V2 ...`` (flags without their dashes: ``arch-lr=1e-3,3e-3``) as ``{"--flag": [values]}``:
    ``default`` (the protocol's) when not given, none for ``none``. Every method of the stage runs the same grid
    (the budget rule)."""
    if given is None:
        return default
    if given == ["none"]:
        return {}
    grid = {}
    for entry in given:
        flag, _, values = entry.partition("=")
        if flag.startswith("-") or not flag or not values:
            raise SystemExit(f"error: --grid entry {entry!r} is not FLAG=V1,V2; e.g. --grid arch-lr=1e-3,3e-3")
        grid[f"--{flag}"] = values.split(",")
    return grid


def chosen_methods(path: pathlib.Path, preset_name: str) -> list[str]:
    """The settings a select-stage result chose, one per method."""
    selection = json.loads(path.read_text())
    if selection.get("stage") != SELECT or selection["preset"] != preset_name:
        raise SystemExit(f"error: --selection {path} is not a select-stage result of preset {preset_name}")
    return list(selection["chosen"].values())


def search_args(args, method: str, seed: int, workdir: pathlib.Path) -> list[str]:
    """The arguments of ``experiments/cifar10_search.py`` for one run."""
    command = ["--preset", args.preset, *method_flags(method), "--seed", str(seed), "--data", args.data,
               "--nb201-table", str(args.table), "--workdir", str(workdir)]  # fmt: skip
    if args.arch_epochs_scale != 1:
        command += ["--arch-epochs", str(preset(args.preset).arch_epochs * args.arch_epochs_scale)]
    return command


def run_dir(args, method: str, seed: int) -> pathlib.Path:
    return args.runs_dir / f"{method_label(method)}-seed{seed}"


def requested_search(argv: list[str]) -> dict:
    """The ``config.json`` settings of a search run with ``argv``."""
    return cifar10_search.build_config(cifar10_search.parse_args(argv)).to_json()


def check_reusable(
    workdir: pathlib.Path,
    argv: list[str],
    requested: Callable[[list[str]], dict] = requested_search,
    renamed_flags: dict[str, str] | None = None,
) -> None:
    """Refuses ``workdir`` if it holds a run whose settings (``config.json``) differ from those the arguments
    ``argv`` ask for (``requested``: a search's by default), naming the first differing setting; only ``NEUTRAL``
    settings may differ."""
    if not (workdir / "config.json").exists():
        return
    saved = json.loads((workdir / "config.json").read_text())
    try:
        check_same_settings(workdir, saved, requested(argv), (*NEUTRAL, COMPUTED),
                            flag_names(RunConfig) if renamed_flags is None else renamed_flags)  # fmt: skip
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def run_logged(command: list[str], workdir: pathlib.Path, core: int, parallel: int) -> None:
    """Runs ``command`` with its output in ``<workdir>.log``, pinned to ``core`` (``taskset``) when ``parallel`` runs
    share a machine with at least that many cores; a failure names the log."""
    if parallel > 1 and shutil.which("taskset") and (os.cpu_count() or 1) >= parallel:
        command = ["taskset", "-c", str(core), *command]
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with open(workdir.parent / f"{workdir.name}.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}; see {workdir.parent / workdir.name}.log")


def run_pinned(run: Callable[..., T], jobs: Sequence[tuple], parallel: int) -> list[T]:
    """``run(core, *job)`` for every job, ``parallel`` at a time, each given a core no other running job has;
    the results in the order of ``jobs``."""
    free = queue.SimpleQueue()  # the cores not running a job
    for core in range(parallel):
        free.put(core)

    def pinned(job: tuple) -> T:
        core = free.get()
        try:
            return run(core, *job)
        finally:
            free.put(core)

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(pinned, jobs))


def run_one(args, core: int, method: str, seed: int) -> pathlib.Path:
    """Runs (or continues) one search; returns its workdir."""
    workdir = run_dir(args, method, seed)
    if not (workdir / "summary.json").exists():
        run_logged([sys.executable, str(SEARCH), *search_args(args, method, seed, workdir)], workdir, core,
                   args.parallel)  # fmt: skip
    return workdir


def run_record(workdir: pathlib.Path, method: str, seed: int) -> tuple[dict, list[dict]]:
    """The run's row of the results, and its epoch records (for the plot). ``initial_*``: the cell of the first
    warm-up epoch record (the logits do not move in warm-up), None without warm-up; ``min_margin``: the
    final weights' smallest edge margin (``decisiveness``)."""
    summary = json.loads((workdir / "summary.json").read_text())
    records = list(read_metrics(workdir / "metrics.jsonl"))
    epochs = [r for r in records if r.get("event") == "epoch"]
    initial = next((r for r in epochs if r["phase"] == WARMUP), {"arch_str": None, "table_acc": None})
    rates = [r["images_per_s"] for r in records if r.get("event") == "step" and r.get("phase") == "arch"]
    row = {"method": method, "seed": seed, "arch_str": summary["arch_str"], "table_acc": summary["table_acc"],
           "table_rank": summary["table_rank"], **cell_statistics(summary["arch_str"]),
           "initial_arch_str": initial["arch_str"], "initial_table_acc": initial["table_acc"],
           "min_margin": decisiveness(epochs[-1]["arch_weights"])["min_margin"],
           "min_merit_margin": min_merit_margin(summary.get("selection_decisions") or []),
           "val_measure": summary["val_measure"], "val_acc": summary["val_acc"],
           "wall_time_s": round(summary["wall_time_s"], 1),
           "arch_images_per_s": round(float(np.mean(rates)), 1) if rates else None,
           "table_acc_per_epoch": [r["table_acc"] for r in epochs],
           "config": json.loads((workdir / "config.json").read_text())}  # fmt: skip
    return row, epochs


def min_merit_margin(decisions: list[dict]) -> float | None:
    """Over perturbation selection's decisions, the smallest lead of the kept op's merit over the runner-up's (in
    the measure's units), among the ops in play (shrinking leaves the others' merits null; an edge with one op in
    play has no runner-up); None without perturbation selection."""
    scored = [sorted(m for m in d["merit"].values() if m is not None) for d in decisions]
    leads = [float(m[-1] - m[-2]) for m in scored if len(m) > 1]
    return min(leads) if leads else None


def table_stats(accs: Sequence[float], cells: Sequence[str]) -> dict:
    """Table accuracies summarised: their number ``n``, mean, sample std (ddof 1), median, min and max (None
    where there are too few), and the number of distinct cells."""
    a = np.asarray(accs, np.float64)
    out = {"n": len(a), **dict.fromkeys(("mean", "std", "median", "min", "max")), "distinct_cells": len(set(cells))}
    if len(a):
        out.update(mean=float(a.mean()), median=float(np.median(a)), min=float(a.min()), max=float(a.max()))
    if len(a) > 1:
        out["std"] = float(a.std(ddof=1))
    return out


def aggregate(rows: list[dict]) -> dict:
    """Per method: ``table_stats`` of its runs, their skip and none counts, and runs cut off from the input."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        runs = [r for r in rows if r["method"] == method]
        out[method] = {**table_stats([r["table_acc"] for r in runs], [r["arch_str"] for r in runs]),
                       "skip_connect": [r["skip_connect"] for r in runs], "none": [r["none"] for r in runs],
                       "disconnected_runs": sum(not r["connected"] for r in runs)}  # fmt: skip
    return out


def choose(per_method: dict, variants: dict[str, list[str]]) -> dict[str, str]:
    """Per method as given, its grid point with the highest mean table accuracy (the first of equals)."""
    return {m: max(points, key=lambda v: per_method[method_label(v)]["mean"]) for m, points in variants.items()}


def initial_cells(rows: list[dict], table: NB201Table) -> list[tuple[str, float]]:
    """The initial logits' cell of each seed (runs of one seed share it unless their initialisation differs)."""
    pairs = {(r["seed"], r["initial_arch_str"]): r["initial_table_acc"] for r in rows if r["initial_arch_str"]}
    return [(cell, acc) for (_, cell), acc in pairs.items()]


def convolution_cells(rows: list[dict], table: NB201Table) -> list[tuple[str, float]]:
    """The cells made only of ``nor_conv_1x1`` / ``nor_conv_3x3`` (64 in the full table)."""
    ops = {cell: {op for node in NB201Genotype.from_string(cell).nodes for op, _ in node} for cell in table.accuracy}
    return [(cell, acc) for cell, acc in table.accuracy.items() if ops[cell] <= CONVOLUTIONS]


# Baselines a protocol may name: a label and the (cell, table accuracy) pairs it summarises, from the runs or the table.
BASELINES: dict[str, tuple[str, Callable[[list[dict], NB201Table], list[tuple[str, float]]]]] = {
    "initial_argmax": ("initial logits' argmax (first warm-up epoch's cell)", initial_cells),
    "all_convolution": ("all-convolution cells (nor_conv_1x1 / nor_conv_3x3 only)", convolution_cells),
    "uniform_random": ("uniformly random cell (the whole table)", lambda rows, table: list(table.accuracy.items())),
}


def baselines(names: list[str], rows: list[dict], table: NB201Table) -> dict:
    """``{name: {"label", **table_stats}}`` of the protocol's baselines."""
    out = {}
    for name in names:
        label, cells = BASELINES[name]
        pairs = cells(rows, table)
        out[name] = {"label": label, **table_stats([acc for _, acc in pairs], [cell for cell, _ in pairs])}
    return out


def file_sha256(path: str | pathlib.Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as err:
        raise SystemExit(f"error: cannot read {path}: {err.strerror}") from None


def git_state() -> dict:
    """The commit the matrix runs at and whether the working tree differs from it (``git status``)."""

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"error: cannot read the git commit of {ROOT} ({err}); run in a git checkout") from None


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_markdown(result: dict) -> str:
    """The tables of a result JSON as markdown, every number read from ``result``: per method and baseline the
    table accuracy's summary, the chosen settings (select stage), and per run its cell."""
    git = result["git"]
    seeds = ", ".join(map(str, result["seeds"]))
    lines = [
        f"{result['stage']} stage, preset `{result['preset']}`, {result['arch_epochs']} architecture epochs, "
        f"seeds {seeds}; commit {git['commit'][:10]}{' (dirty tree)' if git['dirty'] else ''}, "
        f"table sha256 {result['table_sha256'][:12]}",
        "",
        "| | runs / cells | table accuracy: mean ± std | median | min | max | distinct cells |",
        "|---|---|---|---|---|---|---|",
    ]
    entries = [(f"`{m}`", s) for m, s in result["methods"].items()]
    entries += [(f"baseline: {b['label']}", b) for b in result["baselines"].values()]
    for name, s in entries:
        spread = f" ± {_number(s['std'])}" if s["std"] is not None else ""
        lines.append(
            f"| {name} | {s['n']} | {_number(s['mean'])}{spread} | {_number(s['median'])} | {_number(s['min'])} | "
            f"{_number(s['max'])} | {s['distinct_cells']} |"
        )
    if "chosen" in result:
        lines += ["", "| method | chosen (highest mean on the selection seeds) |", "|---|---|"]
        lines += [f"| `{m}` | `{choice}` |" for m, choice in result["chosen"].items()]
    lines += [
        "",
        "| run | seed | table accuracy | rank | skip / none | connected | min edge margin | initial cell | cell |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        connected = "yes" if r["connected"] else "no"
        lines.append(
            f"| `{r['method']}` | {r['seed']} | {_number(r['table_acc'])} | {r['table_rank']} | "
            f"{r['skip_connect']} / {r['none']} | {connected} | {r['min_margin']:.3f} | "
            f"{_number(r['initial_table_acc'])} | `{r['arch_str']}` |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", type=pathlib.Path, help="print the tables of this result JSON as markdown; no runs")
    parser.add_argument("--stage", choices=(SELECT, REPORT), default=SELECT, help="choose settings, or report them")
    parser.add_argument("--protocol", type=pathlib.Path, default=PROTOCOL, help="seeds, budget grid and baselines")
    parser.add_argument("--preset", default="nb201-cpu")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--methods", nargs="+", default=["preset", *METHODS], help="name[:--flag=value,...]")
    given.add_argument("--selection", type=pathlib.Path, help="report stage: the select-stage result to report")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the protocol's seeds of the stage")
    parser.add_argument("--grid", nargs="+", metavar="FLAG=V1,V2", help="select stage: every method's grid")
    parser.add_argument("--data", help="npz:PATH or tfds")
    parser.add_argument("--table", type=pathlib.Path, default=DEFAULT_TABLE, help="NAS-Bench-201 table (CSV)")
    parser.add_argument("--arch-epochs-scale", type=int, default=1, help="multiply the preset's arch epochs")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--runs-dir", type=pathlib.Path, help="workdirs (default: runs/search_quality/<out stem>)")
    parser.add_argument("--out", type=pathlib.Path, help="results JSON; the plot goes beside it")
    args = parser.parse_args(argv)
    if args.render:
        print(render_markdown(json.loads(args.render.read_text())), end="")
        return 0
    if args.data is None or args.out is None:
        parser.error("--data and --out are required (unless --render)")
    if args.selection and args.stage != REPORT:
        parser.error("--selection belongs to --stage report")
    protocol = load_protocol(args.protocol)
    seeds = stage_seeds(protocol, args.stage, args.seeds)
    methods = chosen_methods(args.selection, args.preset) if args.selection else args.methods
    grid = parse_grid(args.grid, protocol["budget"]["grid"]) if args.stage == SELECT else {}
    variants = {m: grid_variants(m, grid) for m in methods}
    try:
        table = load_nb201_table(args.table)  # a bad table fails here, before any search
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    args.runs_dir = args.runs_dir or ROOT / "runs/search_quality" / args.out.stem
    jobs = [(v, s) for points in variants.values() for v in points for s in seeds]
    for v, s in jobs:  # every workdir checked before any search starts
        check_reusable(run_dir(args, v, s), search_args(args, v, s, run_dir(args, v, s)))
    data_file = args.data.removeprefix("npz:") if args.data.startswith("npz:") else None  # tfds: no one file
    provenance = {
        "git": git_state(),
        "data_sha256": data_file and file_sha256(data_file),
        "table_sha256": file_sha256(args.table),
    }
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i][1], i))  # seed by seed: settings share the machine alike
    ordered = run_pinned(functools.partial(run_one, args), [jobs[i] for i in order], args.parallel)
    finished = dict(zip(order, ordered, strict=True))
    workdirs = [finished[i] for i in range(len(jobs))]
    rows, curves = [], {}
    for (method, seed), workdir in zip(jobs, workdirs, strict=True):
        row, epochs = run_record(workdir, method_label(method), seed)
        command = [str(SEARCH), *search_args(args, method, seed, workdir)]
        rows.append({**row, "command": [a.replace(f"{ROOT}/", "") for a in command]})
        curves[f"{method_label(method)} seed {seed}"] = epochs
    epochs = sorted({row["config"]["arch_epochs"] for row in rows})  # the runs' own: a method's flags may set them
    arch_epochs = epochs[0] if len(epochs) == 1 else epochs
    per_method = aggregate(rows)
    result = {"stage": args.stage, "protocol": protocol, "grid": grid, "seeds": seeds, "preset": args.preset,
              "arch_epochs": arch_epochs, "data": args.data, "table": str(args.table).replace(f"{ROOT}/", ""),
              **provenance, "parallel": args.parallel, "environment": environment(), "methods": per_method,
              "baselines": baselines(protocol["baselines"], rows, table), "runs": rows}  # fmt: skip
    if args.stage == SELECT:
        result["chosen"] = choose(per_method, variants)
    write_json(args.out, result)
    title = f"{args.preset}, {arch_epochs} arch epochs ({args.stage} stage): NAS-Bench-201 accuracy of the derived cell"
    plot_table_accuracy(curves, args.out.with_suffix(".png"), title)
    print(render_markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
