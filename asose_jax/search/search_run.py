"""One search in progress (``SearchRun``): model and state, data on the device, the cycles, growth, metrics and
checkpoints. ``asose_jax.search.driver.train_and_evaluate`` creates it and runs it."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import numpy as np

from asose_jax.runtime import plots
from asose_jax.runtime.faults import fault_point
from asose_jax.runtime.input_pipeline import ImageArrays, epoch_batches, split_for_architecture
from asose_jax.runtime.metrics_log import write_json
from asose_jax.runtime.parallel import is_primary, make_mesh, replicate, shard_batch
from asose_jax.runtime.session import RunSession, SessionSettings, StepLoop, epoch_means
from asose_jax.search import cycle
from asose_jax.search.growth import grow, kinds_to_try, next_mutation
from asose_jax.search.iterations import DERIVED, jit_iterations, make_iterations, param_counts, validation_measure
from asose_jax.search.nb201_table import NB201Table
from asose_jax.search.run_config import RunConfig
from asose_jax.search.run_state import Position, RunProgress
from asose_jax.search.sampling import decisiveness, edge_entropy, expected_edge_weights
from asose_jax.search.selection import (
    LOSS_SCORED,
    PERTURBATION,
    SELECT,
    WEIGHT,
    candidates,
    chosen_op,
    decided_logits,
    dropped_ops,
    edge_order,
    merits,
    perturbed_weights,
    without_ops,
)
from asose_jax.search.steps import State, init_search_state
from asose_jax.spaces import count_params, space_of
from asose_jax.spaces.base import GrowthCaps, Mutation
from asose_jax.spaces.genotypes import derive_genotype, genotype_edge_weights, genotype_to_json

_GROWTH = 4  # PRNG stream of growth (new weights and logits, width mappings)
_SCHEDULED = ("lr", "temperature")  # reported at the epoch's last step, not averaged
_SHOWN = (("loss", "loss", 1), ("accuracy", "acc%", 100), ("arch_loss", "arch_loss", 1), ("temperature", "tau", 1))
PLOT_INTERVAL_S = 60.0  # cycle ends redraw the plots at most this often; the finished run always draws them
RECALIBRATION_BATCHES = 8  # training batches that re-estimate BatchNorm statistics for a single path
_CHECKED = ("loss", "grad_norm", "arch_loss", "arch_grad_norm")  # must stay finite
NAN_FIX = (
    "rerun the same command with a lower --weight-lr / --arch-lr (it continues from the last checkpoint, if any), "
    "or with --nan-policy skip"
)


class SearchRun(RunSession):
    """The mutable bookkeeping of one search: state, data on device, the cycles, growth and genotype; the run
    directory side (metrics, checkpoints, signals, the step loop) is the ``RunSession``'s.

    ``progress`` (a ``RunProgress``) is the JSON half of a checkpoint: where the run is, the fetched per-step
    metrics of the unfinished epoch, the cycle-final accuracies, the growth so far, the length of
    ``metrics.jsonl`` and the wall time, so a resumed run continues bit for bit.
    """

    def __init__(self, config: RunConfig, workdir: pathlib.Path, data: ImageArrays,
                 model: nn.Module, table: NB201Table | None):  # fmt: skip
        self.config, self.model, self.table = config, model, table
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
        self.progress = RunProgress(architecture=space_of(model).architecture_json(model))
        settings = SessionSettings(
            log_every=config.log_every, checkpoint_every=config.checkpoint_every,
            keep_checkpoints=config.keep_checkpoints, nan_policy=config.nan_policy,
            max_skipped=config.max_skipped_steps, checked=_CHECKED, fix=NAN_FIX, total_steps=config.search.total_steps,
        )  # fmt: skip
        self.open_session(workdir, settings)
        self.plotted_at = time.monotonic()

    def set_model(self, model: nn.Module, state: State) -> None:
        """The current (initial or grown) model, its state and its iterations (traced on their first call)."""
        self.model, self.state = model, state
        self.iterations = make_iterations(model, self.config, self.mesh, self.jitted)
        self.compiled = set()  # a new model compiles its iterations again

    def resume(self) -> bool:
        """Restores the newest checkpoint, if any (rebuilding the grown model it holds first), and cuts
        ``metrics.jsonl`` back to it."""
        if self.checkpoints.latest_step() is not None:
            architecture = RunProgress.from_json(self.checkpoints.restore_progress()).architecture
            space = space_of(self.model)
            if architecture not in (None, space.architecture_json(self.model)):
                model = space.with_architecture(self.model, architecture)
                like = replicate(init_search_state(model, self.config.search, self.image_shape), self.mesh)
                self.set_model(model, like)  # restored arrays take its (replicated) shardings
        restored = self.restore(self.state)
        if restored is None:
            return False
        self.progress = RunProgress.from_json(restored)
        self.set_model(self.model, self.state)
        self.say(f"resumed {self.workdir} at step {int(self.state['step'])} ({self.progress.position.describe()})")
        return True

    def save(self, position: Position, epoch_history: list[dict] = ()) -> None:
        """Checkpoints the state with ``position`` (where to continue) and the unfinished epoch's metrics."""

        def progress_json() -> dict:
            self.progress.position, self.progress.epoch_history = position, list(epoch_history)
            return self.progress.to_json()

        self.checkpoint(progress_json)

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
        weights = f"{event['params_before']:,} -> {event['params_after']:,} weights"
        self.say(f"cycle {cycle_index}: grew {mutation.kind} ({where}; {reason}): {weights}, validation "
                 f"{before['acc']:.2f} -> {after['acc']:.2f}%")  # fmt: skip
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

        def call(idx: jax.Array, mask: jax.Array) -> dict:
            m = self.iterations.evaluate(state, images, labels, idx, mask, fixed)
            return {"loss": m["loss"] * m["count"], "correct": m["accuracy"] * m["count"], "count": m["count"]}

        sums = self.evaluate_sums(len(subset), self.config.batch_size, self.mesh, call, subset)
        return {"loss": sums["loss"] / sums["count"], "acc": 100.0 * sums["correct"] / sums["count"]}

    def run_epoch(self, cycle_index: int, phase_index: int, phase: cycle.Phase, epoch: int) -> dict:
        """One epoch of ``phase`` from the saved position (see ``RunSession.run_steps``); returns the epoch's mean
        training metrics."""
        config, seed = self.config, (self.config.search.seed, cycle_index, phase_index, epoch)
        arch_phase, alternate = phase.name == cycle.ARCH, config.arch_phase == "alternate"
        if arch_phase:
            arch_batches = epoch_batches((*seed, 1), self.arch_idx, config.batch_size)
            weight_batches = epoch_batches((*seed, 0), self.weight_idx, config.batch_size, len(arch_batches))
        else:
            weight_batches = epoch_batches(seed, self.weight_idx, config.batch_size)
        uniform = np.bool_(phase.name == cycle.WARMUP)

        def take(i: int) -> dict:
            metrics = {}
            if arch_phase:
                self.state, metrics = self.iterations.arch_step(
                    self.state, self.images, self.labels, shard_batch(weight_batches[i], self.mesh),
                    shard_batch(arch_batches[i], self.mesh),
                )  # fmt: skip
            if not arch_phase or alternate:
                self.state, weight_metrics = self.iterations.weight_step(
                    self.state, self.images, self.labels, shard_batch(weight_batches[i], self.mesh), uniform
                )
                metrics = {**metrics, **weight_metrics}
            return metrics

        position = self.progress.position
        start = position.batch if position.same_epoch(cycle_index, phase_index, epoch) else 0
        fetched = list(self.progress.epoch_history) if start else []
        fetched = self.run_steps(StepLoop(
            take=take, calls=len(weight_batches), start=start, fetched=fetched,
            first_step=int(self.state["step"]) - len(fetched), steps_per_call=1,
            images_per_call=config.batch_size * (2 if arch_phase and alternate else 1),  # both halves
            program="the architecture step" if arch_phase else "the weight step",
            label=f"c{cycle_index}/{config.cycles} {phase.name} e{epoch}/{phase.epochs}",
            where=f" (cycle {cycle_index}, {phase.name} epoch {epoch})",
            record={"cycle": cycle_index, "phase": phase.name, "epoch": epoch}, shown=_SHOWN,
            save=lambda i, done: self.save(Position(cycle_index, phase_index, epoch, i), done),
        ))  # fmt: skip
        return epoch_means(fetched, _SCHEDULED)

    def arch_weights(self) -> dict[str, np.ndarray]:
        """``softmax(a)`` per edge ``{name: [E, K]}``, on the host."""
        return {name: np.asarray(jax.nn.softmax(a, -1)) for name, a in jax.device_get(self.state["arch"]).items()}

    def table_score(self) -> dict:
        """``arch_str``, ``table_acc`` and ``table_rank`` of the derived cell, when a table was given."""
        return self.table.score(self.genotype()) if self.table is not None else {}

    def epoch_record(self, cycle_index: int, phase: str, epoch: int, train: dict, validate: bool = True) -> dict:
        """The epoch's record: training means, validation (``None`` without ``validate``), the table score, and the
        architecture weights with their entropy and decisiveness (per-edge margin of the strongest op over the
        second)."""
        val = self.validation() if validate else {"loss": None, "acc": None}
        weights = self.arch_weights()
        return {
            "event": "epoch", "cycle": cycle_index, "phase": phase, "epoch": epoch, "step": int(self.state["step"]),
            **{k if k in (*_SCHEDULED, "skipped_steps") else f"train_{k}": v for k, v in train.items()},
            "val_loss": val["loss"], "val_acc": val["acc"], **self.table_score(),
            "entropy": jax.device_get(edge_entropy(self.state["arch"])),
            "arch_weights": weights, "decisiveness": decisiveness(weights),
            **({"edge_names": names} if (names := space_of(self.model).edge_names(self.model)) else {}),
        }  # fmt: skip

    def run_cycles(self, phases: tuple[cycle.Phase, ...]) -> None:
        """The cycles from the saved position on: phases, mutation, cycle end (genotype, plots, plateau stop).

        Checkpoints at every phase boundary (and inside epochs, see ``run_epoch``).
        """
        begin = self.progress.position
        for cycle_index in range(begin.cycle, self.config.cycles + 1):
            if self.progress.stopped_early:
                return
            first_phase = begin.phase if cycle_index == begin.cycle else 0
            for phase_index in range(first_phase, len(phases)):
                resuming = (cycle_index, phase_index) == (begin.cycle, begin.phase)
                if not resuming or begin.epoch == 1 and begin.batch == 0:
                    self.progress.phase_start = int(self.state["step"])
                self.run_phase(cycle_index, phase_index, phases[phase_index], begin.epoch if resuming else 1)
                if phase_index + 1 < len(phases):
                    self.save(Position(cycle_index, phase_index + 1))
            self.end_cycle(cycle_index)

    def run_phase(self, cycle_index: int, phase_index: int, phase: cycle.Phase, first_epoch: int) -> None:
        """The phase's epochs from ``first_epoch`` on (each with its record and console line), or the mutation phase:
        progressive shrinking (every cycle but the last, with ``shrink_ops``), then growth."""
        progress = self.progress
        if phase.name == cycle.MUTATION:
            if self.config.shrink_ops and cycle_index < self.config.cycles:
                self.shrink(cycle_index)
            decision = self.decide_growth(cycle_index)
            event = self.grow(cycle_index, *decision) if decision else None
            self.writer.write({"event": "mutation", "cycle": cycle_index, "step": progress.phase_start,
                               "growth": event["kind"] if event else "none",
                               "genotype": genotype_to_json(self.genotype())})  # fmt: skip
            return
        for epoch in range(first_epoch, phase.epochs + 1):
            train = self.run_epoch(cycle_index, phase_index, phase, epoch)
            record = self.epoch_record(cycle_index, phase.name, epoch, train)
            self.writer.write(record)
            fault_point("epoch_end")
            progress.last_val_acc = record["val_acc"]
            self.say(epoch_line(record, validation_measure(self.config.search.sampler), self.genotype()))
        if phase.epochs:
            self.writer.write({"event": "phase", "cycle": cycle_index, "phase": phase.name,
                               "step_start": progress.phase_start, "step_end": int(self.state["step"])})  # fmt: skip

    def end_cycle(self, cycle_index: int) -> None:
        """The cycle's accuracy, genotype file and plots (at most every ``PLOT_INTERVAL_S``), the plateau stop, and
        the checkpoint of the cycle end."""
        config, progress = self.config, self.progress
        progress.cycle_accuracies.append(progress.last_val_acc)
        if is_primary():
            write_json(self.workdir / "genotype.json", genotype_to_json(self.genotype()))
            if time.monotonic() - self.plotted_at >= PLOT_INTERVAL_S:  # drawing costs seconds; short cycles skip it
                plots.plot_run(self.workdir)
                self.plotted_at = time.monotonic()
        plateau = cycle.plateaued(self.accuracies_since_growth(), config.plateau_window, config.plateau_threshold)
        if plateau and not self.can_still_grow():  # a plateau grows the network first
            progress.stopped_early = True
            self.writer.write({"event": "early_stop", "cycle": cycle_index, "step": int(self.state["step"]),
                               "cycle_val_acc": progress.cycle_accuracies})  # fmt: skip
            fault_point("early_stop")
            self.say(f"stopping early after cycle {cycle_index}: validation accuracy plateaued")
        self.save(Position(cycle_index + 1))

    def run_selection(self) -> None:
        """Perturbation selection after the cycles (``asose_jax.search.selection``; nothing to do with ``argmax``).
        Per edge in a seeded order: the decision (a ``selection`` record, the edge's logits fixed, a checkpoint),
        ``selection_tune_steps`` weight steps, an epoch record of phase ``select`` and a checkpoint. Position
        ``(cycles + 1, edge index, 1, batch)``; the edge is decided once ``progress.selection`` holds it."""
        config, progress = self.config, self.progress
        if config.selection != PERTURBATION:
            return
        final, begin = config.cycles + 1, progress.position
        shapes = {name: tuple(a.shape) for name, a in self.state["arch"].items()}
        order = edge_order(shapes, config.search.seed)
        for index in range(begin.phase if begin.cycle == final else 0, len(order)):
            start = begin.batch if (begin.cycle, begin.phase) == (final, index) else 0
            if len(progress.selection) == index:
                self.decide_edge(final, index, order[index], shapes)
                self.save(Position(final, index))
                start = 0
            progress.phase_start = int(self.state["step"]) - start
            train = self.tune(final, index, start)
            # Without tuning steps the supernet's weights are those of the cycles, half-discretised: nothing to
            # validate (its accuracy only falls as the edges turn one-hot), and a pass over the held-out images saved.
            record = self.epoch_record(final, SELECT, index + 1, train, validate=config.selection_tune_steps > 0)
            self.writer.write(record)
            fault_point("epoch_end")
            self.say(epoch_line(record, validation_measure(config.search.sampler), self.genotype()))
            self.save(Position(final, index + 1))

    def supernet_score(self, measure: str) -> tuple[str, Callable[[dict], float]]:
        """The name of ``measure``'s score and the function from edge weights ``{name: [E, K]}`` to the supernet's
        score on the first ``selection_images`` held-out images (its loss, the ZiCo score of its gradients, its
        NTK's conditioning, or NASWOT's score of its activation patterns)."""
        config = self.config
        n = config.selection_images // config.batch_size
        idx = shard_batch(self.arch_idx[: n * config.batch_size].reshape(n, -1), self.mesh, 1)
        program = "the perturbed-supernet evaluation"
        if program not in self.compiled:
            self.say(f"compiling {program} (XLA; cached for later runs)...")
            self.compiled.add(program)
        fn, key = (self.iterations.mixture_eval, "loss") if measure in LOSS_SCORED else (
            self.iterations.mixture_score, measure)  # fmt: skip
        return key, lambda weights: float(jax.device_get(fn(self.state, self.images, self.labels, idx, weights))[key])

    def score_ops(
        self, edge: tuple[str, int], measure: str, ops: np.ndarray, base: float | None = None
    ) -> tuple[str, float, list, np.ndarray]:
        """Scores ``ops`` (indices) of ``edge`` by ``measure`` (``supernet_score``): the score's name, the unperturbed
        supernet's score (``base`` when the caller has it), and per op of the edge the perturbed supernet's score and
        the merit (``merits``; NaN for the ops not scored)."""
        key, score = self.supernet_score(measure)
        weights = jax.device_get(expected_edge_weights(self.state["arch"], self.config.search.sampler))
        base = score(weights) if base is None else base
        perturbed = perturbed_weights(weights, edge, measure)
        scores = [np.nan] * len(perturbed)
        for k in ops:
            scores[k] = score(perturbed[k])
        return key, base, scores, merits(base, scores, measure)

    def decide_edge(self, final: int, index: int, edge: tuple[str, int], shapes: dict) -> None:
        """Gives every op of ``edge`` still in play its merit (``selection_measure``) from a score of the perturbed
        supernet on the held-out images (its loss, or a score of its gradients, its NTK or its activation patterns:
        ``supernet_score``), keeps the op of highest merit, fixes the edge's logits on it and records the decision."""
        measure = self.config.selection_measure
        in_play = candidates(jax.device_get(self.state["arch"])[edge[0]][edge[1]])
        key, base, scores, merit = self.score_ops(edge, measure, np.flatnonzero(in_play))
        op = chosen_op(merit, in_play)
        arch = decided_logits(jax.device_get(self.state["arch"]), edge, op)
        self.state = {**self.state, "arch": replicate(arch, self.mesh)}
        label = space_of(self.model).edge_label(self.model, *edge)
        runners_up = merit[in_play & (np.arange(len(merit)) != op)]
        margin = float(np.round(merit[op] - runners_up.max(), 6)) if len(runners_up) else None  # None: one in play
        decision = {"edge": label, "array": edge[0], "row": edge[1], "op": self.op_names[op],
                    "step": int(self.state["step"]), "measure": measure, f"base_{key}": base,
                    f"perturbed_{key}": self.per_op(scores), "merit": self.per_op(merit.round(6).tolist()),
                    "merit_margin": margin}  # fmt: skip
        self.progress.selection.append(decision)
        self.writer.write({"event": "selection", "cycle": final, "index": index + 1, **decision})
        others = ", ".join(
            f"{o} {m:+.3f}" for o, m in decision["merit"].items() if o != decision["op"] and m is not None
        )
        self.say(f"selection {index + 1}/{sum(e for e, _ in shapes.values())}: edge {label} keeps {decision['op']} "
                 f"({measure} merit {decision['merit'][decision['op']]:+.3f}; {others})")  # fmt: skip

    def shrink(self, cycle_index: int) -> None:
        """Progressive shrinking at the mutation phase: every edge drops its ``shrink_ops`` candidates of lowest
        merit by ``shrink_measure`` (their expected weight, or a loss-scored perturbation), every edge scored on the
        same supernet (whose unperturbed score is taken once); then a ``shrink`` record and one console line."""
        config, measure = self.config, self.config.shrink_measure
        arch = jax.device_get(self.state["arch"])
        weights = jax.device_get(expected_edge_weights(self.state["arch"], config.search.sampler))
        base = None if measure == WEIGHT else self.supernet_score(measure)[1](weights)
        shrunk, edges = arch, []
        for name in sorted(arch):
            for row in range(arch[name].shape[0]):
                in_play = candidates(arch[name][row])
                if measure == WEIGHT:
                    merit = np.where(in_play, np.asarray(weights[name][row], np.float64), np.nan)
                else:
                    merit = self.score_ops((name, row), measure, np.flatnonzero(in_play), base)[3]
                drop = dropped_ops(merit, in_play, config.shrink_ops)
                shrunk = without_ops(shrunk, (name, row), drop)
                edges.append({"edge": space_of(self.model).edge_label(self.model, name, row), "array": name,
                              "row": row, "dropped": [self.op_names[k] for k in drop],
                              "merit": self.per_op(merit.round(6).tolist()),
                              "in_play": [o for o, kept in zip(self.op_names, candidates(shrunk[name][row]),
                                                               strict=True) if kept]})  # fmt: skip
        self.state = {**self.state, "arch": replicate(shrunk, self.mesh)}
        self.writer.write({"event": "shrink", "cycle": cycle_index, "step": int(self.state["step"]),
                           "measure": measure, "edges": edges})  # fmt: skip
        dropped = {e["edge"]: e["dropped"] for e in edges}
        self.progress.shrinking.append({"cycle": cycle_index, "measure": measure, "dropped": dropped})
        fault_point("shrink_after")
        left = sorted({len(e["in_play"]) for e in edges})
        drops = ", ".join(f"{edge} drops {'+'.join(ops)}" for edge, ops in dropped.items())
        self.say(f"cycle {cycle_index}: shrank the candidates by {measure}: {drops}; "
                 f"{'/'.join(map(str, left))} of {len(self.op_names)} ops left per edge")  # fmt: skip

    def per_op(self, values: list[float]) -> dict[str, float | None]:
        """``values`` by op name; NaN (an op not scored) as None."""
        return {o: None if v is None or np.isnan(v) else v for o, v in zip(self.op_names, values, strict=True)}

    def tune(self, final: int, index: int, start: int) -> dict:
        """The weight steps after decision ``index`` from call ``start`` on; returns their means."""
        config = self.config
        if not config.selection_tune_steps:
            return {}
        batches = epoch_batches((config.search.seed, final, index, 1), self.weight_idx, config.batch_size,
                                config.selection_tune_steps)  # fmt: skip
        fetched = list(self.progress.epoch_history) if start else []

        def take(i: int) -> dict:
            self.state, metrics = self.iterations.weight_step(
                self.state, self.images, self.labels, shard_batch(batches[i], self.mesh), np.bool_(False)
            )
            return metrics

        fetched = self.run_steps(StepLoop(
            take=take, calls=len(batches), start=start, fetched=fetched,
            first_step=int(self.state["step"]) - len(fetched), steps_per_call=1, images_per_call=config.batch_size,
            program="the weight step", label=f"select {index + 1}", where=f" (tuning after decision {index + 1})",
            record={"cycle": final, "phase": SELECT, "epoch": index + 1}, shown=_SHOWN,
            save=lambda i, done: self.save(Position(final, index, 1, i), done),
        ))  # fmt: skip
        return epoch_means(fetched, _SCHEDULED)


