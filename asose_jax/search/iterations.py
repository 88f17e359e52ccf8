"""The search's jitted iterations over device-resident data, and what its validation accuracy measures.

The training split stays on the device as uint8; each jitted iteration gathers its batch by index, augments it
and takes its step (``asose_jax.search.steps``), so the host only sends index arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from asose_jax.nn.initializers import abstract_variables
from asose_jax.runtime.input_pipeline import (
    augment,
    normalize,
)
from asose_jax.runtime.parallel import (
    constrain_batch,
    jit_data_parallel,
)
from asose_jax.search.run_config import RunConfig
from asose_jax.search.sampling import is_single_path
from asose_jax.search.selection import NTK, NWOT
from asose_jax.search.steps import State, make_search_steps
from asose_jax.spaces import count_params, uniform_arch_weights

_AUG_WEIGHT, _AUG_ARCH = 2, 3  # PRNG streams of the augmentation (0 and 1 are the steps' samplers)
SUPERNET, DERIVED = "supernet", "derived_path_bn_recalibrated"


def validation_measure(sampler: str) -> str:
    """What ``val_acc`` measures, which drives the plateau stop and growth.

    * mixture samplers (softmax, soft Gumbel, Dirichlet): ``supernet``, the supernet with the sampler's
      expected mixture weights and its running BatchNorm statistics: the function those weights were
      trained as. A one-hot path through it would run on statistics of the mixture and measure nothing.
    * single-path samplers (hard Gumbel): ``derived_path_bn_recalibrated``, the derived architecture's
      path with BatchNorm statistics re-estimated on training batches (as single-path NAS evaluates
      paths): the running statistics average over every sampled path, not this one.
    """
    return DERIVED if is_single_path(sampler) else SUPERNET


class Iterations(NamedTuple):
    """Jitted iterations over device-resident data; each returns ``(state, metrics)``, state donated.

    ``weight_step(state, images, labels, idx [B], uniform_arch)`` serves warm-up (``uniform_arch``
    True), re-training and the weight half of the architecture phase with one compilation.
    ``arch_step(state, images, labels, weight_idx [B], arch_idx [B])`` takes one architecture step on
    the held-out batch (the training batch feeds the second-order virtual step); with
    ``alpha-only`` it also advances the global step. ``evaluate(state, images, labels, idx, mask,
    fixed_weights | None)`` returns eval metrics. ``recalibrate(state, images, labels, idx [N, B],
    fixed_weights)`` returns BatchNorm statistics re-estimated for that single path on N batches.
    ``mixture_eval(state, images, labels, idx [N, B], arch_weights)`` returns the held-out loss and accuracy of
    the supernet with those edge weights, ``mixture_score`` (same arguments) the score of ``--selection-measure``
    when it is not a loss (``zico``, ``zico_mean``, ``ntk``, ``nwot``; perturbation selection).
    """

    weight_step: Callable
    arch_step: Callable
    evaluate: Callable
    recalibrate: Callable
    mixture_eval: Callable
    mixture_score: Callable


def jit_iterations(config: RunConfig, mesh: Mesh | None) -> Iterations:
    """The jitted iterations with the model as a static first argument: each architecture (the initial
    one, each grown one) is traced once, on its first call. Data-parallel over ``mesh`` (index batches
    sharded, everything else replicated; see ``parallel``), or, with ``mesh=None``, plain jit."""
    advance = config.arch_phase == "alpha-only"

    def batch(state: State, images, labels, idx, stream: int) -> dict:
        base = jax.random.wrap_key_data(state["rng"], impl=config.search.prng_impl)
        key = jax.random.fold_in(jax.random.fold_in(base, state["step"]), stream)
        return {"image": augment(key, constrain_batch(images[idx], mesh), cutout=config.cutout), "label": labels[idx]}

    def guarded(old: State, new: State, metrics: dict, checked: tuple[str, str], flag: str):
        """With ``--nan-policy skip``: keep ``old`` (but the new step count) when a checked value is not finite."""
        if config.nan_policy != "skip":
            return new, metrics
        ok = jnp.isfinite(metrics[checked[0]]) & jnp.isfinite(metrics[checked[1]])
        kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        return {**kept, "step": new["step"]}, {**metrics, flag: (~ok).astype(jnp.float32)}

    def weight_step(model, state, images, labels, idx, uniform_arch):
        steps = make_search_steps(model, config.search)
        new, metrics = steps.weight_step(state, batch(state, images, labels, idx, _AUG_WEIGHT), uniform_arch)
        return guarded(state, new, metrics, ("loss", "grad_norm"), "skipped")

    def arch_step(model, state, images, labels, weight_idx, arch_idx):
        steps = make_search_steps(model, config.search)
        train_batch = batch(state, images, labels, weight_idx, _AUG_WEIGHT)  # the weight half's batch
        new, metrics = steps.arch_step(state, batch(state, images, labels, arch_idx, _AUG_ARCH), train_batch)
        new = {**new, "step": new["step"] + 1} if advance else new
        return guarded(state, new, metrics, ("arch_loss", "arch_grad_norm"), "arch_skipped")

    def evaluate(model, state, images, labels, idx, mask, fixed_weights):
        batch = {"image": normalize(constrain_batch(images[idx], mesh)), "label": labels[idx], "mask": mask}
        return make_search_steps(model, config.search).eval_step(state, batch, fixed_weights)

    def stacked(images, idx):  # [N, B] indices -> [N, B, H, W, 3] normalised images, no augmentation
        return jax.vmap(lambda i: normalize(constrain_batch(images[i], mesh)))(idx)

    def recalibrate(model, state, images, labels, idx, fixed_weights):
        return make_search_steps(model, config.search).recalibrated_batch_stats(state, stacked(images, idx),
                                                                                fixed_weights)  # fmt: skip

    def mixture_eval(model, state, images, labels, idx, arch_weights):
        steps = make_search_steps(model, config.search)
        return steps.mixture_eval(state, stacked(images, idx), labels[idx], arch_weights)

    def mixture_score(model, state, images, labels, idx, arch_weights):
        steps = make_search_steps(model, config.search)
        score = {NTK: steps.mixture_ntk, NWOT: steps.mixture_nwot}.get(config.selection_measure, steps.mixture_zico)
        return score(state, stacked(images, idx), labels[idx], arch_weights)

    return Iterations(
        jit_data_parallel(weight_step, mesh, {"idx": 0}, static_model=True),
        jit_data_parallel(arch_step, mesh, {"weight_idx": 0, "arch_idx": 0}, static_model=True),
        jit_data_parallel(evaluate, mesh, {"idx": 0, "mask": 0}, donate_state=False, static_model=True),
        jit_data_parallel(recalibrate, mesh, {"idx": 1}, donate_state=False, static_model=True),
        jit_data_parallel(mixture_eval, mesh, {"idx": 1}, donate_state=False, static_model=True),
        jit_data_parallel(mixture_score, mesh, {"idx": 1}, donate_state=False, static_model=True),
    )


def make_iterations(
    model: nn.Module, config: RunConfig, mesh: Mesh | None, jitted: Iterations | None = None
) -> Iterations:
    """The iterations of ``model``: ``jitted`` (default: a fresh ``jit_iterations``) bound to it."""
    jitted = jit_iterations(config, mesh) if jitted is None else jitted
    return Iterations(*(functools.partial(fn, model) for fn in jitted))


def param_counts(model: nn.Module, image_shape: tuple[int, ...]) -> dict[str, int]:
    """``{"weights": trainable weights, "arch": architecture logits}``, from shapes only."""
    variables = abstract_variables(model, image_shape, uniform_arch_weights(model), train=False)
    return {"weights": count_params(variables["params"]), "arch": sum(e * k for e, k in model.arch_shapes().values())}
