"""Training a discovered (or published) architecture from scratch: ``train_and_evaluate(config, workdir)``.

Run directory::

    config.json     the TrainConfig as given, and apart ("computed") the network's size
    genotype.json   the genotype trained
    metrics.jsonl   "step" records (loss, accuracy, lr, images/s) and "epoch" records (train means,
                    test accuracy of the evaluated weights, wall time)
    summary.json    test accuracy with and without flip TTA (EMA and raw weights), parameter counts,
                    FLOPs per image, images/s, wall time, device
    curves.png      the learning curves
    checkpoints/    orbax checkpoints after each epoch: rerunning the command continues a killed run

The state is a plain dict of pytrees::

    {"step": int32 [], "rng": uint32 key data, "params", "batch_stats", "opt": optax state,
     "ema": {"params", "batch_stats"}}   # "ema" only with --ema-decay > 0

One jitted, donated iteration takes ``steps_per_dispatch`` steps through ``jax.lax.scan``; each step
gathers its batch by index from the uint8 images resident on the device and augments it inside jit.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from asose_jax.nn.conv import auto_impl
from asose_jax.nn.initializers import init_variables
from asose_jax.nn.optimizers import descend
from asose_jax.nn.schedules import learning_rate_schedule
from asose_jax.runtime import plots
from asose_jax.runtime.checkpointing import Checkpoints
from asose_jax.runtime.input_pipeline import augment, epoch_batches, eval_batches, load_data, normalize
from asose_jax.runtime.metrics_log import MetricsWriter, write_json
from asose_jax.runtime.parallel import (
    check_batch_size,
    constrain_batch,
    is_primary,
    jit_data_parallel,
    make_mesh,
    replicate,
    shard_batch,
)
from asose_jax.runtime.progress import Progress
from asose_jax.runtime.rundir import (
    check_same_settings,
    config_record,
    create,
    device_description,
    existing_config,
)
from asose_jax.search.steps import accuracy, cross_entropy
from asose_jax.spaces import count_params, space_of
from asose_jax.spaces.genotypes import genotype_to_json, resolve_genotype
from asose_jax.spaces.networks import build_network
from asose_jax.train.config import TrainConfig

State = dict


def compute_dtype(name: str) -> jnp.dtype:
    """``auto``: bfloat16 on GPU and TPU, float32 on CPU (where bfloat16 is emulated and slow)."""
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return jnp.dtype(name)


def cast_floating(tree, dtype):
    """Every floating-point leaf of ``tree`` as ``dtype`` (the compute copy of float32 weights)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float) -> jax.Array:
    """Mean cross-entropy against ``(1 - s) * one_hot + s / K``. logits: [B, K], labels: [B]."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


def weight_transform(config: TrainConfig) -> optax.GradientTransformation:
    """Optional global-norm clip, coupled L2 ``wd * w``, (Nesterov) momentum; the step applies the learning rate."""
    clip = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []
    return optax.chain(
        *clip,
        optax.add_decayed_weights(config.weight_decay),
        optax.trace(decay=config.momentum, nesterov=config.nesterov),
    )


def init_train_state(net: nn.Module, config: TrainConfig, image_shape: tuple[int, int, int]) -> State:
    key = jax.random.key(config.seed, impl="rbg")
    init_key, run_key = jax.random.split(key)
    variables = init_variables(net, init_key, image_shape, train=False)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(run_key),
        "params": variables["params"],
        "batch_stats": variables["batch_stats"],
        "opt": weight_transform(config).init(variables["params"]),
    }
    if config.ema_decay:
        state["ema"] = jax.tree.map(jnp.copy, variables)
    return state


def make_train_step(
    net: nn.Module, config: TrainConfig, total_steps: int, steps_per_epoch: int, mesh: Mesh | None = None
) -> Callable:
    """``train_step(state, images uint8 [N,H,W,3], labels [N], idx [B]) -> (state, metrics)``: one SGD step
    on the augmented batch ``images[idx]`` (laid out along ``mesh``'s data axis, if given). Loss:
    label-smoothed cross-entropy, plus ``auxiliary_weight`` times the auxiliary head's; drop-path rate
    ``drop_path * step / total_steps``."""
    tx = weight_transform(config)
    lr_at = learning_rate_schedule(config.lr, config.lr_min, total_steps, int(config.warmup_epochs * steps_per_epoch))
    dtype = compute_dtype(config.compute_dtype)

    def loss_fn(params, batch_stats, images, labels, key, drop_rate):
        variables = {"params": cast_floating(params, dtype), "batch_stats": batch_stats}
        (logits, aux_logits), updates = net.apply(
            variables, images.astype(dtype), train=True, drop_rate=drop_rate, rngs={"drop_path": key},
            mutable=["batch_stats"],
        )  # fmt: skip
        loss = smoothed_cross_entropy(logits, labels, config.label_smoothing)
        if aux_logits is not None:
            loss = loss + config.auxiliary_weight * smoothed_cross_entropy(aux_logits, labels, config.label_smoothing)
        return loss, (updates["batch_stats"], logits)

    def train_step(state: State, images: jax.Array, labels: jax.Array, idx: jax.Array):
        base = jax.random.wrap_key_data(state["rng"], impl="rbg")
        aug_key, drop_key = jax.random.split(jax.random.fold_in(base, state["step"]))
        x, y = augment(aug_key, constrain_batch(images[idx], mesh), cutout=config.cutout), labels[idx]
        drop_rate = config.drop_path * state["step"].astype(jnp.float32) / total_steps
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (batch_stats, logits)), grads = grad_fn(state["params"], state["batch_stats"], x, y, drop_key, drop_rate)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        lr = lr_at(state["step"])
        new = {**state, "step": state["step"] + 1, "params": descend(state["params"], updates, lr),
               "batch_stats": jax.tree.map(lambda b: b.astype(jnp.float32), batch_stats), "opt": opt}  # fmt: skip
        if "ema" in state:
            # Short runs: the decay ramps up as (1 + t) / (10 + t) before it reaches ema_decay.
            t = state["step"].astype(jnp.float32)
            decay = jnp.minimum(config.ema_decay, (1.0 + t) / (10.0 + t))
            live = {"params": new["params"], "batch_stats": new["batch_stats"]}
            new["ema"] = jax.tree.map(lambda e, v: decay * e + (1.0 - decay) * v, state["ema"], live)
        metrics = {"loss": loss, "accuracy": accuracy(logits, y), "lr": lr, "grad_norm": optax.tree.norm(grads)}
        return new, metrics

    return train_step


def scan_steps(train_step: Callable) -> Callable:
    """``iteration(state, images, labels, idx [K, B]) -> (state, metrics [K])``: K steps in one dispatch."""

    def iteration(state, images, labels, idx):
        return jax.lax.scan(lambda s, i: train_step(s, images, labels, i), state, idx)

    return iteration


def make_eval_step(net: nn.Module, config: TrainConfig, mesh: Mesh | None = None) -> Callable:
    """``eval_step(variables, images, labels, idx [B], mask [B]) -> sums``: summed loss, correct
    predictions without and with flip test-time augmentation (mean of the two softmaxes), count."""
    dtype = compute_dtype(config.compute_dtype)

    def eval_step(variables, images, labels, idx, mask):
        x, y = normalize(constrain_batch(images[idx], mesh)), labels[idx]
        compute = {"params": cast_floating(variables["params"], dtype), "batch_stats": variables["batch_stats"]}
        logits = net.apply(compute, x.astype(dtype), train=False)[0].astype(jnp.float32)
        flipped = net.apply(compute, x[:, :, ::-1].astype(dtype), train=False)[0].astype(jnp.float32)
        tta = jax.nn.softmax(logits) + jax.nn.softmax(flipped)
        n = jnp.sum(mask)
        return {
            "loss": cross_entropy(logits, y, mask) * n,
            "correct": accuracy(logits, y, mask) * n,
            "correct_tta": accuracy(tta, y, mask) * n,
            "count": n,
        }

    return eval_step


def flops_per_image(net: nn.Module, variables: dict, image_shape: tuple[int, int, int]) -> float | None:
    """XLA's FLOP count of one image's inference pass (multiplies and adds counted separately): the
    program with plain XLA convolutions, lowered for the CPU (whose cost analysis needs no compilation,
    unlike the GPU's), so the count is the same on every machine; None if no analysis is available."""
    with auto_impl("xla"):
        traced = jax.jit(lambda v, x: net.apply(v, x, train=False)[0]).trace(
            variables, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
        )
    try:
        cost = traced.lower(lowering_platforms=("cpu",)).cost_analysis()
    except (RuntimeError, ValueError, NotImplementedError):  # no CPU backend in this process
        return None
    cost = cost[0] if isinstance(cost, list | tuple) and cost else cost
    return float(cost["flops"]) if isinstance(cost, dict) and "flops" in cost else None


def train_and_evaluate(config: TrainConfig, workdir: str | pathlib.Path) -> dict:
    """Trains the network of ``config.genotype`` on ``config.data`` and evaluates it on the test split;
    fills ``workdir`` and returns the summary. A ``workdir`` holding an unfinished run with the same settings
    continues from its last finished epoch (same batches, same result); any other non-empty one is refused."""
    workdir = pathlib.Path(workdir)
    saved = existing_config(workdir)
    genotype = resolve_genotype(config.genotype)
    data = load_data(config.data, config.data_dir, config.train_limit)
    auxiliary = config.auxiliary_weight > 0 and space_of(genotype).auxiliary_head
    net = build_network(genotype, config.init_channels, config.layers, data.num_classes, auxiliary)
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
    check_same_settings(workdir, saved, config_json)
    create(workdir)
    if is_primary() and saved is None:
        write_json(workdir / "config.json", config_json)
        write_json(workdir / "genotype.json", genotype_to_json(genotype))

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
    checkpoints = Checkpoints(workdir, keep=2)
    done = {"epoch": 0, "metrics_bytes": 0, "wall_time_s": 0.0, "train_seconds": 0.0, "rates": []}
    if checkpoints.latest_step() is not None:  # continue an interrupted run from its last finished epoch
        state, done = checkpoints.restore(state)
        print(f"continuing {workdir} after epoch {done['epoch']}", flush=True)
    writer.truncate(done["metrics_bytes"])
    start = time.perf_counter() - done["wall_time_s"]
    train_seconds, rates = done["train_seconds"], list(done["rates"])
    for epoch in range(done["epoch"] + 1, config.epochs + 1):
        order = epoch_batches((config.seed, epoch), np.arange(n_train), batch, steps_per_epoch)
        order = order.reshape(dispatches, k, batch)
        progress = Progress(dispatches, f"epoch {epoch}/{config.epochs}")
        epoch_start, fetched, pending = time.perf_counter(), [], []
        for d in range(dispatches):
            state, metrics = iteration(state, images, labels, shard_batch(order[d], mesh, leading=1))
            pending.append(metrics)
            step = (epoch - 1) * steps_per_epoch + (d + 1) * k
            if (d + 1) * k % config.log_every < k or d + 1 == dispatches:
                for m in jax.device_get(pending):
                    fetched.extend({name: float(v[i]) for name, v in m.items()} for i in range(k))
                pending.clear()
                last = fetched[-1]
                if not np.isfinite(last["loss"]):
                    raise FloatingPointError(
                        f"non-finite training loss at step {step} (epoch {epoch}); lower --lr and start again"
                    )
                elapsed = time.perf_counter() - epoch_start
                rate = (d + 1) * k * batch / elapsed
                writer.write({"event": "step", "epoch": epoch, "step": step, **last, "images_per_s": rate})
                progress.update(d + 1, step=step, img_s=round(rate, 1), loss=last["loss"],
                                **{"acc%": 100 * last["accuracy"]}, lr=last["lr"])  # fmt: skip
        progress.close()
        jax.block_until_ready(state)
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        rates.append(steps_per_epoch * batch / epoch_seconds)
        test = evaluate(evaluated_weights())
        record = {
            "event": "epoch", "epoch": epoch, "step": epoch * steps_per_epoch,
            "train_loss": float(np.mean([m["loss"] for m in fetched])),
            "train_acc": 100 * float(np.mean([m["accuracy"] for m in fetched])),
            "test_loss": test["loss"], "test_acc": test["acc"], "epoch_seconds": epoch_seconds,
            "images_per_s": rates[-1], "wall_time_s": time.perf_counter() - start,
        }  # fmt: skip
        writer.write(record)
        print(f"epoch {epoch}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.2f}% | "
              f"test acc {test['acc']:.2f}% | {rates[-1]:.0f} img/s", flush=True)  # fmt: skip
        done = {"epoch": epoch, "metrics_bytes": writer.tell(), "wall_time_s": time.perf_counter() - start,
                "train_seconds": train_seconds, "rates": rates}  # fmt: skip
        checkpoints.save(epoch, state, done)
    checkpoints.close()
    writer.close()

    final = evaluate(evaluated_weights())
    raw = evaluate({"params": state["params"], "batch_stats": state["batch_stats"]}) if "ema" in state else final
    summary.update({
        "test_acc": final["acc_tta"], "test_acc_no_tta": final["acc"], "test_loss": final["loss"],
        "evaluated_weights": "ema" if "ema" in state else "raw",
        "test_acc_raw_weights": raw["acc"], "test_acc_raw_weights_tta": raw["acc_tta"],
        # The first epoch includes compilation; the steady rate is the median of the others.
        "train_images_per_s": float(np.median(rates[1:] if len(rates) > 1 else rates)),
        "train_time_s": train_seconds, "wall_time_s": time.perf_counter() - start,
    })  # fmt: skip
    if is_primary():
        write_json(workdir / "summary.json", summary)
        plots.plot_training(workdir)
    return json.loads(json.dumps(summary))
