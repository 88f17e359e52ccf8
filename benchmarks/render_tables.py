"""Regenerate the result tables of README.md and docs/*.md from the JSON files in benchmarks/results/.

    python benchmarks/render_tables.py           # rewrite every generated block in place
    python benchmarks/render_tables.py --check   # exit 1, naming them, if any block is stale

A generated block is the text between two marker lines (each on a line of its own),

    <!-- BEGIN generated:NAME -->
    ...
    <!-- END generated:NAME -->

and NAME picks its renderer: a function of no arguments that returns Markdown, registered with
``@renderer("NAME")``; most read a JSON file of benchmarks/results/, one reads the NAS-Bench-201 table of
benchmarks/tables/. A block name may appear in several files. Adding a table is one function here and one
pair of markers in a page. A renderer may delegate to the script that owns a result format, for example

    @renderer("nb201_protocol")
    def _nb201_protocol() -> str:
        from search_quality import render_markdown  # benchmarks/ is on sys.path when run as a script
        return render_markdown(load("search_quality_protocol.json"))

Only the standard library is used, so the check runs anywhere (``tests/test_docs.py`` calls ``stale_blocks``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Markers stand on lines of their own (a marker quoted inside a line of prose is not one).
BLOCK = re.compile(
    r"(?P<begin>^<!-- BEGIN generated:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(?P<end>^<!-- END generated:(?P=name) -->$)",
    re.DOTALL | re.MULTILINE,
)
BEGIN = re.compile(r"^<!-- BEGIN generated:([\w.-]+) -->$", re.MULTILINE)

RENDERERS: dict[str, Callable[[], str]] = {}


def renderer(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    """Register ``fn`` as the renderer of the blocks called ``name``."""

    def register(fn: Callable[[], str]) -> Callable[[], str]:
        if name in RENDERERS:
            raise ValueError(f"two renderers for block {name!r}")
        RENDERERS[name] = fn
        return fn

    return register


def load(filename: str) -> dict:
    return json.loads((RESULTS / filename).read_text())


def doc_files(root: Path = ROOT) -> list[Path]:
    """The pages that may hold generated blocks: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def md_table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def source(*filenames: str) -> str:
    return "Source: " + ", ".join(f"`benchmarks/results/{f}`" for f in filenames) + "."


def rate(images_per_s: float) -> str:
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.1f}"


def minutes(seconds: Iterable[float]) -> str:
    values = [round(s / 60) for s in seconds]
    low, high = min(values), max(values)
    return f"{low} min" if low == high else f"{low}-{high} min"


# --- NAS-Bench-201 search quality (benchmarks/search_quality.py) -------------------------------------------

SEARCH_QUALITY = "search_quality_nb201_cpu.json"
SEARCH_QUALITY_3X = "search_quality_nb201_cpu_3x.json"
# The nb201-cpu preset's row rerun over seeds 0-2 after the CPU convolution-gradient change (same maths, other
# rounding); the file name carries the code version it ran at.
SEARCH_QUALITY_RERUN = "search_quality_nb201_cpu_rerun.json"


def method_label(result: dict, key: str) -> str:
    """``beta_darts --arch-reg-weight 5`` from the command the benchmark recorded for ``key``."""
    command = result.get("commands", {}).get(key)
    if not command or "--method" not in command:
        return f"`{key}`"
    start = command.index("--method")
    extra = []
    for flag, value in zip(command[start + 2 :: 2], command[start + 3 :: 2], strict=False):
        if flag in ("--seed", "--data", "--nb201-table", "--workdir"):
            break
        extra.append(f"{flag} {value}")
    return f"`{' '.join([command[start + 1], *extra])}`"


def per_seed(runs: list[dict], field: str) -> str:
    return ", ".join(str(r[field]) for r in runs)


def edges(runs: list[dict]) -> str:
    return ", ".join(f"{r['skip_connect']}/{r['none']}" for r in runs)


def runs_of(result: dict, key: str) -> list[dict]:
    return sorted((r for r in result["runs"] if r["method"] == key), key=lambda r: r["seed"])


def mean_range(summary: dict) -> str:
    return f"{summary['table_acc_mean']:.2f} ({summary['table_acc_min']:.2f}-{summary['table_acc_max']:.2f})"


@renderer("nb201_summary")
def _nb201_summary() -> str:
    result = load(SEARCH_QUALITY)
    order = sorted(result["methods"], key=lambda k: -result["methods"][k]["table_acc_mean"])
    rows = []
    for key in order:
        summary, runs = result["methods"][key], runs_of(result, key)
        rows.append([
            method_label(result, key),
            mean_range(summary),
            edges(runs),
            f"{summary['disconnected_runs']} of {summary['runs']}",
            minutes(r["wall_time_s"] for r in runs),
        ])  # fmt: skip
    seeds = sorted({r["seed"] for r in result["runs"]})
    return "\n".join([
        md_table(["method", "NAS-Bench-201 accuracy: mean (range)", "`skip_connect`/`none` edges per seed",
                  "cells cut off from the input", "wall time per run"], rows),
        "",
        f"Preset `{result['preset']}`, {result['arch_epochs']} architecture epochs, seeds "
        f"{', '.join(map(str, seeds))}; {result['parallel']} searches at a time on a 2-core CPU "
        f"(jax {result['environment']['jax']}). {source(SEARCH_QUALITY)}",
    ])  # fmt: skip


