"""A rough time estimate of a run before it starts: XLA's FLOP count of the network's forward pass, times three
for a training step (forward and backward), times the images the run processes, over the throughput this kind
of step reaches on the backend. Calibrated only where measured (a 2-core x86 CPU); good to a factor of about 2,
enough to tell minutes from days (measured: within a factor of 3 for the chain, nb201 and darts supernets)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.extend
import jax.numpy as jnp

from asose_jax.nn.conv import auto_impl

# Forward-pass FLOPs per second that a training step reaches on a 2-core x86 CPU: the chain supernet (C=32, D=4,
# soft Gumbel) weight step at batch 64, 1.65 s per step (benchmarks/results/step_throughput_cpu.json, from
# `python benchmarks/step_throughput.py --spaces chain nb201`), 3 x its forward FLOPs per image x 64 images.
CPU_STEP_FLOPS_PER_S = 2.7e10
# Seconds each step costs on such a CPU besides its FLOPs (dispatch, small kernels, metrics): what the smoke and
# nb201-cpu presets' measured wall times (about 10 and 5.5 minutes) need on top of their FLOPs.
CPU_SECONDS_PER_STEP = 0.08
HOURS_BEFORE_WARNING = 3.0


def forward_flops(apply: Callable[[dict, jax.Array], jax.Array], variables, image_shape: tuple[int, ...]) -> float:
    """Multiply-add FLOPs (2 per multiply-add) of the convolutions and matrix products of ``apply(variables,
    images)`` on one image, counted on its jaxpr with plain XLA convolutions: a scanned body counts once per
    iteration. ``variables`` may be shapes only. Cheap: it traces, it neither lowers nor compiles."""
    images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    with auto_impl("xla"):
        return float(jaxpr_flops(jax.make_jaxpr(apply)(variables, images).jaxpr))


def jaxpr_flops(jaxpr: jax.extend.core.Jaxpr) -> int:
    """FLOPs of the ``conv_general_dilated`` and ``dot_general`` equations of ``jaxpr``, inner jaxprs included
    (a ``scan``'s ``length`` times, a ``cond``'s costliest branch)."""
    total = 0
    for eqn in jaxpr.eqns:
        inner = [p.jaxpr if hasattr(p, "jaxpr") else p for p in eqn.params.values() if hasattr(p, "eqns")
                 or hasattr(p, "jaxpr")]  # fmt: skip
        branches = [b.jaxpr for b in eqn.params.get("branches", ())]
        total += eqn.params.get("length", 1) * sum(jaxpr_flops(j) for j in inner)
        total += max((jaxpr_flops(b) for b in branches), default=0)
        total += _equation_flops(eqn)
    return total


def _equation_flops(eqn) -> int:
    out = eqn.outvars[0].aval.shape if eqn.outvars else ()
    if eqn.primitive.name == "conv_general_dilated":
        kernel = eqn.invars[1].aval.shape
        spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, *spatial)
        taps = math.prod(kernel[d] for d in spec[2:])
        return 2 * math.prod(out) * taps * kernel[spec[1]]
    if eqn.primitive.name == "dot_general":
        (contracting, _), _ = eqn.params["dimension_numbers"]
        return 2 * math.prod(out) * math.prod(eqn.invars[0].aval.shape[d] for d in contracting)
    return 0


def training_seconds(flops_per_image: float | None, images: float, steps: int) -> float | None:
    """Seconds that ``steps`` training steps over ``images`` images in all take on this backend (None where not
    calibrated)."""
    if flops_per_image is None or jax.default_backend() != "cpu":
        return None
    return 3.0 * flops_per_image * images / CPU_STEP_FLOPS_PER_S + CPU_SECONDS_PER_STEP * steps


def describe_estimate(seconds: float | None, what: str, smaller: str) -> tuple[str, bool]:
    """The console line of an estimate and whether it is a warning (more than ``HOURS_BEFORE_WARNING`` hours):
    a warning names ``smaller``, the way to a shorter run."""
    backend = jax.default_backend()
    if seconds is None:
        return f"no time estimate for {what} on {backend} before its first steps (it prints one then)", False
    hours = seconds / 3600
    amount = (f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours" if hours >= 1
              else f"{seconds / 60:.0f} min" if seconds >= 60 else "under a minute")  # fmt: skip
    if hours > HOURS_BEFORE_WARNING:
        return f"warning: {what} would take about {amount} on this {backend} (rough estimate); {smaller}", True
    return f"{what}: about {amount} on this {backend} (rough estimate)", False
