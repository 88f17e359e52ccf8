"""The ASO-SE search driver: ``train_and_evaluate(config, workdir)`` runs the cycles and fills the run directory.

Run directory::

    config.json      the RunConfig, with the computed schedule length
    metrics.jsonl    one JSON object per logged step ("event": "step"), per epoch ("epoch", with
                     held-out accuracy, per-edge entropy and architecture weights), per phase
                     ("phase", its global-step span) and per mutation ("mutation", the genotype)
    genotype.json    the derived architecture, rewritten after every cycle and at the end
    summary.json     parameter counts, final validation / test accuracy (percent), wall time, device
    *.png            architecture-weight heatmaps, curves with phase boundaries, schedules

The training split stays on the device as uint8; each jitted iteration gathers its batch by index,
augments it and takes its step, so the host only sends index arrays.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from asose_jax import cycle, plots
from asose_jax.genotypes import derive_genotype, genotype_edge_weights, genotype_to_json, save_genotype
from asose_jax.input_pipeline import (
    ImageArrays,
    augment,
    epoch_batches,
    eval_batches,
    load_data,
    normalize,
    split_for_architecture,
)
from asose_jax.metrics_log import MetricsWriter
from asose_jax.progress import Progress
from asose_jax.run_config import RunConfig
from asose_jax.sampling import edge_entropy, is_single_path
from asose_jax.spaces import count_params, uniform_arch_weights
from asose_jax.steps import State, build_model, init_search_state, make_search_steps

_AUG_WEIGHT, _AUG_ARCH = 2, 3  # PRNG streams of the augmentation (0 and 1 are the steps' samplers)
_SCHEDULED = ("lr", "temperature")  # reported at the epoch's last step, not averaged
_SHOWN = (("loss", "loss", 1), ("accuracy", "acc%", 100), ("arch_loss", "arch_loss", 1), ("temperature", "tau", 1))
RUN_FILES = ("metrics.jsonl", "summary.json", "genotype.json")


class Iterations(NamedTuple):
    """Jitted iterations over device-resident data; each returns ``(state, metrics)``, state donated.

    ``weights(state, images, labels, idx [B], uniform_arch)`` serves warm-up (``uniform_arch``
    True), re-training and the weight half of the architecture phase with one compilation.
    ``arch(state, images, labels, weight_idx [B], arch_idx [B])`` takes one architecture step on
    the held-out batch (the training batch feeds the second-order virtual step); with
    ``alpha-only`` it also advances the global step. ``evaluate(state, images, labels, idx, mask,
    fixed_weights | None)`` returns eval metrics.
    """

    weights: Callable
    arch: Callable
    evaluate: Callable


def make_iterations(model: nn.Module, config: RunConfig) -> Iterations:
    """The jitted iterations of one architecture."""
    steps = make_search_steps(model, config.search)
    advance = config.arch_phase == "alpha-only"

    def batch(state: State, images, labels, idx, stream: int) -> dict:
        base = jax.random.wrap_key_data(state["rng"], impl=config.search.prng_impl)
        key = jax.random.fold_in(jax.random.fold_in(base, state["step"]), stream)
        return {"image": augment(key, images[idx], cutout=config.cutout), "label": labels[idx]}

    def weights(state, images, labels, idx, uniform_arch):
        return steps.weight_step(state, batch(state, images, labels, idx, _AUG_WEIGHT), uniform_arch)

    def arch(state, images, labels, weight_idx, arch_idx):
        train_batch = batch(state, images, labels, weight_idx, _AUG_WEIGHT)  # the weight half's batch
        state, metrics = steps.arch_step(state, batch(state, images, labels, arch_idx, _AUG_ARCH), train_batch)
        return ({**state, "step": state["step"] + 1} if advance else state), metrics

    def evaluate(state, images, labels, idx, mask, fixed_weights):
        return steps.eval_step(
            state, {"image": normalize(images[idx]), "label": labels[idx], "mask": mask}, fixed_weights
        )

    return Iterations(jax.jit(weights, donate_argnums=0), jax.jit(arch, donate_argnums=0), jax.jit(evaluate))


def param_counts(model: nn.Module, image_shape: tuple[int, ...]) -> dict[str, int]:
    """``{"weights": trainable weights, "arch": architecture logits}``, from shapes only."""
    images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, uniform_arch_weights(model), train=False), images
    )
    return {"weights": count_params(variables["params"]), "arch": sum(e * k for e, k in model.arch_shapes().values())}


def device_description() -> str:
    devices = jax.devices()
    return f"{devices[0].platform}: {devices[0].device_kind} x{len(devices)}"


def check_workdir(workdir: str | pathlib.Path) -> pathlib.Path:
    """Refuses a ``workdir`` that is a file or already holds a run, so nothing is overwritten."""
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} is a file; choose a directory")
    existing = [name for name in RUN_FILES if (workdir / name).exists()]
    if existing:
        raise ValueError(f"--workdir {workdir} already holds a run ({existing[0]}); choose a new --workdir")
    return workdir


def _create(workdir: pathlib.Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create --workdir {workdir}: {err.strerror}") from None


def _write_json(path: pathlib.Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


class _Run:
    """The mutable bookkeeping of one search: state, data on device, writers. Internal to the driver."""

    def __init__(self, config: RunConfig, workdir: pathlib.Path, data: ImageArrays, model: nn.Module):
        self.config, self.workdir, self.model = config, workdir, model
        self.op_names = tuple(model.op_names)
        self.weight_idx, self.arch_idx = split_for_architecture(
            len(data.x_train), config.arch_split, config.search.seed
        )
        self.images, self.labels = jax.device_put(data.x_train), jax.device_put(data.y_train)
        self.test_images, self.test_labels = jax.device_put(data.x_test), jax.device_put(data.y_test)
        self.state = init_search_state(model, config.search, data.x_train.shape[1:])
        self.iterations = make_iterations(model, config)
        self.writer = MetricsWriter(workdir / "metrics.jsonl")

    def genotype(self):
        return derive_genotype(self.config.search.space, jax.device_get(self.state["arch"]), self.op_names)

    def evaluate(self, on_test: bool, derived: bool) -> dict[str, float]:
        """Loss and accuracy (percent) of the derived architecture (or the softmax supernet) on the
        held-out architecture split or the test split."""
        images, labels = (self.test_images, self.test_labels) if on_test else (self.images, self.labels)
        subset = np.arange(len(self.test_labels)) if on_test else self.arch_idx
        fixed = genotype_edge_weights(self.genotype(), self.op_names) if derived else None
        loss_sum = correct = count = 0.0
        for pos, mask in eval_batches(len(subset), self.config.batch_size):
            m = self.iterations.evaluate(self.state, images, labels, subset[pos], mask, fixed)
            n = float(m["count"])
            loss_sum, correct, count = loss_sum + float(m["loss"]) * n, correct + float(m["accuracy"]) * n, count + n
        return {"loss": loss_sum / count, "acc": 100.0 * correct / count}

    def run_epoch(self, cycle_index: int, phase: cycle.Phase, epoch: int) -> dict:
        """One epoch of ``phase``; logs steps, returns the epoch's mean training metrics."""
        config, seed = self.config, (self.config.search.seed, cycle_index, cycle.PHASES.index(phase.name), epoch)
        if phase.name == cycle.ARCH:
            arch_batches = epoch_batches((*seed, 1), self.arch_idx, config.batch_size)
            weight_batches = epoch_batches((*seed, 0), self.weight_idx, config.batch_size, len(arch_batches))
            images_per_step = config.batch_size * (2 if config.arch_phase == "alternate" else 1)  # both halves
        else:
            weight_batches = epoch_batches(seed, self.weight_idx, config.batch_size)
            images_per_step = config.batch_size
        uniform = np.bool_(phase.name == cycle.WARMUP)
        alternate = config.arch_phase == "alternate"
        label = f"c{cycle_index}/{config.cycles} {phase.name} e{epoch}/{phase.epochs}"
        progress, history = Progress(len(weight_batches), label), []
        mark, mark_time = 0, time.perf_counter()
        for i in range(len(weight_batches)):
            metrics = {}
            if phase.name == cycle.ARCH:
                self.state, metrics = self.iterations.arch(
                    self.state, self.images, self.labels, weight_batches[i], arch_batches[i]
                )
            if phase.name != cycle.ARCH or alternate:
                self.state, weight_metrics = self.iterations.weights(
                    self.state, self.images, self.labels, weight_batches[i], uniform
                )
                metrics = {**metrics, **weight_metrics}
            history.append(metrics)
            if (i + 1) % config.log_every == 0 or i + 1 == len(weight_batches):
                current = jax.device_get(metrics)
                now = time.perf_counter()
                rate = (i + 1 - mark) * images_per_step / (now - mark_time)
                mark, mark_time = i + 1, now
                record = {"event": "step", "cycle": cycle_index, "phase": phase.name, "epoch": epoch,
                          "step": int(self.state["step"]), **current, "images_per_s": rate}  # fmt: skip
                self.writer.write(record)
                shown = {name: float(current[k]) * scale for k, name, scale in _SHOWN if k in current}
                progress.update(i + 1, step=record["step"], img_s=round(rate, 1), **shown)
        progress.close()
        fetched = jax.device_get(history)
        means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k not in _SCHEDULED}
        means.update({k: float(fetched[-1][k]) for k in _SCHEDULED if k in fetched[-1]})
        if not all(math.isfinite(v) for v in means.values()):
            bad = next(k for k, v in means.items() if not math.isfinite(v))
            raise FloatingPointError(
                f"non-finite {bad} in cycle {cycle_index}, {phase.name} epoch {epoch} "
                f"(step {int(self.state['step'])}); lower --weight-lr / --arch-lr"
            )
        return means

    def epoch_record(self, cycle_index: int, phase: str, epoch: int, train: dict) -> dict:
        val = self.evaluate(on_test=False, derived=True)
        arch = jax.device_get(self.state["arch"])
        return {
            "event": "epoch", "cycle": cycle_index, "phase": phase, "epoch": epoch, "step": int(self.state["step"]),
            **{k if k in _SCHEDULED else f"train_{k}": v for k, v in train.items()},
            "val_loss": val["loss"], "val_acc": val["acc"],
            "entropy": jax.device_get(edge_entropy(arch)),
            "arch_weights": {name: jax.nn.softmax(a, -1) for name, a in arch.items()},
        }  # fmt: skip


