"""The ASO-SE search driver: ``train_and_evaluate(config, workdir)`` runs the cycles and fills the run directory.

Run directory::

    config.json      the RunConfig as given, and apart ("computed") the schedule length, classes, op names and
                     whether the supernet's cells are scanned (the checkpoints' layout)
    metrics.jsonl    one JSON object per logged step ("event": "step"), per epoch ("epoch", with
                     held-out accuracy, per-edge entropy and architecture weights), per phase
                     ("phase", its global-step span) and per mutation ("mutation", the genotype)
    genotype.json    the derived architecture, rewritten after every cycle and at the end
    summary.json     parameter counts, final validation / test accuracy (percent, by the sampler's
                     validation measure, see ``validation_measure``), NAS-Bench-201 table score, wall time, device
    *.png            architecture-weight heatmaps, curves with phase boundaries, schedules
    checkpoints/     orbax checkpoints: state and position, so a killed run resumes exactly

The training split stays on the device as uint8; each jitted iteration gathers its batch by index,
augments it and takes its step, so the host only sends index arrays.
"""

from __future__ import annotations

import dataclasses
import pathlib

import flax.linen as nn

from asose_jax.nn.initializers import abstract_variables
from asose_jax.runtime import plots
from asose_jax.runtime.checkpointing import has_checkpoint
from asose_jax.runtime.cli import flag_names
from asose_jax.runtime.estimate import describe_estimate, forward_flops, training_seconds
from asose_jax.runtime.input_pipeline import (
    ImageArrays,
    check_train_limit,
    load_data,
    split_for_architecture,
    with_test_limit,
)
from asose_jax.runtime.memory import check_step_memory
from asose_jax.runtime.metrics_log import write_json
from asose_jax.runtime.parallel import check_batch_size, is_primary, make_mesh
from asose_jax.runtime.rundir import (
    COMPUTED,
    check_same_settings,
    config_record,
    create,
    device_description,
    existing_config,
    record_changes,
)
from asose_jax.runtime.session import say
from asose_jax.search import cycle
from asose_jax.search.growth import grown_model, planned_mutation
from asose_jax.search.iterations import DERIVED, SUPERNET, param_counts, validation_measure
from asose_jax.search.methods import method_of
from asose_jax.search.nb201_table import NB201Table, load_nb201_table
from asose_jax.search.run_config import CPU_PRESETS, PRESETS, RESUMABLE_CHANGES, RunConfig
from asose_jax.search.sampling import decisiveness, is_single_path
from asose_jax.search.search_run import SearchRun
from asose_jax.search.selection import LOSS_SCORED, NTK, NWOT, PERTURBATION, WEIGHT, ntk_kernel_examples
from asose_jax.search.step_config import SearchConfig
from asose_jax.search.steps import supernet_from_config
from asose_jax.spaces import get_space, uniform_arch_weights
from asose_jax.spaces.genotypes import genotype_to_json

SCANNED_CELLS = "scanned_cells"  # computed: whether the supernet's cells (or DARTS edges) are scanned, as saved


def cell_layout(search: SearchConfig, saved: dict | None) -> bool | None:
    """``scan_cells`` for the supernet: the flag when given; when unset, the layout in which the unfinished run in
    the work directory (``saved``, its config.json) saved its checkpoints, or for a new run the space's choice
    (None). Runs saved before the layout was recorded left it to the space: DARTS scanned, nb201 unrolled."""
    if search.scan_cells is not None or saved is None:
        return search.scan_cells
    computed = saved.get(COMPUTED, {})
    return computed.get(SCANNED_CELLS, get_space(search.space).scanned_unrecorded)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What a search needs before its run directory is touched: the completed config, data, phases, model and
    table, the config.json record and the dry run's summary."""

    config: RunConfig
    data: ImageArrays
    phases: tuple[cycle.Phase, ...]
    model: object
    table: NB201Table | None
    config_json: dict
    summary: dict


