"""Plots of a run, drawn from its ``metrics.jsonl`` alone (so ``experiments/plot_run.py`` can redraw them).

* ``arch_weights.png``: per edge, a heatmap of ``softmax(a)`` (ops x epochs);
* ``curves.png``: loss and accuracy over global steps, phases shaded, growth events marked;
* ``schedules.png``: temperature and learning rate over global steps;
* ``table_acc.png`` (NAS-Bench-201 searches scored with ``--nb201-table``): the table accuracy of
  the cell derived at each epoch end.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib

from asose_jax.runtime.metrics_log import read_metrics

PHASE_COLOURS = {"warmup": "tab:blue", "arch": "tab:orange", "retrain": "tab:green"}
PLOT_FILES = ("arch_weights.png", "curves.png", "schedules.png")
TABLE_PLOT = "table_acc.png"


@functools.cache
def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported at the first plot: a run stopped before it never pays the
    import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shade_phases(ax, phases: list[dict]) -> None:
    seen = set()
    for p in phases:
        label = p["phase"] if p["phase"] not in seen else None
        seen.add(p["phase"])
        ax.axvspan(p["step_start"], p["step_end"], color=PHASE_COLOURS.get(p["phase"], "grey"), alpha=0.12, lw=0,
                   label=label)  # fmt: skip
    for p in phases:
        ax.axvline(p["step_start"], color="grey", lw=0.4)


def _mark_growth(ax, growth: list[dict]) -> None:
    for i, event in enumerate(growth):
        ax.axvline(event["step"], color="tab:red", lw=1.2, ls="--", label="growth" if i == 0 else None)
        ax.annotate(event["kind"], (event["step"], 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                    color="tab:red", ha="left", va="top", rotation=90)  # fmt: skip


def _finish_step_plot(fig, axes, phases: list[dict], path: pathlib.Path, growth: list[dict] = ()) -> None:
    """Phases shaded, growth events marked, x axis labelled, legends; saved and closed."""
    for ax in axes:
        _shade_phases(ax, phases)
        _mark_growth(ax, list(growth))
        ax.set_xlabel("global step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def _edge_labels(record: dict, name: str) -> list[str]:
    """Labels of the rows of ``record["arch_weights"][name]`` (grown chains name theirs: rows move)."""
    return record.get("edge_names", {}).get(name) or [
        f"{name} edge {e}" for e in range(len(record["arch_weights"][name]))
    ]


def plot_arch_weights(epochs: list[dict], op_names: list[str], path: pathlib.Path) -> None:
    """One heatmap per edge; an edge that growth added is blank before it existed."""
    names = sorted(epochs[-1]["arch_weights"])
    panels = [(name, label) for name in names for label in _edge_labels(epochs[-1], name)]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(3.2 * cols, 0.25 * len(op_names) * rows + 1.0 * rows),
                                   squeeze=False, sharey=True)  # fmt: skip
    steps = [r["step"] for r in epochs]
    for ax, (name, label) in zip(axes.flat, panels, strict=False):
        rows = [_edge_labels(r, name) for r in epochs]
        grid = [[r["arch_weights"][name][labels.index(label)][k] if label in labels else math.nan
                 for r, labels in zip(epochs, rows, strict=True)] for k in range(len(op_names))]  # fmt: skip
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_yticks(range(len(op_names)), op_names, fontsize=6)
        ticks = sorted({0, len(steps) - 1})
        ax.set_xticks(ticks, [str(steps[t]) for t in ticks], fontsize=6)
        fig.colorbar(image, ax=ax, fraction=0.05)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("architecture weights softmax(a) per edge (x: global step at each epoch end)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_curves(
    steps: list[dict], epochs: list[dict], phases: list[dict], path: pathlib.Path, growth: list[dict] = ()
) -> None:
    fig, (loss_ax, acc_ax) = _pyplot().subplots(1, 2, figsize=(12, 4))
    weight_steps = [r for r in steps if "loss" in r]
    arch_steps = [r for r in steps if "arch_loss" in r]
    loss_ax.plot([r["step"] for r in weight_steps], [r["loss"] for r in weight_steps], lw=0.8, label="train loss")
    loss_ax.plot([r["step"] for r in arch_steps], [r["arch_loss"] for r in arch_steps], lw=0.8,
                 label="held-out loss (arch steps)")  # fmt: skip
    validated = [r for r in epochs if r["val_loss"] is not None]  # not a selection's epochs without weight steps
    loss_ax.plot([r["step"] for r in validated], [r["val_loss"] for r in validated], "k.-", label="val loss")
    acc_ax.plot([r["step"] for r in weight_steps], [100 * r["accuracy"] for r in weight_steps], lw=0.8,
                label="train acc")  # fmt: skip
    acc_ax.plot([r["step"] for r in validated], [r["val_acc"] for r in validated], "k.-", label="val acc")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax.set_ylabel("accuracy (%)")
    _finish_step_plot(fig, (loss_ax, acc_ax), phases, path, growth)


def plot_schedules(steps: list[dict], phases: list[dict], path: pathlib.Path) -> None:
    fig, (tau_ax, lr_ax) = _pyplot().subplots(1, 2, figsize=(12, 3.5))
    tau_ax.plot([r["step"] for r in steps], [r["temperature"] for r in steps])
    tau_ax.set_ylabel("temperature")
    with_lr = [r for r in steps if "lr" in r]
    lr_ax.plot([r["step"] for r in with_lr], [r["lr"] for r in with_lr])
    lr_ax.set_ylabel("learning rate")
    _finish_step_plot(fig, (tau_ax, lr_ax), phases, path)


def plot_table_accuracy(runs: dict[str, list[dict]], path: pathlib.Path, title: str) -> None:
    """One line per run (``{label: epoch records with "step" and "table_acc"}``): the NAS-Bench-201 accuracy
    of the cell derived at each epoch end over global steps, with the table's best cell dashed."""
    fig, ax = _pyplot().subplots(figsize=(8, 4.5))
    for label, epochs in runs.items():
        scored = [r for r in epochs if r.get("table_acc") is not None]
        ax.plot([r["step"] for r in scored], [r["table_acc"] for r in scored], ".-", lw=1, ms=3, label=label)
    ax.axhline(94.37, color="grey", ls="--", lw=0.8, label="best cell (94.37)")
    ax.set_xlabel("global step")
    ax.set_ylabel("NAS-Bench-201 CIFAR-10 test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_run(run_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """Draws every plot of ``run_dir`` from its ``metrics.jsonl``; returns the files written."""
    run_dir = pathlib.Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise ValueError(f"{run_dir} has no metrics.jsonl; pass the run directory of a search")
    records = list(read_metrics(metrics_path))
    by_event = {
        event: [r for r in records if r.get("event") == event] for event in ("step", "epoch", "phase", "growth")
    }
    if not by_event["epoch"]:
        raise ValueError(f"{metrics_path} has no finished epoch yet; nothing to plot")
    try:
        op_names = json.loads((run_dir / "config.json").read_text())["computed"]["op_names"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"cannot read the op names from {run_dir / 'config.json'} ({err})") from None
    written = [run_dir / name for name in PLOT_FILES]
    plot_arch_weights(by_event["epoch"], op_names, written[0])
    plot_curves(by_event["step"], by_event["epoch"], by_event["phase"], written[1], by_event["growth"])
    plot_schedules(by_event["step"], by_event["phase"], written[2])
    if any("table_acc" in r for r in by_event["epoch"]):
        written.append(run_dir / TABLE_PLOT)
        plot_table_accuracy({run_dir.name: by_event["epoch"]}, written[-1], "cell derived at each epoch end")
    return written


def plot_training(run_dir: str | pathlib.Path) -> pathlib.Path:
    """``curves.png`` of a from-scratch training run (``experiments/cifar10_train.py``): loss, and train
    and test accuracy, over epochs."""
    run_dir = pathlib.Path(run_dir)
    epochs = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "epoch"]
    if not epochs:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no finished epoch yet; nothing to plot")
    x = [r["epoch"] for r in epochs]
    fig, (loss_ax, acc_ax) = _pyplot().subplots(1, 2, figsize=(11, 3.8))
    loss_ax.plot(x, [r["train_loss"] for r in epochs], ".-", label="train loss")
    loss_ax.plot(x, [r["test_loss"] for r in epochs], ".-", label="test loss")
    acc_ax.plot(x, [r["train_acc"] for r in epochs], ".-", label="train acc (augmented)")
    acc_ax.plot(x, [r["test_acc"] for r in epochs], ".-", label="test acc")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax.set_ylabel("accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
