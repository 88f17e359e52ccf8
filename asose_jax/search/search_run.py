"""One search in progress (``SearchRun``): model and state, data on the device, the cycles, growth, metrics and
checkpoints. ``asose_jax.search.driver.train_and_evaluate`` creates it and runs it."""

from __future__ import annotations

import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from asose_jax.runtime import plots
from asose_jax.runtime.checkpointing import Checkpoints
from asose_jax.runtime.faults import fault_point
from asose_jax.runtime.input_pipeline import (
    ImageArrays,
    epoch_batches,
    eval_batches,
    split_for_architecture,
)
from asose_jax.runtime.metrics_log import MetricsWriter, write_json
from asose_jax.runtime.parallel import (
    is_primary,
    make_mesh,
    replicate,
    shard_batch,
)
from asose_jax.runtime.progress import Progress
from asose_jax.runtime.rundir import Interrupted, check_finite
from asose_jax.search import cycle
from asose_jax.search.growth import (
    GrowthCaps,
    Mutation,
    grow,
    kinds_to_try,
    next_mutation,
)
from asose_jax.search.iterations import (
    DERIVED,
    jit_iterations,
    make_iterations,
    param_counts,
    validation_measure,
)
from asose_jax.search.nb201_table import NB201Table
from asose_jax.search.run_config import RunConfig
from asose_jax.search.run_state import Position, RunProgress
from asose_jax.search.sampling import edge_entropy
from asose_jax.search.steps import State, init_search_state
from asose_jax.spaces import count_params, space_of
from asose_jax.spaces.genotypes import derive_genotype, genotype_edge_weights, genotype_to_json

_GROWTH = 4  # PRNG stream of growth (new weights and logits, width mappings)
_SCHEDULED = ("lr", "temperature")  # reported at the epoch's last step, not averaged
_SHOWN = (("loss", "loss", 1), ("accuracy", "acc%", 100), ("arch_loss", "arch_loss", 1), ("temperature", "tau", 1))
RECALIBRATION_BATCHES = 8  # training batches that re-estimate BatchNorm statistics for a single path
_CHECKED = ("loss", "grad_norm", "arch_loss", "arch_grad_norm")  # must stay finite
_SKIPPED = ("skipped", "arch_skipped")  # 1.0 where --nan-policy skip dropped an update


@jax.jit
def _all_finite(state: State) -> jax.Array:
    """Whether every floating-point array of the state (weights, BN state, logits, optimiser states) is finite."""
    floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in floats]))


