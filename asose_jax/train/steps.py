"""The pure functions of training a discrete network from scratch: state, one SGD step, K steps per dispatch,
evaluation with flip test-time augmentation, and the FLOP count.

The state is a plain dict of pytrees::

    {"step": int32 [], "rng": uint32 key data, "params", "batch_stats", "opt": optax state,
     "ema": {"params", "batch_stats"}}   # "ema" only with --ema-decay > 0

One jitted, donated iteration takes ``steps_per_dispatch`` steps through ``jax.lax.scan``; each step
gathers its batch by index from the uint8 images resident on the device and augments it inside jit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NotRequired, TypedDict

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from asose_jax.nn.conv import auto_impl
from asose_jax.nn.initializers import abstract_variables, init_variables
from asose_jax.nn.losses import accuracy, cross_entropy, smoothed_cross_entropy
from asose_jax.nn.optimizers import descend, weight_optimizer
from asose_jax.nn.schedules import learning_rate_schedule
from asose_jax.runtime.input_pipeline import augment, normalize
from asose_jax.runtime.parallel import constrain_batch
from asose_jax.train.config import TrainConfig


class TrainState(TypedDict):
    """The training state (see the module docstring); ``ema`` only with ``--ema-decay`` > 0."""

    step: jax.Array
    rng: jax.Array
    params: dict
    batch_stats: dict
    opt: optax.OptState
    ema: NotRequired[dict]


State = TrainState


def compute_dtype(name: str) -> jnp.dtype:
    """``auto``: bfloat16 on GPU and TPU, float32 on CPU (where bfloat16 is emulated and slow)."""
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return jnp.dtype(name)


def cast_floating(tree, dtype):
    """Every floating-point leaf of ``tree`` as ``dtype`` (the compute copy of float32 weights)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def weight_transform(config: TrainConfig) -> optax.GradientTransformation:
    """Optional global-norm clip, coupled L2 ``wd * w``, (Nesterov) momentum; the step applies the learning rate."""
    return weight_optimizer(config.grad_clip, config.weight_decay, config.momentum, config.nesterov)


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
    ``drop_path * step / total_steps``. With ``nan_policy`` ``skip``, a step whose loss or gradient norm is not
    finite changes nothing but the step count (``metrics["skipped"]`` 1); with ``stop`` the caller checks
    every step's ``loss`` and ``grad_norm``."""
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
        grad_norm = optax.tree.norm(grads)
        metrics = {"loss": loss, "accuracy": accuracy(logits, y), "lr": lr, "grad_norm": grad_norm}
        if config.nan_policy == "skip":  # a non-finite loss or gradient leaves the state as it was, step aside
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            kept = {**state, "step": new["step"]}
            new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, kept)
            metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
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
    unlike the GPU's), so the count is the same on every machine; None if no analysis is available.

    The cost analysis counts a loop body once, so a network that scans its cells is counted unrolled, on
    the shapes of the unrolled network's variables (their values do not change the count)."""
    images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    if getattr(net, "scan_cells", False):
        net = net.clone(scan_cells=False)
        variables = abstract_variables(net, image_shape, train=False)
    with auto_impl("xla"):
        traced = jax.jit(lambda v, x: net.apply(v, x, train=False)[0]).trace(variables, images)
    try:
        cost = traced.lower(lowering_platforms=("cpu",)).cost_analysis()
    except (RuntimeError, ValueError, NotImplementedError):  # no CPU backend in this process
        return None
    cost = cost[0] if isinstance(cost, list | tuple) and cost else cost
    return float(cost["flops"]) if isinstance(cost, dict) and "flops" in cost else None