@renderer("nb201_runs")
def _nb201_runs() -> str:
    result = load(SEARCH_QUALITY)
    rows = []
    for key in result["methods"]:
        for r in runs_of(result, key):
            rows.append([method_label(result, key), r["seed"], f"`{r['arch_str']}`", f"{r['table_acc']:.2f}",
                         f"{r['table_rank']:,}", f"{r['skip_connect']}/{r['none']}",
                         minutes([r["wall_time_s"]])])  # fmt: skip
    return "\n".join([
        md_table(["method", "seed", "cell found", "accuracy", "rank of 15,625", "skip/none", "wall time"], rows),
        "",
        source(SEARCH_QUALITY),
    ])  # fmt: skip


@renderer("nb201_3x")
def _nb201_3x() -> str:
    long, short = load(SEARCH_QUALITY_3X), load(SEARCH_QUALITY)
    rows = []
    for key in long["methods"]:
        (run,) = runs_of(long, key)
        before = [r for r in runs_of(short, key) if r["seed"] == run["seed"]]
        per_epoch = run["table_acc_per_epoch"]
        warmup = len(per_epoch) - long["arch_epochs"]
        held = len(per_epoch)
        while held > 1 and per_epoch[held - 2] == per_epoch[-1]:
            held -= 1
        rows.append([
            method_label(long, key),
            f"{before[0]['table_acc']:.2f}" if before else "not run",
            f"{run['table_acc']:.2f} (rank {run['table_rank']:,})",
            f"architecture epoch {held - warmup}",
            f"{run['skip_connect']}/{run['none']}",
            minutes([run["wall_time_s"]]),
        ])  # fmt: skip
    return "\n".join([
        md_table(["method", f"{short['arch_epochs']} epochs", f"{long['arch_epochs']} epochs",
                  "final cell held from", "skip/none at the end", "wall time"], rows),
        "",
        f"Seed {', '.join(str(r['seed']) for r in long['runs'][:1])}. {source(SEARCH_QUALITY_3X, SEARCH_QUALITY)}",
    ])  # fmt: skip


@renderer("nb201_rerun")
def _nb201_rerun() -> str:
    rerun, first = load(SEARCH_QUALITY_RERUN), load(SEARCH_QUALITY)
    (key,) = rerun["methods"]
    rows = []
    for r in runs_of(rerun, key):
        earlier = [e for e in runs_of(first, key) if e["seed"] == r["seed"]]
        rows.append([r["seed"], f"`{r['arch_str']}`", f"{r['table_acc']:.2f}", f"{r['table_rank']:,}",
                     f"{earlier[0]['table_acc']:.2f}" if earlier else "-", minutes([r["wall_time_s"]])])  # fmt: skip
    return "\n".join([
        md_table(["seed", "cell found", "accuracy", "rank", "first matrix", "wall time"], rows),
        "",
        f"{method_label(rerun, key)}: mean **{mean_range(rerun['methods'][key])}** against "
        f"{mean_range(first['methods'][key])} in the first matrix; {rerun['parallel']} runs at a time. "
        "Source: `benchmarks/results/search_quality_nb201_cpu_rerun.json`.",
    ])  # fmt: skip


NB201_TABLE = ROOT / "benchmarks" / "tables" / "nb201_cifar10.csv.gz"


# Select-stage results of the protocol (selection seeds only), in the order they were run.
SELECT_STAGE = (
    "select_nb201_cpu_preset.json",
    "select_nb201_cpu_perturbation.json",
    "select_nb201_cpu_perturbation_uniform.json",
    "select_nb201_cpu_alone.json",
    "select_nb201_cpu_zico.json",
    "select_nb201_cpu_zico_3x.json",  # the chosen setting with 3x the training: its collapse check, after the choice
    "select_nb201_cpu_gdas.json",  # GDAS over the grid, on the 2 + 8 epoch setting of the first rows
    "select_nb201_cpu_aso_se.json",  # ASO-SE's soft Gumbel likewise
    "select_nb201_cpu_drnas.json",  # DrNAS likewise
    "select_nb201_cpu_darts.json",  # DARTS likewise
    "select_nb201_cpu_zico_mean.json",  # ZiCo with each layer's mean, not sum: dropped after its first seed
    "select_nb201_cpu_removal_depth5.json",  # DARTS-PT's removal on a supernet of the table's depth: likewise
    "select_nb201_cpu_ntk.json",  # TE-NAS's NTK condition number as the measure
    "select_nb201_cpu_ntk_depth5.json",  # likewise on a supernet of the table's depth, as TE-NAS scores it
    "select_nb201_cpu_grow_removal.json",  # removal after beta-DARTS cycles with ASO-SE's growth: 1 -> 2 cells/stage
    "select_nb201_cpu_cycles_removal.json",  # the same cycles without growth, at one cell per stage
    "select_nb201_cpu_cycles_removal_depth2.json",  # likewise at two cells per stage: dropped after its first seed
    "select_nb201_cpu_cycles_removal_tuned.json",  # one cell per stage, with DARTS-PT's tuning after each decision
    "select_nb201_cpu_shrink.json",  # progressive shrinking by removal and by weight over the same cycles
    "select_nb201_cpu_grow_shrink.json",  # shrinking by weight while growing 1 -> 2 cells per stage (P-DARTS-like)
    "select_nb201_cpu_nwot.json",  # NASWOT's activation-pattern kernel as Zero-Cost-PT's measure
    "select_nb201_cpu_cycles_removal_all.json",  # removal after the cycles on all held-out images
)


