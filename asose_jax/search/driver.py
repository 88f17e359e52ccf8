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

from asose_jax.runtime import plots
from asose_jax.runtime.checkpointing import has_checkpoint
from asose_jax.runtime.cli import flag_names
from asose_jax.runtime.faults import fault_point
from asose_jax.runtime.input_pipeline import (
    check_train_limit,
    first_test_images,
    load_data,
    split_for_architecture,
)
from asose_jax.runtime.metrics_log import write_json
from asose_jax.runtime.parallel import (
    check_batch_size,
    is_primary,
    make_mesh,
)
from asose_jax.runtime.rundir import (
    COMPUTED,
    catch_stop_signals,
    check_same_settings,
    config_record,
    create,
    device_description,
    existing_config,
)
from asose_jax.search import cycle
from asose_jax.search.config import SearchConfig
from asose_jax.search.iterations import SUPERNET, param_counts, validation_measure
from asose_jax.search.methods import method_of
from asose_jax.search.nb201_table import load_nb201_table
from asose_jax.search.run_config import RESUMABLE_CHANGES, RunConfig
from asose_jax.search.search_run import SearchRun
from asose_jax.search.steps import build_model
from asose_jax.spaces.genotypes import genotype_to_json

SCANNED_CELLS = "scanned_cells"  # computed: whether the supernet's cells (or DARTS edges) are scanned, as saved


def cell_layout(search: SearchConfig, saved: dict | None) -> bool | None:
    """``scan_cells`` for the supernet: the flag when given; when unset, the layout in which the unfinished run in
    the work directory (``saved``, its config.json) saved its checkpoints, or for a new run the space's choice
    (None). Runs saved before the layout was recorded left it to the space: DARTS scanned, nb201 unrolled."""
    if search.scan_cells is not None or saved is None:
        return search.scan_cells
    computed = saved.get(COMPUTED, {})
    return computed.get(SCANNED_CELLS, search.space == "darts")


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
    ``config.json`` and a ``summary.json`` with the parameter counts, without training. ``exact_train_limit``
    refuses a ``train_limit`` above the data (the user's own); else it is a cap (a preset's, e.g. ``smoke``).
    """
    workdir = pathlib.Path(workdir)
    saved = existing_config(workdir)
    if resume and saved is None:
        raise ValueError(f"--resume: no run in --workdir {workdir}; start one without --resume")
    if dry_run and saved is not None:
        raise ValueError(f"--dry-run: --workdir {workdir} already holds a run; choose a new --workdir")
    table = load_nb201_table(config.nb201_table) if config.nb201_table else None  # checked before any training
    data = first_test_images(load_data(config.data, config.data_dir, config.train_limit), config.test_limit)
    if exact_train_limit:
        check_train_limit(data, config.train_limit)
    n_arch = len(split_for_architecture(len(data.x_train), config.arch_split, config.search.seed)[1])
    n_weight = len(data.x_train) - n_arch
    phases = cycle.cycle_phases(config, n_weight, n_arch)
    search = dataclasses.replace(
        config.search, num_classes=data.num_classes, total_steps=cycle.total_steps(config, n_weight, n_arch)
    )
    config = dataclasses.replace(config, search=search)
    model = build_model(dataclasses.replace(search, scan_cells=cell_layout(search, saved)))
    image_shape = data.x_train.shape[1:]
    computed = {"total_steps": search.total_steps, "num_classes": search.num_classes, "op_names": list(model.op_names),
                SCANNED_CELLS: getattr(model, "scan_cells", None)}  # fmt: skip
    config_json = config_record(config.to_json(), computed)
    # A run saved before the layout was recorded lacks it; cell_layout gave it the layout it was saved in.
    check_same_settings(workdir, saved, config_json, (*RESUMABLE_CHANGES, SCANNED_CELLS), flag_names(RunConfig))
    summary = {"params": param_counts(model, image_shape), "device": device_description(),
               "data": {"weight_split": n_weight, "arch_split": n_arch, "test": len(data.x_test),
                        "image_shape": list(image_shape)}}  # fmt: skip
    if resume and not has_checkpoint(workdir):
        raise ValueError(f"--resume: --workdir {workdir} has no checkpoint yet; rerun without --resume to start over")
    check_batch_size(config.batch_size, make_mesh())
    create(workdir)  # only now that data, model and settings are known to be good
    if saved is None and is_primary():
        write_json(workdir / "config.json", config_json)
    if dry_run:
        if is_primary():
            write_json(workdir / "summary.json", {**summary, "dry_run": True})
        return summary

    run = SearchRun(config, workdir, data, model, table)
    resumed = run.resume()
    if not resumed:
        run.writer.truncate(0)  # a run killed before its first checkpoint starts over
    run.table_score()  # a table that lacks the search's cells fails now, not after the first epoch
    restore_signals = catch_stop_signals(lambda signum: setattr(run, "signal", signum))
    try:
        run.run_cycles(phases)
    finally:
        run.checkpoints.close()
        restore_signals()

    genotype = run.genotype()
    val, test = run.evaluate(on_test=False, derived=True), run.evaluate(on_test=True, derived=True)
    # The mixture is what soft samplers train; single-path weights never saw a mixture.
    mixture = validation_measure(config.search.sampler) == SUPERNET
    val_super = run.evaluate(on_test=False, derived=False) if mixture else {"acc": None, "loss": None}
    test_super = run.evaluate(on_test=True, derived=False) if mixture else {"acc": None, "loss": None}
    measured_val, measured_test = (val_super, test_super) if mixture else (val, test)
    run.writer.close()
    summary.update({
        "val_measure": validation_measure(config.search.sampler),
        "val_acc": measured_val["acc"], "val_loss": measured_val["loss"],
        "test_acc": measured_test["acc"], "test_loss": measured_test["loss"],
        **run.table_score(), "method": method_of(config.search),
        "val_acc_derived": val["acc"], "test_acc_derived": test["acc"],
        "val_acc_supernet": val_super["acc"], "test_acc_supernet": test_super["acc"],
        "genotype": genotype_to_json(genotype), "cycles_completed": len(run.progress.cycle_accuracies),
        "stopped_early": run.progress.stopped_early, "steps": int(run.state["step"]),
        "growth": run.progress.growth, "architecture": run.progress.architecture,
        "params_final": param_counts(run.model, image_shape),
        "wall_time_s": run.wall_time(), "resumed": resumed,
    })  # fmt: skip
    if is_primary():  # summary.json last: it marks the run finished
        write_json(workdir / "genotype.json", genotype_to_json(genotype))
        fault_point("final_plots")
        plots.plot_run(workdir)
        fault_point("final_summary")
        write_json(workdir / "summary.json", summary)
    return summary
