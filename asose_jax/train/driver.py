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

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from asose_jax.runtime import plots
from asose_jax.runtime.checkpointing import Checkpoints, has_checkpoint
from asose_jax.runtime.faults import fault_point
from asose_jax.runtime.input_pipeline import check_train_limit, epoch_batches, eval_batches, load_data
from asose_jax.runtime.metrics_log import MetricsWriter, write_json
from asose_jax.runtime.parallel import (
    check_batch_size,
    is_primary,
    jit_data_parallel,
    make_mesh,
    replicate,
    shard_batch,
)
from asose_jax.runtime.progress import Progress
from asose_jax.runtime.rundir import (
    Interrupted,
    catch_stop_signals,
    check_finite,
    check_same_settings,
    config_record,
    create,
    device_description,
    existing_config,
)
from asose_jax.spaces import count_params, space_of
from asose_jax.spaces.genotypes import genotype_to_json, resolve_genotype
from asose_jax.spaces.networks import build_network
from asose_jax.train.config import RESUMABLE_CHANGES, TrainConfig
from asose_jax.train.steps import (
    compute_dtype,
    flops_per_image,
    init_train_state,
    make_eval_step,
    make_train_step,
    scan_steps,
)

_CHECKED = ("loss", "grad_norm")  # must stay finite with --nan-policy stop


@dataclasses.dataclass
class TrainProgress:
    """The JSON half of a training checkpoint: where to continue (``epoch``, ``dispatch`` within it), the fetched
    per-step metrics of the unfinished epoch and its seconds so far, the length of ``metrics.jsonl``, the wall
    and training time before this session, the per-epoch rates, and how many checkpoints were written."""

    epoch: int = 1
    dispatch: int = 0
    fetched: list[dict] = dataclasses.field(default_factory=list)
    epoch_seconds: float = 0.0
    metrics_bytes: int = 0
    wall_time_s: float = 0.0
    train_seconds: float = 0.0
    rates: list[float] = dataclasses.field(default_factory=list)
    saves: int = 0


def fetch(pending: list[dict], fetched: list[dict], first_step: int, stop_at_nan: bool) -> None:
    """Moves the device metrics of the ``pending`` dispatches (``[K]`` per name) to ``fetched``, one dict per step;
    with ``stop_at_nan``, checks every step (``first_step`` is the global number of ``fetched``'s first)."""
    new = [{name: float(v[i]) for name, v in m.items()} for m in jax.device_get(pending) for i in range(len(m["loss"]))]
    if stop_at_nan:
        check_finite(new, first_step + len(fetched), _CHECKED, "", "lower --lr and rerun the command to continue")
    fetched.extend(new)
    pending.clear()