def _method_setting(search: dict) -> str:
    """```softmax` + beta 5, arch lr 0.001``: a run's sampler, regulariser and weight, and arch lr."""
    regularizer = "" if search["arch_regularizer"] == "none" else (
        f" + {search['arch_regularizer']} {search['arch_reg_weight']:g}")  # fmt: skip
    return f"`{search['sampler']}`{regularizer}, arch lr {search['arch_lr']:g}"


def _setting(config: dict) -> str:
    """A run's search and selection as words, from its ``config.json``: cycles, epochs, depth and its growth, the
    logits' training, progressive shrinking, the cell's choice."""
    epochs = f"{config['warmup_epochs']} warm-up + {config['arch_epochs']} architecture epochs"
    if config["cycles"] > 1:
        epochs = f"{config['cycles']} cycles of {epochs}"
    depth, grown = config["search"]["depth"], _depth_growths(config)
    if grown:
        epochs += f", growing from {depth} to {_grown_depth(depth, len(grown))} cells per stage"
    elif depth > 1:  # the proxy's supernet has one cell per stage
        epochs += f" at {depth} cells per stage"
    if config["arch_epochs"]:
        epochs += f" ({_method_setting(config['search'])})"
    if config.get("shrink_ops"):  # runs made before shrinking had no such setting
        last = "" if config["cycles"] == 2 else f"-{config['cycles'] - 1}"
        epochs += (f", each edge dropping {config['shrink_ops']} op by {config['shrink_measure']} after cycles "
                   f"1{last}")  # fmt: skip
    if config.get("selection", "argmax") == "argmax":
        return f"{epochs}; argmax of the logits"
    measure = config.get("selection_measure", "removal")  # runs made before the measures had a name: removal
    return (f"{epochs}; perturbation selection, {measure} on {config['selection_images']:,} images, "
            f"{config['selection_tune_steps']} tuning steps per edge")  # fmt: skip


def _mean_std(summary: dict) -> str:
    """``93.45 ± 0.26``, or the mean alone for a single run."""
    return f"{summary['mean']:.2f}" + (f" ± {summary['std']:.2f}" if summary["std"] is not None else "")


@renderer("nb201_select")
def _nb201_select() -> str:
    """Every setting tried on the selection seeds: table accuracy, cells, final decisiveness, wall time."""
    rows, seeds = [], set()
    for name in SELECT_STAGE:
        result = load(name)
        seeds.update(result["seeds"])
        for method, s in result["methods"].items():
            runs = [r for r in result["runs"] if r["method"] == method]
            margins = [r["min_margin"] for r in runs]
            minutes = sorted({round(r["wall_time_s"] / 60) for r in runs})
            rows.append([_setting(runs[0]["config"]), _mean_std(s), f"{s['min']:.2f}", f"{s['max']:.2f}",
                         f"{s['distinct_cells']} of {s['n']}", f"{min(margins):.3f}",
                         "-".join(map(str, minutes[:: max(1, len(minutes) - 1)])) + " min", f"`{name}`"])  # fmt: skip
    base = load(SELECT_STAGE[0])["baselines"]
    for b in base.values():
        rows.append([f"baseline: {b['label']}", _mean_std(b), f"{b['min']:.2f}",
                     f"{b['max']:.2f}", f"{b['distinct_cells']} of {b['n']}", "-", "-", "-"])  # fmt: skip
    header = ["setting", "table accuracy: mean ± std", "min", "max", "distinct cells", "smallest final edge margin",
              "wall time (2 or more runs sharing 2 cores, unless the text says alone)", "result"]  # fmt: skip
    return "\n".join([
        md_table(header, rows),
        "",
        f"Selection seeds {', '.join(map(str, sorted(seeds)))} only (`benchmarks/protocol.json`); the baselines' "
        "initial-logit row is over the same seeds. Source: the files named, in `benchmarks/results/`.",
    ])  # fmt: skip


REPORT_STAGE = "report_nb201_cpu_zico.json"  # the nb201-cpu preset's setting on the protocol's report seeds


@renderer("nb201_report")
def _nb201_report() -> str:
    """The chosen setting on the report seeds: per seed the cell, its table accuracy and the decisions' margins;
    then the summary next to the baselines."""
    result = load(REPORT_STAGE)
    runs = sorted(result["runs"], key=lambda r: r["seed"])
    rows = [[str(r["seed"]), f"`{r['arch_str']}`", f"{r['table_acc']:.2f}", f"{r['table_rank']:,}",
             f"{r['min_merit_margin']:.2f}", f"{r['wall_time_s']:.0f} s"] for r in runs]  # fmt: skip
    (summary,) = result["methods"].values()
    lines = [md_table(["report seed", "cell found", "table accuracy", "rank of 15,625",
                       "smallest merit lead (ZiCo)", "wall time"], rows), ""]  # fmt: skip
    entries = [("`nb201-cpu`", summary)] + [(f"baseline: {b['label']}", b) for b in result["baselines"].values()]
    summaries = [[name, _mean_std(s), f"{s['min']:.2f}", f"{s['max']:.2f}", f"{s['distinct_cells']} of {s['n']}"]
                 for name, s in entries]  # fmt: skip
    lines.append(md_table(["", "table accuracy: mean ± std", "min", "max", "distinct cells"], summaries))
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines += [
        "",
        f"Report seeds {seeds} (`benchmarks/protocol.json`), run once each and chosen on nothing; the "
        f"initial-logit baseline is over the same seeds. Source: `benchmarks/results/{REPORT_STAGE}`.",
    ]
    return "\n".join(lines)


GROWTH_REPORT = "report_nb201_cpu_growth.json"  # growth against none at equal wall time, on the report seeds