def prepare(config: RunConfig, saved: dict | None, exact_train_limit: bool) -> Prepared:
    """Loads and checks everything a search needs (data, table, model, schedule), so that bad input fails before
    the run directory is created. ``exact_train_limit`` refuses a ``train_limit`` above the data (the user's
    own); else it is a cap (a preset's, e.g. ``smoke``)."""
    table = load_nb201_table(config.nb201_table) if config.nb201_table else None  # checked before any training
    data = with_test_limit(load_data(config.data, config.data_dir, config.train_limit), config.test_limit)
    if exact_train_limit:
        check_train_limit(data, config.train_limit)
    n_arch = len(split_for_architecture(len(data.x_train), config.arch_split, config.search.seed)[1])
    n_weight = len(data.x_train) - n_arch
    if config.selection == PERTURBATION and config.selection_images > n_arch:
        raise ValueError(f"--selection-images {config.selection_images} is more than the {n_arch:,} held-out "
                         f"images; use at most {n_arch}")  # fmt: skip
    search = dataclasses.replace(config.search, num_classes=data.num_classes)
    model = supernet_from_config(dataclasses.replace(search, scan_cells=cell_layout(search, saved)))
    edges = sum(e for e, _ in model.arch_shapes().values())
    check_shrinking(config, max(k for _, k in model.arch_shapes().values()))
    search = dataclasses.replace(search, total_steps=cycle.total_steps(config, n_weight, n_arch, edges))
    config = dataclasses.replace(config, search=search)
    image_shape = data.x_train.shape[1:]
    computed = {"total_steps": search.total_steps, "num_classes": search.num_classes, "op_names": list(model.op_names),
                SCANNED_CELLS: getattr(model, "scan_cells", None)}  # fmt: skip
    summary = {"params": param_counts(model, image_shape), "device": device_description(),
               "data": {"weight_split": n_weight, "arch_split": n_arch, "test": len(data.x_test),
                        "image_shape": list(image_shape)}}  # fmt: skip
    phases = cycle.cycle_phases(config, n_weight, n_arch)
    return Prepared(config, data, phases, model, table, config_record(config.to_json(), computed), summary)


def train_and_evaluate(
    config: RunConfig,
    workdir: str | pathlib.Path,
    dry_run: bool = False,
    resume: bool = False,
    exact_train_limit: bool = False,
) -> dict:
    """Runs the search described by ``config``, writing into ``workdir``; returns the summary.

    A ``workdir`` that holds an unfinished run with the same settings continues from its newest
    checkpoint (``resume`` requires one). ``dry_run`` loads the data, builds the model and writes
    ``config.json`` and a ``summary.json`` with the parameter counts, without training.
    """
    workdir = pathlib.Path(workdir)
    saved = existing_config(workdir, resume, dry_run)
    run = prepare(config, saved, exact_train_limit)
    resumable = (*RESUMABLE_CHANGES, SCANNED_CELLS)  # runs saved before the layout was recorded lack it
    check_same_settings(workdir, saved, run.config_json, resumable, flag_names(RunConfig))
    if resume and not has_checkpoint(workdir):
        raise ValueError(f"--resume: --workdir {workdir} has no checkpoint yet; rerun without --resume to start over")
    check_batch_size(run.config.batch_size, make_mesh())
    if not dry_run:
        check_step_memory(run.model, run.config.batch_size, run.data, "--batch-size, --init-channels or --depth",
                          copies=1, passes=2 if run.config.search.arch_order == 2 else 0,
                          single_path=is_single_path(run.config.search.sampler))  # fmt: skip
    with create(workdir, lock=is_primary()):  # only now that data, model and settings are known to be good
        if saved is None and is_primary():
            write_json(workdir / "config.json", run.config_json)
        seconds = estimated_seconds(run)
        steps = f"this search ({run.config.search.total_steps:,} steps)"
        estimate = describe_estimate(seconds, steps, smaller_search(run))[0]
        if dry_run:
            say(estimate)
            if is_primary():
                write_json(workdir / "summary.json", {**run.summary, "dry_run": True, "estimated_seconds": seconds})
            return run.summary
        return run_search(run, workdir, saved, resumable, estimate)


def run_search(
    run: Prepared, workdir: pathlib.Path, saved: dict | None, resumable: tuple[str, ...], estimate: str
) -> dict:
    """Runs (or continues) the prepared search in the locked ``workdir``, saying first its time ``estimate``;
    returns its summary."""
    search_run = SearchRun(run.config, workdir, run.data, run.model, run.table)
    with search_run.running():
        search_run.table_score()  # a table that lacks the search's cells fails now, not after the first epoch
        search_run.say(estimate)
        search_run.say(start_line(workdir, run, saved is not None))
        resumed = search_run.resume()
        if saved is not None and is_primary():
            for line in record_changes(workdir, saved, run.config_json, resumable, int(search_run.state["step"])):
                search_run.say(line)
        search_run.run_cycles(run.phases)
        search_run.run_selection()
        summary = {**run.summary, **final_summary(search_run), "resumed": resumed}
        search_run.finish(summary, {"genotype.json": summary["genotype"]}, plots.plot_run)
    return summary


