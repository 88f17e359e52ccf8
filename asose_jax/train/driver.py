"""Training a discovered (or published) architecture from scratch: ``train_and_evaluate(config, workdir)``.

Run directory::

    config.json     the TrainConfig as given, and apart ("computed") the network's size
    genotype.json   the genotype trained
    metrics.jsonl   "step" records (loss, accuracy, lr, images/s) and "epoch" records (train means,
                    test accuracy of the evaluated weights, wall time)
    summary.json    test accuracy with and without flip TTA (EMA and raw weights), parameter counts,
                    FLOPs per image, images/s, wall time, device; written last, it marks the run finished
    curves.png      the learning curves
    checkpoints/    orbax checkpoints every ``checkpoint_every`` steps and at every epoch's end: a killed run
                    continues (the same command, or ``--resume``) bit for bit

SIGTERM and SIGINT save a checkpoint after the current dispatch and stop with exit status 128 + signal.
The steps themselves are in ``asose_jax.train.steps``.
"""

from __future__ import annotations

import json
import pathlib

import jax.numpy as jnp

from asose_jax.runtime import plots, rundir
from asose_jax.runtime.checkpointing import has_checkpoint
from asose_jax.runtime.estimate import describe_estimate, training_seconds
from asose_jax.runtime.input_pipeline import check_train_limit, load_data
from asose_jax.runtime.memory import check_step_memory
from asose_jax.runtime.metrics_log import write_json
from asose_jax.runtime.parallel import check_batch_size, is_primary, make_mesh
from asose_jax.runtime.session import say
from asose_jax.spaces import count_params, space_of
from asose_jax.spaces.genotypes import genotype_from_json, genotype_to_json, resolve_genotype
from asose_jax.spaces.networks import build_network
from asose_jax.train.config import RESUMABLE_CHANGES, TrainConfig
from asose_jax.train.steps import compute_dtype, flops_per_image, init_train_state
from asose_jax.train.train_run import Schedule, TrainRun

SHORTER = "--recipe fast with fewer --epochs, or a GPU, takes a fraction of that"


def run_genotype(config: TrainConfig, workdir: pathlib.Path, saved: dict | None):
    """The genotype to train: ``config.genotype`` for a new run; for a continued one, the copy in its run
    directory, which a genotype file changed since (a search rewrites its genotype.json every cycle) cannot
    replace. Returns ``(genotype, notice)``, the notice saying when the file at ``--genotype`` was ignored."""
    own = workdir / "genotype.json"
    if saved is None or not own.is_file():
        return resolve_genotype(config.genotype), None
    genotype = genotype_from_json(json.loads(own.read_text()))
    try:
        changed = genotype_to_json(resolve_genotype(config.genotype)) != genotype_to_json(genotype)
    except ValueError:
        changed = True
    notice = (f"--genotype {config.genotype} changed since this run started; it trains the run's own copy "
              f"({own})") if changed else None  # fmt: skip
    return genotype, notice