NB201_STAGES = 3  # the NAS-Bench-201 network's stages of cells, split by its two reduction blocks


def _depth_growths(config: dict) -> list[str]:
    """The cycles after which ``--grow-at`` grows depth, from a run's ``config.json``."""
    entries = [[part.strip() for part in entry.split(":")] for entry in config["grow_at"].split(",") if entry.strip()]
    return [cycle for cycle, kind in entries if kind == "depth"]


def _grown_depth(depth: int, growths: int) -> str:
    """Cells per stage after ``growths`` depth growths from ``depth``: ``2``, or ``2-3`` while the stages differ (a
    growth adds a gated cell to the stage with the fewest grown cells, so the stages fill in turn)."""
    full, extra = divmod(growths, NB201_STAGES)
    return f"{depth + full}" + (f"-{depth + full + 1}" if extra else "")


def _arm(config: dict) -> str:
    """A growth-comparison arm as words, from a run's ``config.json``: cells per stage, growth, warm-up epochs."""
    depth, epochs = config["search"]["depth"], config["cycles"] * config["warmup_epochs"]
    grown = _depth_growths(config)
    if grown:
        return (f"growth: {depth} -> {_grown_depth(depth, len(grown))} cells per stage (a gated cell after cycles "
                f"{', '.join(grown)}), {epochs} warm-up epochs")  # fmt: skip
    return f"no growth: {depth} cell{'s' if depth > 1 else ''} per stage, {epochs} warm-up epochs"


@renderer("nb201_growth")
def _nb201_growth() -> str:
    """ASO-SE's growth against the same search without it, per arm: table accuracy, cells, wall time."""
    result = load(GROWTH_REPORT)
    rows = []
    for method, s in result["methods"].items():
        runs = [r for r in result["runs"] if r["method"] == method]
        times = [r["wall_time_s"] for r in runs]
        rows.append([_arm(runs[0]["config"]), _mean_std(s), f"{s['min']:.2f}", f"{s['max']:.2f}",
                     f"{s['distinct_cells']} of {s['n']}",
                     f"{sum(times) / len(times):.0f} s ({min(times):.0f}-{max(times):.0f})"])  # fmt: skip
    header = ["arm (each then the cell by Zero-Cost-PT with ZiCo)", "table accuracy: mean ± std", "min", "max",
              "distinct cells", "wall time: mean (range)"]  # fmt: skip
    seeds = ", ".join(map(str, result["seeds"]))
    return "\n".join([
        md_table(header, rows),
        "",
        f"Report seeds {seeds} (`benchmarks/protocol.json`), once per arm; two runs at a time, each on its own core. "
        f"Source: `benchmarks/results/{GROWTH_REPORT}`.",
    ])  # fmt: skip


# Per ``--method``: its select-stage result over the protocol's ``--arch-lr`` grid (2 warm-up + 8 architecture
# epochs, argmax of the logits), and the section of docs/search-quality.md that says why it fails where it does.
METHOD_GRIDS = {
    "beta_darts": ("select_nb201_cpu_preset.json", "measured-the-selection-stage"),
    "gdas": ("select_nb201_cpu_gdas.json", "the-gumbel-methods-at-this-budget"),
    "aso_se": ("select_nb201_cpu_aso_se.json", "the-gumbel-methods-at-this-budget"),
    "darts": ("select_nb201_cpu_darts.json", "darts-over-the-grid"),
    "drnas": ("select_nb201_cpu_drnas.json", "drnas-at-this-budget"),
}


def _best_point(result: dict) -> list[dict]:
    """The runs of the grid point with the highest mean table accuracy (the first of equals)."""
    key = max(result["methods"], key=lambda k: result["methods"][k]["mean"])
    return [r for r in result["runs"] if r["method"] == key]


# Report-stage results that ran a method's chosen grid point on the report seeds (matched by its setting).
METHOD_REPORTS = ("report_nb201_cpu_methods.json", "report_nb201_cpu_drnas.json", "report_nb201_cpu_darts.json")


def _beaten(runs: list[dict]) -> int:
    """On how many of ``runs`` the final cell beats the initial logits' argmax (the first epoch record's cell)."""
    return sum(r["table_acc"] > r["table_acc_per_epoch"][0] for r in runs)


def _accuracy_range(runs: list[dict]) -> str:
    accs = [r["table_acc"] for r in runs]
    return f"{sum(accs) / len(accs):.2f} ({min(accs):.2f}-{max(accs):.2f})"


def _report_runs(chosen: dict) -> tuple[list[dict], dict | None]:
    """The report-seed runs whose setting (epochs, the logits' training, the cell's choice) is that of the ``chosen``
    run's ``config.json``, and the report seeds' initial-logit baseline; empty and None if none ran."""
    for name in METHOD_REPORTS:
        result = load(name)
        runs = [r for r in result["runs"] if _setting(r["config"]) == _setting(chosen)]
        if runs:
            return runs, result["baselines"]["initial_argmax"]
    return [], None