def estimated_seconds(run: Prepared) -> float | None:
    """The search's time on this backend (``asose_jax.runtime.estimate``): the forward FLOPs of the supernet that
    trains then (``cycle_supernets``) for every image of every weight and architecture step, a third of that for
    each epoch's held-out evaluation, and the final supernet's for the perturbation selection."""
    config, held_out = run.config, run.summary["data"]["arch_split"]
    warmup, arch, _, retrain = run.phases
    extra = arch.steps if config.arch_phase == "alternate" else 0  # a weight step per arch step
    before = (warmup.steps + arch.steps + extra, warmup.epochs + arch.epochs)  # (steps, epochs) before the mutation
    after = (retrain.steps, retrain.epochs)
    models = cycle_supernets(config, run.model)
    flops = {id(m): supernet_flops(m, tuple(run.data.x_train.shape[1:])) for m in models}
    seconds = [
        training_seconds(flops[id(m)], steps * config.batch_size + epochs * held_out / 3, steps)
        for c in range(config.cycles)
        for m, (steps, epochs) in ((models[c], before), (models[c + 1], after))
    ]
    shapes = run.model.arch_shapes()
    seconds += [training_seconds(flops[id(models[c])], shrink_images(config, shapes, c + 1), 0)
                for c in range(config.cycles - 1) if config.shrink_ops]  # fmt: skip
    tuning = config.selection_steps(sum(e for e, _ in shapes.values()))
    selection = tuning * config.batch_size + selection_images(config, shapes, held_out)
    seconds.append(training_seconds(flops[id(models[-1])], selection, tuning))
    return None if None in seconds else sum(seconds)


def check_shrinking(config: RunConfig, ops: int) -> None:
    """Refuses ``--shrink-ops`` that would leave an edge of ``ops`` ops without a candidate before the last cycle."""
    shrinks = config.cycles - 1
    if config.shrink_ops and config.ops_in_play(ops, shrinks) < 1:
        raise ValueError(
            f"--shrink-ops {config.shrink_ops} over the {shrinks} cycles before the last drops "
            f"{config.shrink_ops * shrinks} of each edge's {ops} ops, but one must stay; use --shrink-ops <= "
            f"{(ops - 1) // shrinks} or fewer --cycles"
        )


def cycle_supernets(config: RunConfig, model: nn.Module) -> list[nn.Module]:
    """``cycles + 1`` supernets: the initial one, then the one after each cycle's mutation phase, grown by the
    ``--grow-at`` growths (growth at a plateau cannot be foreseen; caps are not checked)."""
    models, forced = [model], config.forced_growth()
    for c in range(1, config.cycles + 1):
        if c in forced:
            model = grown_model(model, planned_mutation(model, forced[c], config.width_factor))
        models.append(model)
    return models


def supernet_flops(model: nn.Module, image_shape: tuple[int, ...]) -> float:
    """Forward FLOPs of ``model`` on one image at uniform architecture weights (traced, not compiled)."""
    weights = uniform_arch_weights(model)
    variables = abstract_variables(model, image_shape, weights, train=False)
    return forward_flops(lambda v, x: model.apply(v, x, weights, train=False), variables, image_shape)


def scoring_images(
    config: RunConfig, measure: str, shapes: dict[str, tuple[int, int]], cycle: int, shared_base: bool = False
) -> float:
    """The images of scoring every edge's ops in play after ``cycle`` cycles by ``measure``, in units of a training
    image (a forward pass, as ``removal``, ``alone`` and ``nwot`` take, is a third of one, a gradient one, an NTK
    kernel of ``n`` examples ``n`` per example: a gradient of each example through all of them): every perturbed
    supernet on ``selection_images`` images, and the unperturbed one per edge (a selection, whose every decision
    changes it) or once (``shared_base``: a shrink scores every edge on one supernet); nothing for ``weight``."""
    if measure == WEIGHT:
        return 0.0
    forward = measure in (*LOSS_SCORED, NWOT)
    per_image = 1 / 3 if forward else ntk_kernel_examples(config.batch_size) if measure == NTK else 1
    bases = 1 if shared_base else sum(e for e, _ in shapes.values())
    perturbed = sum(e * config.ops_in_play(k, cycle) for e, k in shapes.values())
    return (perturbed + bases) * config.selection_images * per_image