def train_and_evaluate(
    config: TrainConfig, workdir: str | pathlib.Path, dry_run: bool = False, resume: bool = False
) -> dict:
    """Trains the network of ``config.genotype`` on ``config.data`` and evaluates it on the test split;
    fills ``workdir`` and returns the summary.

    A ``workdir`` holding an unfinished run with the same settings continues from its newest checkpoint (same
    batches, same result; ``resume`` requires one); any other non-empty one is refused. ``dry_run`` builds the
    network and writes ``config.json`` and a ``summary.json`` with its weights and FLOPs, without training.
    """
    workdir = pathlib.Path(workdir)
    saved = existing_config(workdir)
    if resume and saved is None:
        raise ValueError(f"--resume: no run in --workdir {workdir}; start one without --resume")
    if dry_run and saved is not None:
        raise ValueError(f"--dry-run: --workdir {workdir} already holds a run; choose a new --workdir")
    genotype = resolve_genotype(config.genotype)
    data = load_data(config.data, config.data_dir, config.train_limit)
    check_train_limit(data, config.train_limit)  # no recipe sets one: it is the user's
    auxiliary = config.auxiliary_weight > 0 and space_of(genotype).auxiliary_head
    net = build_network(genotype, config.init_channels, config.layers, data.num_classes, auxiliary, config.scan_cells)
    n_train, batch = len(data.x_train), config.batch_size
    if batch > n_train:
        raise ValueError(f"--batch-size {batch} is larger than the {n_train} training images; lower it")
    mesh = make_mesh()
    check_batch_size(batch, mesh)
    k = config.steps_per_dispatch
    dispatches = -(-(n_train // batch) // k)  # per epoch; the last dispatch may take a few extra batches
    steps_per_epoch = dispatches * k
    total_steps = config.epochs * steps_per_epoch
    image_shape = tuple(data.x_train.shape[1:])

    state = replicate(init_train_state(net, config, image_shape), mesh)
    params = count_params(state["params"])
    params_aux = count_params(state["params"].get("auxiliary_head", {}))
    summary = {
        "genotype": genotype_to_json(genotype), "recipe": config.recipe,
        "params": params - params_aux, "params_auxiliary": params_aux,
        "flops_per_image": flops_per_image(net, {"params": state["params"], "batch_stats": state["batch_stats"]},
                                           image_shape),
        "device": device_description(), "compute_dtype": jnp.dtype(compute_dtype(config.compute_dtype)).name,
        "data": {"train": n_train, "test": len(data.x_test), "image_shape": list(image_shape)},
        "steps": total_steps,
    }  # fmt: skip
    network = {"init_channels": net.init_channels, "auxiliary": auxiliary,
               "depth": getattr(net, "layers", getattr(net, "cells_per_stage", None))}  # fmt: skip
    config_json = config_record(config.to_json(), network)
    check_same_settings(workdir, saved, config_json, RESUMABLE_CHANGES)
    if resume and not has_checkpoint(workdir):
        raise ValueError(f"--resume: --workdir {workdir} has no checkpoint yet; rerun without --resume to start over")
    create(workdir)  # only now that data, network and settings are known to be good
    if is_primary() and saved is None:
        write_json(workdir / "config.json", config_json)
        write_json(workdir / "genotype.json", genotype_to_json(genotype))
    if dry_run:
        if is_primary():
            write_json(workdir / "summary.json", {**summary, "dry_run": True})
        return summary

    images, labels, test_images, test_labels = replicate((data.x_train, data.y_train, data.x_test, data.y_test), mesh)
    train_step = make_train_step(net, config, total_steps, steps_per_epoch, mesh)
    iteration = jit_data_parallel(scan_steps(train_step), mesh, {3: 1}, 4)
    eval_step = jit_data_parallel(make_eval_step(net, config, mesh), mesh, {3: 0, 4: 0}, 5, donate_state=False)
    eval_batch = min(batch, 1000) // mesh.devices.size * mesh.devices.size

    def evaluate(variables: dict) -> dict:
        sums = {"loss": 0.0, "correct": 0.0, "correct_tta": 0.0, "count": 0.0}
        for idx, mask in eval_batches(len(data.x_test), eval_batch):
            idx, mask = shard_batch(idx, mesh), shard_batch(mask, mesh)
            out = jax.device_get(eval_step(variables, test_images, test_labels, idx, mask))
            sums = {name: sums[name] + float(out[name]) for name in sums}
        n = sums["count"]
        return {"loss": sums["loss"] / n, "acc": 100 * sums["correct"] / n, "acc_tta": 100 * sums["correct_tta"] / n}

    def evaluated_weights() -> dict:
        return state["ema"] if "ema" in state else {"params": state["params"], "batch_stats": state["batch_stats"]}

    writer = MetricsWriter(workdir / "metrics.jsonl", enabled=is_primary())
    checkpoints = Checkpoints(workdir, keep=3)
    done = TrainProgress()
    if checkpoints.latest_step() is not None:  # continue an interrupted run from its newest checkpoint
        state, restored = checkpoints.restore(state)
        done = TrainProgress(**restored)
        print(f"continuing {workdir} at epoch {done.epoch}, step {int(state['step'])}", flush=True)
    writer.truncate(done.metrics_bytes)
    session_start, stop, stop_at_nan = time.perf_counter(), {}, config.nan_policy == "stop"
    restore_signals = catch_stop_signals(lambda signum: stop.setdefault("signal", signum))

    def save(epoch: int, dispatch: int, fetched: list[dict], epoch_seconds: float) -> None:
        nonlocal session_start
        now = time.perf_counter()
        done.epoch, done.dispatch, done.fetched, done.epoch_seconds = epoch, dispatch, list(fetched), epoch_seconds
        done.wall_time_s, session_start = done.wall_time_s + now - session_start, now
        done.metrics_bytes, done.saves = writer.tell(), done.saves + 1
        checkpoints.save(done.saves, state, dataclasses.asdict(done))
        if "signal" in stop:
            raise Interrupted(stop["signal"], int(state["step"]), workdir)

    try:
        for epoch in range(done.epoch, config.epochs + 1):
            order = epoch_batches((config.seed, epoch), np.arange(n_train), batch, steps_per_epoch)
            order = order.reshape(dispatches, k, batch)
            first = done.dispatch if epoch == done.epoch else 0
            fetched = list(done.fetched) if first else []
            progress = Progress(dispatches, f"epoch {epoch}/{config.epochs}")
            epoch_start = time.perf_counter() - (done.epoch_seconds if first else 0.0)
            pending, epoch_first_step = [], (epoch - 1) * steps_per_epoch + 1

            for d in range(first, dispatches):
                state, metrics = iteration(state, images, labels, shard_batch(order[d], mesh, leading=1))
                pending.append(metrics)
                fault_point("step")
                step = (epoch - 1) * steps_per_epoch + (d + 1) * k
                if (d + 1) * k % config.log_every < k or d + 1 == dispatches:
                    fetch(pending, fetched, epoch_first_step, stop_at_nan)
                    rate = (d + 1 - first) * k * batch / (time.perf_counter() - epoch_start)
                    writer.write({"event": "step", "epoch": epoch, "step": step, **fetched[-1], "images_per_s": rate})
                    progress.update(d + 1, step=step, img_s=round(rate, 1), loss=fetched[-1]["loss"],
                                    **{"acc%": 100 * fetched[-1]["accuracy"]}, lr=fetched[-1]["lr"])  # fmt: skip
                every = config.checkpoint_every
                due = every and step // every > (step - k) // every
                if d + 1 < dispatches and ("signal" in stop or due):
                    fetch(pending, fetched, epoch_first_step, stop_at_nan)
                    save(epoch, d + 1, fetched, time.perf_counter() - epoch_start)
            progress.close()
            fetch(pending, fetched, epoch_first_step, stop_at_nan)
            jax.block_until_ready(state)
            epoch_seconds = time.perf_counter() - epoch_start
            done.train_seconds += epoch_seconds
            done.rates.append(steps_per_epoch * batch / epoch_seconds)
            test = evaluate(evaluated_weights())
            used = [m for m in fetched if not m.get("skipped")]  # --nan-policy skip
            record = {
                "event": "epoch", "epoch": epoch, "step": epoch * steps_per_epoch,
                "train_loss": float(np.mean([m["loss"] for m in used])) if used else None,
                "train_acc": 100 * float(np.mean([m["accuracy"] for m in used])) if used else None,
                "test_loss": test["loss"], "test_acc": test["acc"], "epoch_seconds": epoch_seconds,
                "images_per_s": done.rates[-1], "wall_time_s": done.wall_time_s + time.perf_counter() - session_start,
                **({"skipped_steps": len(fetched) - len(used)} if config.nan_policy == "skip" else {}),
            }  # fmt: skip
            writer.write(record)
            fault_point("epoch_end")
            train = f"{record['train_loss']:.4f} acc {record['train_acc']:.2f}%" if used else "(every step skipped)"
            print(f"epoch {epoch}: train loss {train} | test acc {test['acc']:.2f}% | {done.rates[-1]:.0f} img/s",
                  flush=True)  # fmt: skip
            save(epoch + 1, 0, [], 0.0)
    finally:
        checkpoints.close()
        restore_signals()
    writer.close()

    final = evaluate(evaluated_weights())
    raw = evaluate({"params": state["params"], "batch_stats": state["batch_stats"]}) if "ema" in state else final
    summary.update({
        "test_acc": final["acc_tta"], "test_acc_no_tta": final["acc"], "test_loss": final["loss"],
        "evaluated_weights": "ema" if "ema" in state else "raw",
        "test_acc_raw_weights": raw["acc"], "test_acc_raw_weights_tta": raw["acc_tta"],
        # The first epoch includes compilation; the steady rate is the median of the others.
        "train_images_per_s": float(np.median(done.rates[1:] if len(done.rates) > 1 else done.rates)),
        "train_time_s": done.train_seconds, "wall_time_s": done.wall_time_s + time.perf_counter() - session_start,
    })  # fmt: skip
    if is_primary():  # summary.json last: it marks the run finished
        fault_point("final_plots")
        plots.plot_training(workdir)
        fault_point("final_summary")
        write_json(workdir / "summary.json", summary)
    return json.loads(json.dumps(summary))