def _method_row(method: str, name: str, anchor: str, baseline: dict) -> list[str]:
    """A method's row: its table accuracy on the selection seeds, its setting, and how it compares with the initial
    logits' argmax, in the mean and seed by seed (the first epoch record's cell is the initial logits' argmax); then
    the same on the report seeds where its chosen setting has run there, which gives the verdict."""
    runs = _best_point(load(name))
    described = f"{_method_setting(runs[0]['config']['search'])}, best of the grid (`{name}`)"
    reported, report_baseline = _report_runs(runs[0]["config"])
    judged, against = (reported, report_baseline) if reported else (runs, baseline)
    accs = [r["table_acc"] for r in judged]
    working = sum(accs) / len(accs) > against["mean"] and 2 * _beaten(judged) > len(judged)
    failing = f"[not working at this budget](docs/search-quality.md#{anchor})"
    if reported:
        verdict = f"beats it on the report seeds ({_mean_std(report_baseline)})" if working else failing
        report = f"{_accuracy_range(reported)}; {_beaten(reported)} of {len(reported)}"
    else:
        verdict = "above it; report seeds not yet run" if working else failing
        report = "not run"
    return [f"`{method}`", _accuracy_range(runs), described, f"{_beaten(runs)} of {len(runs)}", report,
            verdict]  # fmt: skip


@renderer("nb201_methods")
def _nb201_methods() -> str:
    """Every ``--method`` on the selection seeds against the initial logits' argmax on the same seeds."""
    baseline = load(SELECT_STAGE[0])["baselines"]["initial_argmax"]
    rows = [_method_row(m, name, anchor, baseline) for m, (name, anchor) in METHOD_GRIDS.items()]
    header = [
        "`--method`",
        "table accuracy, selection seeds 0-2: mean (range)",
        "setting",
        "seeds where it beats its initial cell",
        "report seeds: mean (range); seeds where it beats its initial cell",
        f"against the initial logits' argmax (selection seeds {_mean_std(baseline)})",
    ]
    return "\n".join([
        md_table(header, rows),
        "",
        "Every method on the proxy's supernet (8 channels, one cell per stage), 2 warm-up and 8 architecture "
        "epochs, then the argmax of its logits. A method counts as working when its mean is above the initial "
        "logits' and its cell beats the initial cell on most seeds: on the report seeds where its chosen grid point "
        "has run there, otherwise on the selection seeds. Source: the files named and "
        f"{', '.join(f'`{name}`' for name in METHOD_REPORTS)}, in `benchmarks/results/`.",
    ])  # fmt: skip


# benchmarks/arch_gradient_noise.py on finished searches: the Gumbel methods' selection runs, DrNAS's report runs
GRADIENT_NOISE = ("arch_gradient_noise_nb201_cpu.json", "arch_gradient_noise_nb201_cpu_drnas.json")


@renderer("nb201_gradient_noise")
def _nb201_gradient_noise() -> str:
    """Per searched run and sampler: how reliably one architecture gradient orders an edge's two leading ops."""
    import statistics

    results = [load(name) for name in GRADIENT_NOISE]
    rows = []
    for run in (run for result in results for run in result["runs"]):
        search = run["config"]["search"]
        label = f"`{search['sampler']}`, arch lr {search['arch_lr']:g}, seed {search['seed']}"
        for r in run["results"]:
            edges = len(r["edges"])
            tau = f" at tau {r['temperature']:g}" if r["sampler"].startswith("gumbel") else ""
            steps = statistics.median(e["steps_needed"] for e in r["edges"])
            rows.append([label, f"`{r['sampler']}`{tau}", f"{r['median_snr']:.2f}", f"{steps:,.0f}",
                         f"{run['arch_steps']:,}", f"{r['favoured_has_weights']} of {edges}",
                         f"{r['favoured_is_argmax']} of {edges}"])  # fmt: skip
    header = ["search (weights and logits at its end)", "gradient taken with", "median snr",
              "median steps to average", "arch steps the search took", "favoured op has weights",
              "favoured op is the logits' argmax"]  # fmt: skip
    return "\n".join([
        md_table(header, rows),
        "",
        f"{'/'.join(sorted({str(r['draws']) for r in results}))} held-out batches per row; snr and steps per edge as "
        "in the script's docstring, the median over the cell's edges. Source: "
        f"{', '.join(f'`benchmarks/results/{name}`' for name in GRADIENT_NOISE)}.",
    ])  # fmt: skip


@renderer("nb201_baselines")
def _nb201_baselines() -> str:
    """Reference points computed from the NAS-Bench-201 table itself."""
    import csv
    import gzip
    import statistics

    with gzip.open(NB201_TABLE, "rt", newline="") as f:
        table = {row["arch_str"]: float(row["cifar10_test_acc"]) for row in csv.DictReader(f)}
    ops = {arch: re.findall(r"\|(\w+)~\d", arch) for arch in table}
    conv = [acc for arch, acc in table.items() if set(ops[arch]) <= {"nor_conv_1x1", "nor_conv_3x3"}]
    skip = [acc for arch, acc in table.items() if set(ops[arch]) == {"skip_connect"}]
    every = list(table.values())
    high = [arch for arch, acc in table.items() if acc >= 93.8]  # the bar for nb201-cpu
    residual = [table[arch] for arch in high if ops[arch][3] == "skip_connect"]  # row 3: edge 3<-0
    convs = {"nor_conv_1x1", "nor_conv_3x3"}

    def residual_with(edge_3_1: set[str]) -> list[float]:
        """Cells with ``skip_connect`` on 3<-0, an op of ``edge_3_1`` on 3<-1, convolutions on the other edges."""
        return [acc for arch, acc in table.items() if ops[arch][3] == "skip_connect" and ops[arch][4] in edge_3_1
                and set(ops[arch][:3] + ops[arch][5:]) <= convs]  # fmt: skip

    residual_convs, residual_pool = residual_with(convs), residual_with({"avg_pool_3x3"})
    rows = [
        ["the best cell", "1", f"{max(every):.2f}", "-"],
        ["cells of only `nor_conv_1x1` / `nor_conv_3x3`", f"{len(conv):,}", f"{statistics.mean(conv):.2f}",
         f"{statistics.median(conv):.2f}"],
        ["every cell", f"{len(every):,}", f"{statistics.mean(every):.2f}", f"{statistics.median(every):.2f}"],
        ["the all-`skip_connect` cell (where DARTS collapses)", f"{len(skip)}", f"{statistics.mean(skip):.2f}", "-"],
        ["cells scoring 93.8 or more", f"{len(high)}", f"{statistics.mean(table[a] for a in high):.2f}",
         f"{statistics.median(table[a] for a in high):.2f}"],
        ["of these, cells with `skip_connect` on edge 3<-0 (input to output)", f"{len(residual)}",
         f"{statistics.mean(residual):.2f}", f"{statistics.median(residual):.2f}"],
        ["cells with `skip_connect` on edge 3<-0 and convolutions on the other five edges", f"{len(residual_convs)}",
         f"{statistics.mean(residual_convs):.2f}", f"{statistics.median(residual_convs):.2f}"],
        ["the same with `avg_pool_3x3` on edge 3<-1", f"{len(residual_pool)}", f"{statistics.mean(residual_pool):.2f}",
         f"{statistics.median(residual_pool):.2f}"],
    ]  # fmt: skip
    return "\n".join([
        md_table(["cells", "how many", "mean accuracy", "median"], rows),
        "",
        "Computed from `benchmarks/tables/nb201_cifar10.csv.gz` (CIFAR-10 test accuracy, 200 epochs).",
    ])  # fmt: skip


