"""Pure search steps over one state dict.

The state is a plain dict of pytrees that a checkpointer can save whole::

    {"step": int32 [],            # global step: weight updates so far
     "rng": uint32 key data,      # base key; per-step keys are fold_in(rng, step)
     "params": weights, "batch_stats": BN state,
     "arch": {name: [E, K]} logits,
     "weight_opt": optax state, "arch_opt": optax state}

``weight_step`` differentiates the training loss w.r.t. ``params`` only;
``arch_step`` differentiates a held-out loss w.r.t. ``arch`` only (first order,
or second order through one virtual weight step, DARTS "unrolled"). Neither
touches the other's pytree, and no Python object keeps gradient state. Steps
are plain functions: the caller jits them (with shardings and donation).
A batch is ``{"image": float [B, H, W, 3], "label": int [B]}``, optionally with
``"mask": bool [B]`` marking real examples (used by ``eval_step``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypedDict

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from asose_jax.nn.initializers import init_variables
from asose_jax.nn.losses import accuracy, cross_entropy
from asose_jax.nn.operations import ACTIVATIONS, BN_MOMENTUM
from asose_jax.nn.optimizers import arch_optimizer, descend, weight_optimizer
from asose_jax.nn.schedules import learning_rate_schedule, temperature_schedule
from asose_jax.search.regularizers import arch_regularizer
from asose_jax.search.sampling import (
    edge_entropy,
    expected_edge_weights,
    is_single_path,
    sample_edge_weights,
    uses_temperature,
)
from asose_jax.search.selection import (
    NTK,
    NWOT,
    ZICO,
    ZICO_MEAN,
    activation_codes,
    in_play,
    ntk_kernel_examples,
    ntk_log_condition,
    nwot_log_det,
    zico_score,
)
from asose_jax.search.step_config import SearchConfig
from asose_jax.spaces import build_supernet, init_arch_logits, uniform_arch_weights


class SearchState(TypedDict):
    """The search state (see the module docstring): arrays and pytrees only, so a checkpoint saves it whole."""

    step: jax.Array
    rng: jax.Array
    params: dict
    batch_stats: dict
    arch: dict[str, jax.Array]
    weight_opt: optax.OptState
    arch_opt: optax.OptState


State = SearchState
Batch = dict
Metrics = dict

_WEIGHT_STREAM, _ARCH_STREAM = 0, 1


class SearchSteps(NamedTuple):
    """The pure functions of one search configuration."""

    weight_grad: Callable[..., tuple[dict, dict]]
    weight_step: Callable[..., tuple[State, Metrics]]
    arch_grad: Callable[..., tuple[dict, dict]]
    arch_step: Callable[..., tuple[State, Metrics]]
    unrolled_arch_loss: Callable[[dict, State, Batch, Batch], jax.Array]
    eval_step: Callable[..., Metrics]
    recalibrated_batch_stats: Callable[[State, jax.Array, dict], dict]
    mixture_eval: Callable[[State, jax.Array, jax.Array, dict], Metrics]
    mixture_zico: Callable[[State, jax.Array, jax.Array, dict], Metrics]
    mixture_ntk: Callable[[State, jax.Array, jax.Array, dict], Metrics]
    mixture_nwot: Callable[[State, jax.Array, jax.Array, dict], Metrics]


def supernet_from_config(config: SearchConfig) -> nn.Module:
    return build_supernet(
        config.space, config.init_channels, config.depth, config.num_classes, config.op_names, config.scan_cells
    )


def search_weight_optimizer(config: SearchConfig) -> optax.GradientTransformation:
    return weight_optimizer(config.grad_clip, config.weight_decay, config.momentum)


def search_arch_optimizer(config: SearchConfig) -> optax.GradientTransformation:
    return arch_optimizer(config.arch_lr, config.arch_b1, config.arch_b2, config.arch_weight_decay)


def init_search_state(model: nn.Module, config: SearchConfig, image_shape: tuple[int, int, int] = (32, 32, 3)) -> State:
    """Fresh state: weights and BN state as ``model.init`` would draw them (see ``initializers``),
    logits from N(0, scale^2), zero optimiser states, global step 0."""
    key = jax.random.key(config.seed, impl=config.prng_impl)
    init_key, arch_key, run_key = jax.random.split(key, 3)
    variables = init_variables(model, init_key, image_shape, uniform_arch_weights(model), train=False)
    arch = init_arch_logits(model, arch_key, config.arch_init_scale)
    return {
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(run_key),
        "params": variables["params"],
        "batch_stats": variables["batch_stats"],
        "arch": arch,
        "weight_opt": search_weight_optimizer(config).init(variables["params"]),
        "arch_opt": search_arch_optimizer(config).init(arch),
    }


class _StepFunctions:
    """The pure step functions of one ``(model, config)``: schedules, samplers and optimisers are fixed at
    construction; every method is a pure function of its arguments (no method changes the object)."""

    def __init__(self, model: nn.Module, config: SearchConfig):
        self.model, self.config = model, config
        self.weight_tx, self.arch_tx = search_weight_optimizer(config), search_arch_optimizer(config)
        self.virtual_tx = optax.chain(optax.add_decayed_weights(config.weight_decay), optax.trace(config.momentum))
        self.lr_at = learning_rate_schedule(config.weight_lr, config.weight_lr_min, config.total_steps)
        self.gumbel_tau_at = temperature_schedule(config.tau_schedule, config.tau_max, config.tau_min,
                                                  config.total_steps)  # fmt: skip
        self.regularizer = arch_regularizer(config.arch_regularizer, config.arch_reg_weight, config.total_steps)
        self.single_path = is_single_path(config.sampler)

    def tau_at(self, step: jax.Array) -> jax.Array:
        """The sampling temperature: annealed for Gumbel samplers, 1 for softmax (DARTS) and Dirichlet."""
        return self.gumbel_tau_at(step) if uses_temperature(self.config.sampler) else jnp.float32(1.0)

    def sampled_weights(self, arch: dict, state: State, stream: int) -> dict:
        """Edge weights sampled from ``arch`` with the key of this step and ``stream``."""
        base = jax.random.wrap_key_data(state["rng"], impl=self.config.prng_impl)
        key = jax.random.fold_in(jax.random.fold_in(base, state["step"]), stream)
        return sample_edge_weights(arch, key, self.config.sampler, self.tau_at(state["step"]))

    def train_loss(self, params, batch_stats, arch_weights, batch):
        """Training-mode loss; aux = (new BN state, logits)."""
        variables = {"params": params, "batch_stats": batch_stats}
        logits, updates = self.model.apply(variables, batch["image"], arch_weights, train=True,
                                           single_path=self.single_path, mutable=["batch_stats"])  # fmt: skip
        return cross_entropy(logits, batch["label"]), (updates["batch_stats"], logits)

    def weight_grad(self, state: State, batch: Batch, uniform_arch: bool | jax.Array = False):
        """Gradient of the training loss w.r.t. the weights only. ``uniform_arch`` (a bool, or a
        traced bool so one compiled step serves both) samples from logits that are zero on every op in play instead
        of ``state["arch"]`` (``in_play``): the warm-up, where every candidate is trained and none favoured."""
        logits = jax.tree.map(lambda a: jnp.where(uniform_arch, in_play(a), a), state["arch"])
        arch_weights = jax.lax.stop_gradient(self.sampled_weights(logits, state, _WEIGHT_STREAM))
        grad_fn = jax.value_and_grad(self.train_loss, has_aux=True)
        (loss, (batch_stats, logits)), grads = grad_fn(state["params"], state["batch_stats"], arch_weights, batch)
        return grads, {"batch_stats": batch_stats, "loss": loss, "logits": logits}

    def weight_step(self, state: State, batch: Batch, uniform_arch: bool | jax.Array = False):
        """One SGD step on the weights: ``w <- w - lr(t) * momentum(clip(g) + wd * w)``."""
        grads, aux = self.weight_grad(state, batch, uniform_arch)
        updates, weight_opt = self.weight_tx.update(grads, state["weight_opt"], state["params"])
        lr = self.lr_at(state["step"])
        new_state = {**state, "step": state["step"] + 1, "params": descend(state["params"], updates, lr),
                     "batch_stats": aux["batch_stats"], "weight_opt": weight_opt}  # fmt: skip
        metrics = {"loss": aux["loss"], "accuracy": accuracy(aux["logits"], batch["label"]), "lr": lr,
                   "grad_norm": optax.tree.norm(grads), "temperature": self.tau_at(state["step"])}  # fmt: skip
        return new_state, metrics

    def unrolled_arch_loss(self, arch: dict, state: State, train_batch: Batch, val_batch: Batch) -> jax.Array:
        """``L_val(w', a)`` with ``w' = w - lr * (momentum * buf + grad_w L_train(w, a) + wd * w)``.

        The held-out loss after one virtual SGD step, as in DARTS (no gradient clipping); the
        regulariser is not included.
        """
        arch_weights = self.sampled_weights(arch, state, _ARCH_STREAM)
        params, batch_stats = state["params"], state["batch_stats"]
        grads, _ = jax.grad(self.train_loss, has_aux=True)(params, batch_stats, arch_weights, train_batch)
        updates, _ = self.virtual_tx.update(grads, state["weight_opt"][1:], params)  # the (decay, trace) states
        virtual = descend(params, updates, self.lr_at(state["step"]))
        return self.train_loss(virtual, batch_stats, arch_weights, val_batch)[0]

    def arch_objective(self, arch: dict, state: State, val_batch: Batch, train_batch: Batch | None):
        """Held-out loss (first order, or second order through the virtual step) plus the regulariser;
        aux = (held-out loss, regulariser)."""
        if self.config.arch_order == 2:
            loss = self.unrolled_arch_loss(arch, state, train_batch, val_batch)
        else:
            arch_weights = self.sampled_weights(arch, state, _ARCH_STREAM)
            loss = self.train_loss(state["params"], state["batch_stats"], arch_weights, val_batch)[0]
        reg = self.regularizer(arch, state["step"])
        return loss + reg, (loss, reg)

    def arch_grad(self, state: State, val_batch: Batch, train_batch: Batch | None = None):
        """Gradient of the held-out loss (plus the regulariser) w.r.t. the logits only. BN state is used
        in training mode but not written back. Second order needs ``train_batch``."""
        if self.config.arch_order == 2 and train_batch is None:
            raise ValueError("the second-order arch step needs a training batch: arch_step(state, val, train)")
        grad_fn = jax.value_and_grad(self.arch_objective, has_aux=True)
        (_, (loss, reg)), grads = grad_fn(state["arch"], state, val_batch, train_batch)
        return grads, {"loss": loss, "reg": reg}

    def arch_step(self, state: State, val_batch: Batch, train_batch: Batch | None = None):
        """One Adam step on the logits; the weights, BN state and step count are untouched."""
        grads, aux = self.arch_grad(state, val_batch, train_batch)
        updates, arch_opt = self.arch_tx.update(grads, state["arch_opt"], state["arch"])
        arch = optax.apply_updates(state["arch"], updates)
        entropies = jnp.concatenate([e for _, e in sorted(edge_entropy(arch).items())])
        metrics = {"arch_loss": aux["loss"], "arch_reg": aux["reg"], "arch_grad_norm": optax.tree.norm(grads),
                   "entropy": jnp.mean(entropies), "temperature": self.tau_at(state["step"])}  # fmt: skip
        return {**state, "arch": arch, "arch_opt": arch_opt}, metrics

    def eval_step(self, state: State, batch: Batch, fixed_weights: dict | None = None) -> Metrics:
        """Loss and accuracy with BN running averages; nothing is updated.

        Edge weights: ``fixed_weights`` if given (rows one-hot or zero, run single-path: a discrete
        architecture inside the supernet, see ``genotypes.genotype_edge_weights``); otherwise the sampler's
        expected mixture (``softmax(a)``, or the Dirichlet mean).
        """
        if fixed_weights is not None:
            arch_weights, eval_single_path = fixed_weights, True
        else:
            arch_weights, eval_single_path = expected_edge_weights(state["arch"], self.config.sampler), False
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
        logits = self.model.apply(variables, batch["image"], arch_weights, train=False, single_path=eval_single_path)
        mask = batch.get("mask")
        count = batch["label"].shape[0] if mask is None else jnp.sum(mask)
        return {
            "loss": cross_entropy(logits, batch["label"], mask),
            "accuracy": accuracy(logits, batch["label"], mask),
            "count": jnp.asarray(count, jnp.int32),
        }

    def recalibrated_batch_stats(self, state: State, images: jax.Array, fixed_weights: dict) -> dict:
        """BatchNorm statistics re-estimated for the single path ``fixed_weights`` on ``images``
        [N, B, H, W, 3] (N training batches), as single-path NAS evaluates a path of a supernet.

        Each batch's statistics are read off a training-mode pass from zero running statistics
        (``new = momentum * 0 + (1 - momentum) * batch``); the result is their mean over the N batches.
        Statistics of ops off the path stay zero (they are not used).
        """
        zero = jax.tree.map(jnp.zeros_like, state["batch_stats"])
        variables = {"params": state["params"], "batch_stats": zero}

        def batch_stats(x: jax.Array) -> dict:
            _, updates = self.model.apply(variables, x, fixed_weights, train=True, single_path=True,
                                          mutable=["batch_stats"])  # fmt: skip
            return jax.tree.map(lambda s: s / (1.0 - BN_MOMENTUM), updates["batch_stats"])

        return jax.tree.map(lambda s: jnp.mean(s, axis=0), jax.lax.map(batch_stats, images))

    def mixture_eval(self, state: State, images: jax.Array, labels: jax.Array, arch_weights: dict) -> Metrics:
        """Mean loss and accuracy over N held-out batches ``images [N, B, H, W, 3]``, ``labels [N, B]`` of the
        supernet with the given edge weights ``{name: [E, K]}`` (a perturbed mixture, see
        ``asose_jax.search.selection``). BatchNorm in training mode, each batch normalised by its own statistics;
        nothing is written back."""
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}

        def one_batch(batch: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            logits, _ = self.model.apply(variables, batch[0], arch_weights, train=True, mutable=["batch_stats"])
            return cross_entropy(logits, batch[1]), accuracy(logits, batch[1])

        losses, accuracies = jax.lax.map(one_batch, (images, labels))
        return {"loss": jnp.mean(losses), "accuracy": jnp.mean(accuracies)}

    def mixture_zico(self, state: State, images: jax.Array, labels: jax.Array, arch_weights: dict) -> Metrics:
        """The ZiCo scores (``selection.zico_score``, ``zico`` with the sum over a layer's entries, ``zico_mean``
        with their mean) of the weight gradients of the supernet with edge weights ``arch_weights`` on N batches
        ``images [N, B, H, W, 3]``, ``labels [N, B]``: the training loss's gradient per batch, BatchNorm in
        training mode, nothing written back."""

        def gradient(batch: tuple[jax.Array, jax.Array]) -> dict:
            images_labels = {"image": batch[0], "label": batch[1]}
            return jax.grad(self.train_loss, has_aux=True)(state["params"], state["batch_stats"], arch_weights,
                                                           images_labels)[0]  # fmt: skip

        grads = jax.lax.map(gradient, (images, labels))
        return {ZICO: zico_score(grads), ZICO_MEAN: zico_score(grads, jnp.mean)}

    def mixture_ntk(self, state: State, images: jax.Array, labels: jax.Array, arch_weights: dict) -> Metrics:
        """Minus the mean of ``selection.ntk_log_condition``, the log condition number of the empirical NTK of the
        supernet with edge weights ``arch_weights``, over the images ``[N, B, H, W, 3]``, each batch cut into kernels
        of ``ntk_kernel_examples(B)`` examples. As TE-NAS takes it: a kernel's rows are the gradients of each
        example's summed logits w.r.t. the weights, BatchNorm in training mode (so a kernel's examples interact, and
        its cost grows with the square of their number), nothing written back. ``labels`` are not used."""
        del labels
        n, batch = images.shape[:2]
        examples = ntk_kernel_examples(batch)

        def log_condition(x: jax.Array) -> jax.Array:  # x [examples, H, W, 3]
            def summed_logits(params: dict) -> jax.Array:  # [examples]
                variables = {"params": params, "batch_stats": state["batch_stats"]}
                logits, _ = self.model.apply(variables, x, arch_weights, train=True, mutable=["batch_stats"])
                return jnp.sum(logits, axis=-1)

            return ntk_log_condition(jax.jacrev(summed_logits)(state["params"]))

        kernels = images.reshape(n, batch // examples, examples, *images.shape[2:])  # a batch's kernels side by side
        return {NTK: -jnp.mean(jax.lax.map(jax.vmap(log_condition), kernels))}

    def mixture_nwot(self, state: State, images: jax.Array, labels: jax.Array, arch_weights: dict) -> Metrics:
        """The mean over the batches ``images [N, B, H, W, 3]`` of NASWOT's score (``selection.nwot_log_det``) of
        the binary ReLU activation patterns of the supernet with edge weights ``arch_weights``: one forward pass
        per batch, BatchNorm in training mode, nothing written back. ``labels`` are not used."""
        del labels
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}

        def one_batch(x: jax.Array) -> jax.Array:
            _, sown = self.model.apply(variables, x, arch_weights, train=True, mutable=["batch_stats", ACTIVATIONS])
            return nwot_log_det(activation_codes(sown[ACTIVATIONS]))

        return {NWOT: jnp.mean(jax.lax.map(one_batch, images))}


def make_search_steps(model: nn.Module, config: SearchConfig) -> SearchSteps:
    """The pure step functions for ``model`` under ``config``."""
    fns = _StepFunctions(model, config)
    return SearchSteps(fns.weight_grad, fns.weight_step, fns.arch_grad, fns.arch_step, fns.unrolled_arch_loss,
                       fns.eval_step, fns.recalibrated_batch_stats, fns.mixture_eval,
                       fns.mixture_zico, fns.mixture_ntk, fns.mixture_nwot)  # fmt: skip