def shrink_images(config: RunConfig, shapes: dict[str, tuple[int, int]], cycle: int) -> float:
    """The shrinking at the end of ``cycle``'s mutation phase: scoring the ops left after the cycle before, on one
    unperturbed supernet."""
    return scoring_images(config, config.shrink_measure, shapes, cycle - 1, shared_base=True)


def selection_images(config: RunConfig, shapes: dict[str, tuple[int, int]], held_out: int) -> float:
    """Perturbation selection's images in training images: the ops in play after every cycle scored per edge
    (``scoring_images``), and with tuning steps the epoch record's evaluation on the ``held_out`` images."""
    if config.selection != PERTURBATION:
        return 0.0
    evaluation = held_out / 3 if config.selection_tune_steps else 0.0
    edges = sum(e for e, _ in shapes.values())
    return scoring_images(config, config.selection_measure, shapes, config.cycles) + edges * evaluation


def smaller_search(run: Prepared) -> str:
    """Where to turn when the search would take too long: the CPU-sized preset of its space."""
    name = next(n for n in CPU_PRESETS if PRESETS[n].search.space == run.config.search.space)
    return f"--preset {name} is sized for a 2-core CPU; a GPU runs this one"


def start_line(workdir: pathlib.Path, run: Prepared, continuing: bool) -> str:
    """The console line a search starts with: where, on what, how much."""
    data, config = run.summary["data"], run.config
    method = method_of(config.search) if config.arch_epochs else "no architecture steps"
    chosen = f"; the cell by {config.selection_measure} perturbation" if config.selection == PERTURBATION else ""
    return (f"{'continuing' if continuing else 'starting'} search in {workdir} on {run.summary['device']}: "
            f"{data['weight_split']:,} weight-training / {data['arch_split']:,} held-out / {data['test']:,} test "
            f"images, {config.search.total_steps:,} steps, {method} on {config.search.space} "
            f"({run.summary['params']['weights']:,} weights){chosen}")  # fmt: skip


def final_summary(run: SearchRun) -> dict:
    """The finished search's figures: validation and test accuracy by the validation measure, of the derived
    path and (mixture samplers) of the supernet, the table score, genotype, growth and wall time."""
    val, test = run.evaluate(on_test=False, derived=True), run.evaluate(on_test=True, derived=True)
    # The mixture is what soft samplers train; single-path weights never saw a mixture. After perturbation
    # selection every edge is one-hot: the supernet is the derived path, measured with its own BatchNorm statistics.
    decided = run.config.selection == PERTURBATION
    mixture = validation_measure(run.config.search.sampler) == SUPERNET and not decided
    val_super = run.evaluate(on_test=False, derived=False) if mixture else {"acc": None, "loss": None}
    test_super = run.evaluate(on_test=True, derived=False) if mixture else {"acc": None, "loss": None}
    measured_val, measured_test = (val_super, test_super) if mixture else (val, test)
    return {
        "val_measure": DERIVED if decided else validation_measure(run.config.search.sampler),
        "val_acc": measured_val["acc"], "val_loss": measured_val["loss"],
        "test_acc": measured_test["acc"], "test_loss": measured_test["loss"],
        **run.table_score(), "method": method_of(run.config.search),
        "val_acc_derived": val["acc"], "test_acc_derived": test["acc"],
        "val_acc_supernet": val_super["acc"], "test_acc_supernet": test_super["acc"],
        "genotype": genotype_to_json(run.genotype()), "decisiveness": decisiveness(run.arch_weights()),
        "cycles_completed": len(run.progress.cycle_accuracies),
        "stopped_early": run.progress.stopped_early, "steps": int(run.state["step"]),
        "growth": run.progress.growth, "architecture": run.progress.architecture,
        "selection": run.config.selection, "selection_decisions": run.progress.selection,
        "shrinking": run.progress.shrinking,
        "params_final": param_counts(run.model, run.image_shape), "wall_time_s": run.wall_time(),
    }  # fmt: skip