# benchmarks/cell_order.py: cells trained from scratch at a search's size, next to the table; one file per size.
CELL_ORDER = ("cell_order_depth1.json", "cell_order_depth5.json")


def _network(config: dict) -> str:
    """``1 cell per stage, C=8; 6 epochs of 20,000 images``: the trained network and its budget, from a run's
    ``config.json``."""
    cells = config["computed"]["depth"]
    images = config["train_limit"] or 45000
    return (f"{cells} cell{'s' if cells > 1 else ''} per stage, C={config['init_channels']}; "
            f"{config['epochs']} epochs of {images:,} images")  # fmt: skip


@renderer("nb201_cell_order")
def _nb201_cell_order() -> str:
    """Per trained network size, each cell's test accuracy over the seeds next to its table accuracy."""
    rows, seeds = [], []
    for name in CELL_ORDER:
        result = load(name)
        network = _network(result["runs"][0]["config"])
        seeds.append(f"{', '.join(map(str, result['seeds']))} at {network.split(';')[0]}")
        for cell in sorted(result["cells"], key=lambda c: -c["mean"]):
            accs = ", ".join(f"{a:.2f}" for a in cell["accs"])
            rows.append([network, f"`{cell['arch_str']}`", f"{cell['table_acc']:.2f}",
                         f"{cell['mean']:.2f} ± {cell['std']:.2f}", accs])  # fmt: skip
    return "\n".join([
        md_table(["network trained here", "cell", "table accuracy (5 cells per stage, C=16, 200 epochs)",
                  "test accuracy here: mean ± std", "per seed"], rows),
        "",
        f"Seeds {'; '.join(seeds)}. Test accuracy with flip TTA on the 5,000 held-out images of our data copy. "
        + source(*CELL_ORDER),
    ])  # fmt: skip


@renderer("darts_cpu")
def _darts_cpu() -> str:
    result = load("darts_cpu_search.json")
    rows = []
    for r in result["runs"]:
        code = "current" if "commit" in r else "earlier, slower CPU convolutions"
        rows.append([r["seed"], code, r["conditions"], f"{r['wall_time_s']:.0f} s",
                     f"{r['val_acc']} / {r['test_acc']}",
                     f"{r['val_acc_derived']} / {r['test_acc_derived']}"])  # fmt: skip
    return "\n".join([
        md_table(["seed", "code", "conditions", "search wall time", "supernet val / test %",
                  "derived cell val / test %"], rows),
        "",
        f"`{result['command']}`; chance is 10%. {source('darts_cpu_search.json')}",
    ])  # fmt: skip


# --- speed ------------------------------------------------------------------------------------------------

DEFAULT_SIZE = {"chain": "C=32, D=4", "nb201": "C=16, N=5", "darts": "C=16, 8 cells"}


def space_label(space: str, init_channels: int | None, depth: int | None) -> str:
    if init_channels is None and depth is None:
        return f"{space} ({DEFAULT_SIZE[space]})"
    unit = {"chain": "D", "nb201": "N"}.get(space)
    return f"{space} (C={init_channels}, {f'{unit}={depth}' if unit else f'{depth} cells'})"


@renderer("step_throughput_cpu")
def _step_throughput_cpu() -> str:
    result = load("step_throughput_cpu.json")
    by_key: dict[tuple[str, str], dict[str, dict]] = {}
    for row in result["rows"]:
        by_key.setdefault((row["space"], row["sampler"]), {})[row["step"]] = row
    rows = []
    for (space, sampler), steps in by_key.items():
        w, a = steps["weight_step"], steps["arch_step"]
        rows.append([space_label(space, result["init_channels"], result["depth"]), f"`{sampler}`",
                     w["images_per_s"], a["images_per_s"],
                     f"{w['compile_s']:.0f} s / {a['compile_s']:.0f} s"])  # fmt: skip
    batch = result["rows"][0]["batch_size"]
    return "\n".join([
        md_table(["space", "sampler", "`weight_step` img/s", "`arch_step` img/s", "compile (weight / arch)"], rows),
        "",
        f"Batch {batch}, {result['image_size']}x{result['image_size']} images, {result['backend'].upper()} "
        f"(jax {result['jax']}), empty compilation cache; nb201 with its cells scanned (the default). "
        f"{source('step_throughput_cpu.json')}",
    ])  # fmt: skip