class SearchRun:
    """The mutable bookkeeping of one search: state, data on device, metrics, checkpoints.

    ``progress`` (a ``RunProgress``) is the JSON half of a checkpoint: where the run is, the fetched per-step
    metrics of the unfinished epoch, the cycle-final accuracies, the growth so far, the length of
    ``metrics.jsonl`` and the wall time, so a resumed run continues bit for bit.
    """

    def __init__(
        self, config: RunConfig, workdir: pathlib.Path, data: ImageArrays, model: nn.Module, table: NB201Table | None
    ):
        self.config, self.workdir, self.model, self.table = config, workdir, model, table
        self.op_names = tuple(model.op_names)
        self.weight_idx, self.arch_idx = split_for_architecture(
            len(data.x_train), config.arch_split, config.search.seed
        )
        self.mesh = mesh = make_mesh()
        self.images, self.labels, self.test_images, self.test_labels = replicate(
            (data.x_train, data.y_train, data.x_test, data.y_test), mesh
        )
        self.image_shape = data.x_train.shape[1:]
        self.jitted = jit_iterations(config, mesh)
        self.set_model(model, replicate(init_search_state(model, config.search, self.image_shape), mesh))
        self.writer = MetricsWriter(workdir / "metrics.jsonl", enabled=is_primary())
        self.checkpoints = Checkpoints(workdir, config.keep_checkpoints)
        self.progress = RunProgress(architecture=space_of(model).architecture_json(model))
        self.session_start = time.perf_counter()
        self.signal: int | None = None

    def set_model(self, model: nn.Module, state: State) -> None:
        """The current (initial or grown) model, its state and its iterations (traced on their first call)."""
        self.model, self.state = model, state
        self.iterations = make_iterations(model, self.config, self.mesh, self.jitted)

    def resume(self) -> bool:
        """Restores the newest checkpoint, if any (rebuilding the grown model it holds), and cuts
        ``metrics.jsonl`` back to it."""
        if self.checkpoints.latest_step() is None:
            return False
        progress = RunProgress.from_json(self.checkpoints.restore_progress())
        space = space_of(self.model)
        if progress.architecture not in (None, space.architecture_json(self.model)):
            model = space.with_architecture(self.model, progress.architecture)
            like = replicate(init_search_state(model, self.config.search, self.image_shape), self.mesh)
            self.set_model(model, like)  # restored arrays take its (replicated) shardings
        self.state, _ = self.checkpoints.restore(self.state)
        self.progress = progress
        self.set_model(self.model, self.state)
        self.writer.truncate(progress.metrics_bytes)
        return True

    def wall_time(self) -> float:
        return self.progress.wall_time_s + time.perf_counter() - self.session_start

    def save(self, position: Position, epoch_history: list[dict] = ()) -> None:
        """Checkpoints the state with ``position`` (where to continue) and the unfinished epoch's metrics;
        refuses a non-finite state, so the newest checkpoint is always a good one."""
        if not bool(_all_finite(self.state)):
            raise FloatingPointError(
                f"non-finite weights, BN state or logits after step {int(self.state['step'])}; the last "
                "checkpoint is kept: lower --weight-lr / --arch-lr and rerun with --resume"
            )
        wall_time = self.wall_time()
        self.session_start = time.perf_counter()
        progress = self.progress
        progress.position, progress.epoch_history, progress.wall_time_s = position, list(epoch_history), wall_time
        progress.metrics_bytes, progress.saves = self.writer.tell(), progress.saves + 1
        self.checkpoints.save(progress.saves, self.state, progress.to_json())
        if self.signal is not None:
            raise Interrupted(self.signal, int(self.state["step"]), self.workdir)

    def genotype(self):
        logits = jax.device_get(self.state["arch"])
        return derive_genotype(self.config.search.space, logits, self.op_names, self.model)

    def accuracies_since_growth(self) -> list[float]:
        """Cycle-final validation accuracies from the cycle of the last growth on (its accuracy is the grown
        network's), or of the whole run."""
        growth = self.progress.growth
        return self.progress.cycle_accuracies[growth[-1]["cycle"] - 1 if growth else 0 :]

    def count_weights(self, model: nn.Module) -> int:
        return param_counts(model, self.image_shape)["weights"]

    def decide_growth(self, cycle_index: int) -> tuple[Mutation, str] | None:
        """The mutation due at this cycle's mutation phase and why, or None (see ``growth``); writes a
        ``growth_skipped`` record when growth is due but every candidate would pass a cap."""
        config, growth = self.config, self.progress.growth
        if not space_of(self.model).growth_kinds or config.growth == "off":
            return None
        forced = config.forced_growth()
        if forced:
            if cycle_index not in forced:
                return None
            kinds, reason = (forced[cycle_index],), "forced (--grow-at)"
        else:
            since = self.accuracies_since_growth()
            if not cycle.plateaued(since, config.growth_window, config.growth_threshold):
                return None
            kinds = kinds_to_try(config.growth_strategy, growth[-1]["kind"] if growth else None)
            reason = f"plateau over {config.growth_window} cycles"
        mutation, refused = self.next_mutation(kinds)
        if mutation is None:
            self.writer.write({"event": "growth_skipped", "cycle": cycle_index, "step": int(self.state["step"]),
                               "reason": reason, "capped": refused})  # fmt: skip
            return None
        return mutation, reason

    def next_mutation(self, kinds) -> tuple[Mutation | None, list[str]]:
        config = self.config
        caps = GrowthCaps(config.max_depth, config.max_width, config.max_branches, config.max_params)
        return next_mutation(self.model, kinds, caps, self.count_weights, config.width_factor)

    def can_still_grow(self) -> bool:
        """Whether plateau-triggered growth is on and some mutation still fits the caps."""
        config = self.config
        if config.growth == "off" or config.forced_growth() or not space_of(self.model).growth_kinds:
            return False
        growth = self.progress.growth
        return (
            self.next_mutation(kinds_to_try(config.growth_strategy, growth[-1]["kind"] if growth else None))[0]
            is not None
        )

    def grow(self, cycle_index: int, mutation: Mutation, reason: str) -> dict:
        """Applies ``mutation`` to model and state, re-binds the iterations (the next call traces the grown
        network once) and records the event with validation accuracy just before and just after."""
        before = self.validation()
        params_before = count_params(self.state["params"])
        step = int(self.state["step"])
        key = jax.random.fold_in(jax.random.wrap_key_data(self.state["rng"], impl=self.config.search.prng_impl), step)
        where = space_of(self.model).describe(self.model, mutation)
        model, state = grow(self.model, jax.device_get(self.state), mutation, jax.random.fold_in(key, _GROWTH),
                            self.config.search.arch_init_scale, self.config.width_noise)  # fmt: skip
        self.set_model(model, replicate(state, self.mesh))
        fault_point("growth_inside")
        after = self.validation()
        event = {"event": "growth", "cycle": cycle_index, "step": step, "kind": mutation.kind, "where": where,
                 "reason": reason, "params_before": params_before, "params_after": count_params(state["params"]),
                 "val_acc_before": before["acc"], "val_acc_after": after["acc"], "val_loss_before": before["loss"],
                 "val_loss_after": after["loss"], "architecture": space_of(model).architecture_json(model)}  # fmt: skip
        self.writer.write(event)
        self.progress.growth.append({k: event[k] for k in ("cycle", "step", "kind", "where")})
        self.progress.architecture = event["architecture"]
        fault_point("growth_after")
        return event

    def validation(self, on_test: bool = False) -> dict[str, float]:
        """Loss and accuracy (percent) by the sampler's ``validation_measure``."""
        derived = validation_measure(self.config.search.sampler) == DERIVED
        return self.evaluate(on_test, derived)

    def evaluate(self, on_test: bool, derived: bool) -> dict[str, float]:
        """Loss and accuracy (percent) on the held-out architecture split or the test split: of the derived
        architecture's path with BatchNorm statistics re-estimated on the first ``RECALIBRATION_BATCHES``
        training batches, or of the supernet with the sampler's expected mixture weights."""
        images, labels = (self.test_images, self.test_labels) if on_test else (self.images, self.labels)
        subset = np.arange(len(self.test_labels)) if on_test else self.arch_idx
        state, fixed = self.state, None
        if derived:
            fixed = replicate(genotype_edge_weights(self.genotype(), self.op_names), self.mesh)
            n = min(RECALIBRATION_BATCHES, len(self.weight_idx) // self.config.batch_size)
            idx = self.weight_idx[: n * self.config.batch_size].reshape(n, self.config.batch_size)
            stats = self.iterations.recalibrate(state, self.images, self.labels, shard_batch(idx, self.mesh, 1), fixed)
            state = {**state, "batch_stats": stats}
        loss_sum = correct = count = 0.0
        for pos, mask in eval_batches(len(subset), self.config.batch_size):
            idx, mask = shard_batch(subset[pos], self.mesh), shard_batch(mask, self.mesh)
            m = self.iterations.evaluate(state, images, labels, idx, mask, fixed)
            n = float(m["count"])
            loss_sum, correct, count = loss_sum + float(m["loss"]) * n, correct + float(m["accuracy"]) * n, count + n
        return {"loss": loss_sum / count, "acc": 100.0 * correct / count}

    def check_finite(self, fetched: list[dict], first_step: int, where: str) -> None:
        """With ``--nan-policy stop``, raises FloatingPointError at the first non-finite loss or gradient,
        before any checkpoint holds its state."""
        if self.config.nan_policy == "stop":
            fix = "lower --weight-lr / --arch-lr and rerun with --resume"
            check_finite(fetched, first_step, _CHECKED, f" ({where})", fix)

    def run_epoch(self, cycle_index: int, phase_index: int, phase: cycle.Phase, epoch: int) -> dict:
        """One epoch of ``phase`` from the saved position; logs steps, checkpoints every
        ``checkpoint_every`` steps, returns the epoch's mean training metrics."""
        config, seed = self.config, (self.config.search.seed, cycle_index, phase_index, epoch)
        if phase.name == cycle.ARCH:
            arch_batches = epoch_batches((*seed, 1), self.arch_idx, config.batch_size)
            weight_batches = epoch_batches((*seed, 0), self.weight_idx, config.batch_size, len(arch_batches))
            images_per_step = config.batch_size * (2 if config.arch_phase == "alternate" else 1)  # both halves
        else:
            weight_batches = epoch_batches(seed, self.weight_idx, config.batch_size)
            images_per_step = config.batch_size
        position = self.progress.position
        start = position.batch if position.same_epoch(cycle_index, phase_index, epoch) else 0
        fetched = list(self.progress.epoch_history) if start else []
        pending: list[dict] = []  # device metrics not yet fetched
        first_step = int(self.state["step"]) - len(fetched)
        where = f"cycle {cycle_index}, {phase.name} epoch {epoch}"
        uniform, alternate = np.bool_(phase.name == cycle.WARMUP), config.arch_phase == "alternate"
        progress = Progress(len(weight_batches), f"c{cycle_index}/{config.cycles} {phase.name} e{epoch}/{phase.epochs}")
        mark, mark_time = start, time.perf_counter()

        def fetch() -> None:
            new = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
            self.check_finite(new, first_step + 1 + len(fetched), where)
            fetched.extend(new)
            pending.clear()

        for i in range(start, len(weight_batches)):
            metrics = {}
            if phase.name == cycle.ARCH:
                self.state, metrics = self.iterations.arch(
                    self.state, self.images, self.labels, shard_batch(weight_batches[i], self.mesh),
                    shard_batch(arch_batches[i], self.mesh),
                )  # fmt: skip
            if phase.name != cycle.ARCH or alternate:
                self.state, weight_metrics = self.iterations.weights(
                    self.state, self.images, self.labels, shard_batch(weight_batches[i], self.mesh), uniform
                )
                metrics = {**metrics, **weight_metrics}
            pending.append(metrics)
            fault_point("step")
            step = first_step + i + 1
            if (i + 1) % config.log_every == 0 or i + 1 == len(weight_batches):
                fetch()
                now = time.perf_counter()
                rate = (i + 1 - mark) * images_per_step / (now - mark_time)
                mark, mark_time = i + 1, now
                self.writer.write({"event": "step", "cycle": cycle_index, "phase": phase.name, "epoch": epoch,
                                   "step": step, **fetched[-1], "images_per_s": rate})  # fmt: skip
                shown = {name: fetched[-1][k] * scale for k, name, scale in _SHOWN if k in fetched[-1]}
                progress.update(i + 1, step=step, img_s=round(rate, 1), **shown)
            if self.signal is not None or (config.checkpoint_every and step % config.checkpoint_every == 0):
                fetch()
                self.save(Position(cycle_index, phase_index, epoch, i + 1), fetched)
        progress.close()
        fetch()
        used = [m for m in fetched if not any(m.get(k) for k in _SKIPPED)]  # --nan-policy skip
        means = {k: float(np.mean([m[k] for m in used])) if used else None
                 for k in fetched[0] if k not in (*_SCHEDULED, *_SKIPPED)}  # fmt: skip
        means.update({k: fetched[-1][k] for k in _SCHEDULED if k in fetched[-1]})
        if any(k in fetched[0] for k in _SKIPPED):
            means["skipped_steps"] = len(fetched) - len(used)
        return means

    def table_score(self) -> dict:
        """``arch_str``, ``table_acc`` and ``table_rank`` of the derived cell, when a table was given."""
        return self.table.score(self.genotype()) if self.table is not None else {}

    def epoch_record(self, cycle_index: int, phase: str, epoch: int, train: dict) -> dict:
        val = self.validation()
        arch = jax.device_get(self.state["arch"])
        return {
            "event": "epoch", "cycle": cycle_index, "phase": phase, "epoch": epoch, "step": int(self.state["step"]),
            **{k if k in (*_SCHEDULED, "skipped_steps") else f"train_{k}": v for k, v in train.items()},
            "val_loss": val["loss"], "val_acc": val["acc"], **self.table_score(),
            "entropy": jax.device_get(edge_entropy(arch)),
            "arch_weights": {name: jax.nn.softmax(a, -1) for name, a in arch.items()},
            **({"edge_names": names} if (names := space_of(self.model).edge_names(self.model)) else {}),
        }  # fmt: skip

    def run_cycles(self, phases: tuple[cycle.Phase, ...]) -> None:
        """The cycles from the saved position on: phases, mutation, cycle end (genotype, plots, plateau stop).

        Checkpoints at every phase boundary (and inside epochs, see ``run_epoch``).
        """
        config, progress = self.config, self.progress
        begin = progress.position
        for cycle_index in range(begin.cycle, config.cycles + 1):
            if progress.stopped_early:
                return
            first_phase = begin.phase if cycle_index == begin.cycle else 0
            for phase_index in range(first_phase, len(phases)):
                phase, resuming = phases[phase_index], (cycle_index, phase_index) == (begin.cycle, begin.phase)
                if not resuming or begin.epoch == 1 and begin.batch == 0:
                    progress.phase_start = int(self.state["step"])
                if phase.name == cycle.MUTATION:
                    decision = self.decide_growth(cycle_index)
                    event = self.grow(cycle_index, *decision) if decision else None
                    self.writer.write({"event": "mutation", "cycle": cycle_index, "step": progress.phase_start,
                                       "growth": event["kind"] if event else "none",
                                       "genotype": genotype_to_json(self.genotype())})  # fmt: skip
                else:
                    for epoch in range(begin.epoch if resuming else 1, phase.epochs + 1):
                        train = self.run_epoch(cycle_index, phase_index, phase, epoch)
                        record = self.epoch_record(cycle_index, phase.name, epoch, train)
                        self.writer.write(record)
                        fault_point("epoch_end")
                        progress.last_val_acc = record["val_acc"]
                    if phase.epochs:
                        self.writer.write({"event": "phase", "cycle": cycle_index, "phase": phase.name,
                                           "step_start": progress.phase_start,
                                           "step_end": int(self.state["step"])})  # fmt: skip
                if phase_index + 1 < len(phases):
                    self.save(Position(cycle_index, phase_index + 1))
            progress.cycle_accuracies.append(progress.last_val_acc)
            if is_primary():
                write_json(self.workdir / "genotype.json", genotype_to_json(self.genotype()))
                plots.plot_run(self.workdir)
            plateau = cycle.plateaued(self.accuracies_since_growth(), config.plateau_window, config.plateau_threshold)
            if plateau and not self.can_still_grow():  # a plateau grows the network first
                progress.stopped_early = True
                self.writer.write({"event": "early_stop", "cycle": cycle_index, "step": int(self.state["step"]),
                                   "cycle_val_acc": progress.cycle_accuracies})  # fmt: skip
            self.save(Position(cycle_index + 1))