def train_and_evaluate(
    config: TrainConfig, workdir: str | pathlib.Path, dry_run: bool = False, resume: bool = False
) -> dict:
    """Trains the network of ``config.genotype`` on ``config.data`` and evaluates it on the test split;
    fills ``workdir`` and returns the summary.

    A ``workdir`` holding an unfinished run with the same settings continues from its newest checkpoint (same
    batches, same network, same result; ``resume`` requires one); any other non-empty one is refused.
    ``dry_run`` builds the network and writes ``config.json`` and a ``summary.json`` with its weights and FLOPs,
    without training.
    """
    workdir = pathlib.Path(workdir)
    saved = rundir.existing_config(workdir, resume, dry_run)
    genotype, notice = run_genotype(config, workdir, saved)
    data, net, auxiliary = prepare(config, genotype, dry_run)
    state = init_train_state(net, config, tuple(data.x_train.shape[1:]))
    summary = network_summary(config, genotype, net, data, state)
    network = {"init_channels": net.init_channels, "auxiliary": auxiliary,
               "depth": getattr(net, space_of(genotype).depth_field, None)}  # fmt: skip
    config_json = rundir.config_record(config.to_json(), network)
    rundir.check_same_settings(workdir, saved, config_json, RESUMABLE_CHANGES)
    if resume and not has_checkpoint(workdir):
        raise ValueError(f"--resume: --workdir {workdir} has no checkpoint yet; rerun without --resume to start over")
    with rundir.create(workdir, lock=is_primary()):  # only now that data, network and settings are known to be good
        if is_primary() and saved is None:
            write_json(workdir / "config.json", config_json)
            write_json(workdir / "genotype.json", genotype_to_json(genotype))
        seconds = training_seconds(summary["flops_per_image"], summary["steps"] * config.batch_size, summary["steps"])
        say(describe_estimate(seconds, f"this training run ({summary['steps']:,} steps)", SHORTER)[0])
        if dry_run:
            if is_primary():
                write_json(workdir / "summary.json", {**summary, "dry_run": True, "estimated_seconds": seconds})
            return summary
        run = TrainRun(config, workdir, data, net, state)
        with run.running():
            run.say(f"{'continuing' if saved else 'starting'} training in {workdir} on {summary['device']}: "
                    f"{summary['data']['train']:,} training / {summary['data']['test']:,} test images, "
                    f"{summary['steps']:,} steps, {summary['params']:,} weights")  # fmt: skip
            if notice:
                run.say(notice)
            run.resume()
            if saved is not None and is_primary():
                for line in rundir.record_changes(
                    workdir, saved, config_json, RESUMABLE_CHANGES, int(run.state["step"])
                ):
                    run.say(line)
            run.run()
            summary.update(run.final_summary())
            run.finish(summary, {}, plots.plot_training)
    return json.loads(json.dumps(summary))


def prepare(config: TrainConfig, genotype, dry_run: bool):
    """The data, the network of ``genotype`` and whether it has an auxiliary head, checked before the run
    directory is touched: the batch against the data and the devices and, for a run, the memory of a step."""
    data = load_data(config.data, config.data_dir, config.train_limit)
    check_train_limit(data, config.train_limit)  # no recipe sets one: it is the user's
    auxiliary = config.auxiliary_weight > 0 and space_of(genotype).auxiliary_head
    net = build_network(genotype, config.init_channels, config.layers, data.num_classes, auxiliary, config.scan_cells)
    if config.batch_size > len(data.x_train):
        raise ValueError(f"--batch-size {config.batch_size} is larger than the {len(data.x_train)} training "
                         "images; lower it")  # fmt: skip
    check_batch_size(config.batch_size, make_mesh())
    if not dry_run:  # before the weights are drawn: a network too large for the memory fails here
        check_step_memory(net, config.batch_size, data, "--batch-size, --init-channels or --layers",
                          copies=2 if config.ema_decay else 1, dtype=compute_dtype(config.compute_dtype),
                          rng_streams=("drop_path",), drop_rate=config.drop_path)  # fmt: skip
    return data, net, auxiliary


def network_summary(config: TrainConfig, genotype, net, data, state: dict) -> dict:
    """What a dry run reports: the genotype, weights (without and of the auxiliary head) of the initial ``state``,
    FLOPs per image, device, compute dtype, data sizes and steps."""
    image_shape = tuple(data.x_train.shape[1:])
    params, params_aux = count_params(state["params"]), count_params(state["params"].get("auxiliary_head", {}))
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    return {
        "genotype": genotype_to_json(genotype), "recipe": config.recipe,
        "params": params - params_aux, "params_auxiliary": params_aux,
        "flops_per_image": flops_per_image(net, variables, image_shape),
        "device": rundir.device_description(), "compute_dtype": jnp.dtype(compute_dtype(config.compute_dtype)).name,
        "data": {"train": len(data.x_train), "test": len(data.x_test), "image_shape": list(image_shape)},
        "steps": Schedule.of(config, len(data.x_train)).total_steps,
    }  # fmt: skip