def _layout(scan_cells: bool | None) -> str:
    return "unrolled" if scan_cells is False else "scanned (default)"


@renderer("compile_cpu")
def _compile_cpu() -> str:
    result, default = load("compile_and_steps_cpu.json"), load("step_throughput_cpu.json")
    rows = []
    nb201_softmax = [r for r in default["rows"] if r["space"] == "nb201" and r["sampler"] == "softmax"]
    supernet_runs = [default | {"rows": nb201_softmax}]
    for run in supernet_runs + [r for r in result["runs"] if r["benchmark"] == "step_throughput"]:
        for r in run["rows"]:
            rows.append([f"{space_label(r['space'], run['init_channels'], run['depth'])} supernet `{r['step']}`, "
                         f"`{r['sampler']}`, batch {r['batch_size']}", _layout(r["scan_cells"]),
                         f"{r['compile_s']:.1f} s", f"{r['step_s']:.2f} s"])  # fmt: skip
    for run in (r for r in result["runs"] if r["benchmark"] == "train_throughput"):
        for r in run["rows"]:
            rows.append([f"{r['genotype']} training step, C={run['init_channels']}, batch {r['batch_size']}",
                         _layout(r["scan_cells"]), f"{r['compile_s']:.1f} s", f"{r['step_ms']:.0f} ms"])  # fmt: skip
    return "\n".join([
        md_table(["program", "cells", "compile", "step"], rows),
        "",
        "Each with an empty compilation cache, one at a time on a 2-core CPU. The commands are listed in the "
        f"source files. {source('compile_and_steps_cpu.json', 'step_throughput_cpu.json')}",
    ])  # fmt: skip


@renderer("train_throughput")
def _train_throughput() -> str:
    rows = []
    for filename in ("train_throughput_h100.json", "train_throughput_cpu.json"):
        result = load(filename)
        device = result["device"] if result["backend"] != "cpu" else "2-core CPU"
        size = f" (C={result['init_channels']}, `--layers {result['layers']}`)" if result["init_channels"] else ""
        for r in result["rows"]:
            rows.append([device, f"{r['genotype']}{size}", r["compute_dtype"], r["batch_size"],
                         r["steps_per_dispatch"], f"{r['compile_s']:.0f} s", rate(r["images_per_s"])])  # fmt: skip
    return "\n".join([
        md_table(["device", "network", "compute", "batch", "steps per dispatch", "compile", "images/s"], rows),
        "",
        f"The `fast` recipe's training iteration. {source('train_throughput_h100.json', 'train_throughput_cpu.json')}",
    ])  # fmt: skip


@renderer("train_fast_h100")
def _train_fast_h100() -> str:
    result = load("train_fast_h100.json")
    rows, notes = [], []
    for genotype, run in result["runs"].items():
        if "summary" not in run:
            notes.append(f"{genotype}: {run.get('status', 'not run')}.")
            continue
        s, curve = run["summary"], run["accuracy_vs_wall_time"]
        rows.append([genotype, s["recipe"], len(curve), f"**{s['test_acc']:.1f}%**", f"{s['test_acc_no_tta']:.1f}%",
                     f"{s['wall_time_s']:.0f} s", f"{curve[0]['wall_time_s']:.0f} s",
                     f"{s['train_images_per_s']:,.0f}", f"{s['params']:,}"])  # fmt: skip
        notes.insert(0, f"Command: `{run['command']}`.")
    return "\n".join([
        md_table(["genotype", "recipe", "epochs", "test accuracy, flip TTA", "without TTA", "wall time",
                  "first epoch done at (compilation included)", "train images/s", "weights"], rows),
        "",
        f"One NVIDIA H100, {s['compute_dtype']}; {s['data']['train']:,} CIFAR-10 training images, "
        f"{s['data']['test']:,} held out as the test split. " + " ".join(notes) + f" {source('train_fast_h100.json')}",
    ])  # fmt: skip


@renderer("profile_chain_cpu")
def _profile_chain_cpu() -> str:
    result = load("profile_chain_cpu.json")
    steps = result["steps_profiled"]
    groups = {
        "depthwise-convolution ops (`sep_conv_3/5/7`, `dil_conv_3/5`)": (
            "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5"),
        "of which `sep_conv_7x7`": ("sep_conv_7x7",),
        "`conv_7x1_1x7`": ("conv_7x1_1x7",),
        "pooling ops": ("max_pool_3x3", "avg_pool_3x3"),
        "the mixture itself (weights times op outputs, the sum)": ("mixture",),
    }  # fmt: skip

    def share(step: dict, names: Iterable[str], field: str = "by_op_ms") -> str:
        return f"{100 * sum(step[field].get(n, 0.0) for n in names) / step['thunk_ms']:.0f}%"

    rows = [["compute in thunks per step", *(f"{steps[s]['thunk_ms'] / 1000:.2f} s" for s in steps)]]
    rows += [[label, *(share(steps[s], names) for s in steps)] for label, names in groups.items()]
    for kind in steps["weight_step"]["by_kind_ms"]:
        rows.append([f"kind: {kind}", *(share(steps[s], [kind], "by_kind_ms") for s in steps)])
    return "\n".join([
        md_table(["", *(f"`{s}`" for s in steps)], rows),
        "",
        f"Space `{result['space']}` (C=32, D=4), sampler `{result['sampler']}`, batch {result['batch_size']}, "
        f"2-core CPU; thunks run on both cores, so their sum exceeds the wall time. "
        f"{source('profile_chain_cpu.json')}",
    ])  # fmt: skip