def train_and_evaluate(config: RunConfig, workdir: str | pathlib.Path, dry_run: bool = False) -> dict:
    """Runs the search described by ``config``, writing into ``workdir``; returns the summary.

    ``dry_run`` loads the data, builds the model and writes ``config.json`` and a ``summary.json``
    with the parameter counts, without training.
    """
    start = time.perf_counter()
    workdir = check_workdir(workdir)
    data = load_data(config.data, config.data_dir, config.train_limit)
    n_arch = len(split_for_architecture(len(data.x_train), config.arch_split, config.search.seed)[1])
    n_weight = len(data.x_train) - n_arch
    phases = cycle.cycle_phases(config, n_weight, n_arch)
    search = dataclasses.replace(
        config.search, num_classes=data.num_classes, total_steps=cycle.total_steps(config, n_weight, n_arch)
    )
    config = dataclasses.replace(config, search=search)
    model = build_model(search)
    image_shape = data.x_train.shape[1:]
    summary = {"params": param_counts(model, image_shape), "device": device_description(),
               "data": {"weight_split": n_weight, "arch_split": n_arch, "test": len(data.x_test),
                        "image_shape": list(image_shape)}}  # fmt: skip
    _create(workdir)  # only now that data and model are known to be good
    _write_json(workdir / "config.json", {**config.to_json(), "op_names": list(model.op_names)})
    if dry_run:
        _write_json(workdir / "summary.json", {**summary, "dry_run": True})
        return summary

    run = _Run(config, workdir, data, model)
    cycle_accuracies: list[float] = []
    stopped_early = False
    for cycle_index in range(1, config.cycles + 1):
        for phase in phases:
            phase_start = int(run.state["step"])
            if phase.name == cycle.MUTATION:
                # Growth is a separate feature; until it lands the mutation only records the genotype.
                run.writer.write({"event": "mutation", "cycle": cycle_index, "step": phase_start, "growth": "none",
                                  "genotype": genotype_to_json(run.genotype())})  # fmt: skip
                continue
            record = None
            for epoch in range(1, phase.epochs + 1):
                train = run.run_epoch(cycle_index, phase, epoch)
                record = run.epoch_record(cycle_index, phase.name, epoch, train)
                run.writer.write(record)
            if phase.epochs:
                run.writer.write({"event": "phase", "cycle": cycle_index, "phase": phase.name,
                                  "step_start": phase_start, "step_end": int(run.state["step"])})  # fmt: skip
        if record is not None:
            cycle_accuracies.append(record["val_acc"])
        save_genotype(workdir / "genotype.json", run.genotype())
        plots.plot_run(workdir)
        if cycle.plateaued(cycle_accuracies, config.plateau_window, config.plateau_threshold):
            stopped_early = True
            run.writer.write({"event": "early_stop", "cycle": cycle_index, "step": int(run.state["step"]),
                              "cycle_val_acc": cycle_accuracies})  # fmt: skip
            break

    genotype = run.genotype()
    save_genotype(workdir / "genotype.json", genotype)
    val, test = run.evaluate(on_test=False, derived=True), run.evaluate(on_test=True, derived=True)
    # The softmax-weighted supernet is what soft samplers train; single-path weights never saw that mixture.
    mixture = not is_single_path(config.search.sampler)
    val_super = run.evaluate(on_test=False, derived=False) if mixture else {"acc": None}
    test_super = run.evaluate(on_test=True, derived=False) if mixture else {"acc": None}
    run.writer.close()
    summary.update({
        "val_acc": val["acc"], "val_loss": val["loss"], "test_acc": test["acc"], "test_loss": test["loss"],
        "val_acc_supernet": val_super["acc"], "test_acc_supernet": test_super["acc"],
        "genotype": genotype_to_json(genotype), "cycles_completed": cycle_index, "stopped_early": stopped_early,
        "steps": int(run.state["step"]), "wall_time_s": time.perf_counter() - start,
    })  # fmt: skip
    _write_json(workdir / "summary.json", summary)
    plots.plot_run(workdir)
    return summary