def epoch_line(record: dict, measure: str, genotype) -> str:
    """The console line of an epoch's end: training and validation figures, the derived cell, its table score."""
    if record.get("train_loss") is not None:
        train = f"train loss {record['train_loss']:.4f}"
    else:  # every update dropped (--nan-policy skip), or a selection without tuning steps
        train = "every step skipped" if record.get("skipped_steps") else "no weight steps"
    cell = genotype.to_string() if hasattr(genotype, "to_string") else describe_fields(genotype)
    table = f" | table {record['table_acc']:.2f}% (rank {record['table_rank']:,})" if "table_acc" in record else ""
    margin = f" | min margin {record['decisiveness']['min_margin']:.3f}" if "decisiveness" in record else ""
    val = f" | val acc {record['val_acc']:.2f}% ({measure})" if record["val_acc"] is not None else ""
    # A selection's records sit after the last cycle (position cycles + 1); the console names the decision instead.
    head = (f"after selection {record['epoch']}" if record["phase"] == SELECT
            else f"cycle {record['cycle']} {record['phase']} epoch {record['epoch']}")  # fmt: skip
    return f"{head}: {train}{val} | cell {cell}{table}{margin}"


def describe_fields(genotype) -> str:
    """A genotype's fields, less those at their defaults (an ungrown network's layout), as one line of JSON with
    bare op names."""
    fields, data = dataclasses.fields(genotype), dataclasses.asdict(genotype)
    plain = dataclasses.replace(genotype, **{f.name: f.default for f in fields if f.default is not dataclasses.MISSING})
    shown = {f.name: data[f.name] for f in fields
             if f.default is dataclasses.MISSING or getattr(genotype, f.name) != getattr(plain, f.name)}  # fmt: skip
    return json.dumps(shown, separators=(",", ":")).replace('"', "")