# --- devices ------------------------------------------------------------------------------------------------


@renderer("sharding")
def _sharding() -> str:
    rows = []
    for filename in ("sharding_h100.json", "sharding_cpu.json"):
        result = load(filename)
        for run in result["runs"]:
            n = run["device_count"]
            device = run["device"] if run["backend"] != "cpu" else f"CPU, {n} fake device{'s' * (n > 1)}"
            for r in run["rows"]:
                diff = r["max_abs_loss_difference"]
                rows.append([device, r["variant"].replace(" 1 devices", " 1 device"), f"{r['weights']['step_ms']:.1f}",
                             f"{r['arch']['step_ms']:.1f}", f"{diff:.1e}" if diff else "0"])  # fmt: skip
    h100, cpu = load("sharding_h100.json"), load("sharding_cpu.json")
    return "\n".join([
        md_table(["where", "variant", "weight iteration ms", "architecture iteration ms",
                  "largest loss difference to plain jit"], rows),
        "",
        f"Chain C={cpu['init_channels']} D={cpu['depth']}, `{cpu['sampler']}`; batch {h100['batch_size']} on the "
        f"GPU, {cpu['batch_size']} on the CPU. {source('sharding_h100.json', 'sharding_cpu.json')}",
    ])  # fmt: skip


@renderer("cpu_devices_smoke")
def _cpu_devices_smoke() -> str:
    result = load("cpu_devices_smoke.json")
    rows = [[name, f"`{r['flags']}`", r["exit_status"], f"{r['wall_s']:.0f} s", r["val_acc"], r["test_acc"]]
            for name, r in result["runs"].items()]  # fmt: skip
    return "\n".join([
        md_table(["sampler", "flags", "exit status", "wall time", "val %", "test %"], rows),
        "",
        f"{result['devices']} CPU devices on a machine with {result['machine'].split(', ')[-1]}. "
        f"{source('cpu_devices_smoke.json')}",
    ])  # fmt: skip


# --- faults -------------------------------------------------------------------------------------------------


@renderer("random_kills")
def _random_kills() -> str:
    result = load("random_kills_cpu.json")
    after = [k["after_s"] for k in result["kills"]]
    same = [k for k, v in result["identical"].items() if v]
    same = ", ".join(same[:-1]) + " and " + same[-1] if len(same) > 1 else "".join(same)
    verdict = "identical" if result["all_identical"] else "NOT identical"
    return (
        f"`benchmarks/random_kills.py` SIGKILLed the search `{result['command']}` {len(after)} times, each "
        f"{min(after):.0f}-{max(after):.0f} s into a process, then let it finish: {verdict} to the uninterrupted run "
        f"({result['uninterrupted_s']:.0f} s) in {same}. {source('random_kills_cpu.json')}"
    )


@renderer("checkpoint_cost")
def _checkpoint_cost() -> str:
    r = load("checkpoint_cost_cpu.json")
    return (
        f"`benchmarks/checkpoint_cost.py` on the `{r['preset']}` preset, 2-core CPU: "
        f"{r['checkpoint_bytes'] / 1e6:.2f} MB per checkpoint, {1000 * r['save_blocking_s']:.0f} ms of blocking save "
        f"time ({1000 * r['save_complete_s']:.0f} ms until committed, in the background), against "
        f"{r['weight_step_s']:.1f} s per weight step at batch {r['batch_size']}: a checkpoint every "
        f"{r['checkpoint_every']} steps costs {r['overhead_percent']:.3f}% of the step time. "
        f"{source('checkpoint_cost_cpu.json')}"
    )


# --- files --------------------------------------------------------------------------------------------------


def render_text(text: str, where: str = "text") -> str:
    """``text`` with every generated block re-rendered; unknown names and unclosed blocks are errors."""
    names = BEGIN.findall(text)
    blocks = list(BLOCK.finditer(text))
    if len(blocks) != len(names):
        raise ValueError(f"{where}: a generated block without its END marker ({', '.join(names)})")
    for name in names:
        if name not in RENDERERS:
            raise ValueError(f"{where}: no renderer for block {name!r} (known: {', '.join(sorted(RENDERERS))})")

    def replace(match: re.Match) -> str:
        body = RENDERERS[match["name"]]().strip() + "\n"
        return match["begin"] + body + match["end"]

    return BLOCK.sub(replace, text)


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def stale_blocks(files: Iterable[Path] | None = None) -> list[str]:
    """``FILE: NAME`` for every block whose text differs from what its renderer gives now."""
    stale = []
    for path in doc_files() if files is None else files:
        text = path.read_text()
        fresh = render_text(text, shown(path))
        if fresh != text:
            pairs = zip(BLOCK.finditer(text), BLOCK.finditer(fresh), strict=True)
            stale += [f"{shown(path)}: {old['name']}" for old, new in pairs if old["body"] != new["body"]]
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any generated block is stale; write nothing")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_blocks()
            for entry in stale:
                print(f"stale: {entry}", file=sys.stderr)
            if stale:
                print("run: python benchmarks/render_tables.py", file=sys.stderr)
            return 1 if stale else 0
        for path in doc_files():
            text = path.read_text()
            fresh = render_text(text, shown(path))
            if fresh != text:
                path.write_text(fresh)
                print(f"rewrote {shown(path)}")
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
