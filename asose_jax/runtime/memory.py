"""Whether one training step fits the device's memory, checked before a run directory is created, and the one
line that an out-of-memory failure during a run ends with.

The estimate of one device's memory (from shapes only: nothing is compiled or allocated)::

    need = P(B / n) + passes * (P(B / n) - P(0)) + copies * V + 4 * A + D       (P(0): its inputs and gradient)

* ``P(b)``: the peak of the gradient of one training-mode forward pass at ``b`` images per device, simulated on its
  jaxpr (``jax.make_jaxpr(jax.grad(loss))``): the equations run in order, the inputs live throughout, each
  computed value from its equation to its last use, and a nested jaxpr (scan body, remat, cond branch) adds its
  own peak while it runs. It counts the weights, the images, the activations kept for the backward pass and the
  gradient. XLA fuses elementwise chains and reorders, so its buffers differ: on the presets' networks P was
  0.77-1.41x the memory XLA's ``memory_analysis`` assigns to the compiled gradient, but a 4096-channel chain took
  1.8x P. So a step the check lets through may still run out of memory; that ends as one line (``failure_line``).
* ``passes``: further forward passes a step differentiates through (2 more for the unrolled second-order
  architecture step: the training loss's gradient and the held-out loss), their activations counted again.
* ``V``: bytes of the variables (weights and BatchNorm state); ``copies`` counts the optimiser's momentum and any
  EMA copy.
* ``A``: bytes of a supernet's architecture logits (logits, Adam's two moments, gradient).
* ``D``: the resident uint8 data set and labels; ``n``: the devices.

The CPU's devices share the host's available RAM (``MemAvailable`` of ``/proc/meminfo``): there ``need`` counts
once per local device. On GPU and TPU it is compared with one device's ``bytes_limit``. A run is refused only
when ``need`` exceeds the available memory ``TOLERANCE`` times, so that an estimate off by a margin never
refuses a run that fits.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Jaxpr, Var, jaxprs_in_params

from asose_jax.nn.initializers import abstract_variables
from asose_jax.runtime.input_pipeline import ImageArrays
from asose_jax.spaces import uniform_arch_weights

TOLERANCE = 1.5  # refuse only an estimate above TOLERANCE x the available memory
# Largest sizes a configuration accepts (field name: limit), so that absurd values fail as one line before JAX or
# XLA sees them: channels and cells far beyond any published network (DARTS: 36 x 20), 2^16 images per step.
SIZE_LIMITS = {"init_channels": 4096, "depth": 100, "layers": 100, "max_depth": 100, "batch_size": 65536}
MAX_SEED = 2**32 - 1  # seeds are 32-bit (jax.random.key overflows past 2^63)
OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "out of memory", "failed to allocate", "unable to allocate")
_MESSAGE_CHARS = 200  # of a runtime error's first line


def check_size_limits(config: object, names: Iterable[str]) -> None:
    """Raises ValueError naming the flag when a field of ``config`` in ``names`` is an integer above its
    ``SIZE_LIMITS`` entry (lower bounds and types are the config's own checks)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, int) and not isinstance(value, bool) and value > SIZE_LIMITS[name]:
            raise ValueError(f"--{name.replace('_', '-')} must lie in [1, {SIZE_LIMITS[name]}], got {value}")


def check_seed(seed: object) -> None:
    """Raises ValueError unless ``seed`` is an integer in [0, ``MAX_SEED``]."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed!r}")


class StepMemory(NamedTuple):
    """Bytes one device holds during a training step (see the module docstring)."""

    state: int  # weights, their gradient, optimiser states, logits: P(0) + copies * V + 4 * A
    activations: int  # (1 + passes) * (P(B / n) - P(0))
    data: int  # D
    per_device_batch: int

    @property
    def total(self) -> int:
        return self.state + self.activations + self.data


def tree_bytes(tree) -> int:
    """Bytes of every leaf (arrays or ``jax.ShapeDtypeStruct``) of ``tree``."""
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def _var_bytes(var) -> int:
    aval = var.aval
    return int(np.prod(getattr(aval, "shape", ()))) * getattr(getattr(aval, "dtype", None), "itemsize", 0)


def peak_bytes(jaxpr: Jaxpr) -> int:
    """The most bytes live at once while the equations of ``jaxpr`` run in order: its inputs throughout (the
    caller holds them), each computed value until its last use; an equation with nested jaxprs adds the largest
    one's peak above that jaxpr's inputs."""
    last_use = {v: i for i, eqn in enumerate(jaxpr.eqns) for v in eqn.invars if isinstance(v, Var)}
    last_use.update({v: len(jaxpr.eqns) for v in jaxpr.outvars if isinstance(v, Var)})
    computed: set[Var] = set()
    live = peak = sum(_var_bytes(v) for v in (*jaxpr.constvars, *jaxpr.invars))
    for i, eqn in enumerate(jaxpr.eqns):
        nested = [peak_bytes(sub) - sum(_var_bytes(v) for v in sub.invars) for sub in jaxprs_in_params(eqn.params)]
        outputs = {v for v in eqn.outvars if isinstance(v, Var)}
        computed |= outputs
        live += sum(_var_bytes(v) for v in outputs)
        peak = max(peak, live + max([0, *nested]))
        dead = {v for v in eqn.invars if isinstance(v, Var) and v in computed and last_use[v] == i}
        dead |= {v for v in outputs if v not in last_use}
        live -= sum(_var_bytes(v) for v in dead)
    return peak


def estimate_step_memory(
    model: nn.Module,
    batch_size: int,
    data: ImageArrays,
    copies: int,
    passes: int = 0,
    dtype: jnp.dtype = jnp.float32,
    rng_streams: Iterable[str] = (),
    **apply_kwargs,
) -> StepMemory:
    """The memory of one training step of ``model`` (a supernet when it has ``arch_shapes``, whose forward pass
    takes uniform edge weights) at ``batch_size`` images over every device; the forward pass runs in ``dtype``
    with ``apply_kwargs`` and a key per ``rng_streams`` name, as the training step calls it."""
    inputs = (uniform_arch_weights(model),) if hasattr(model, "arch_shapes") else ()
    image_shape = data.x_train.shape[1:]
    variables = abstract_variables(model, image_shape, *inputs, train=False)
    per_device = max(1, batch_size // jax.device_count())
    rngs = {name: jax.random.key(0) for name in rng_streams}

    def gradient(variables: dict, images: jax.Array) -> dict:
        def loss(params: dict):
            params = jax.tree.map(lambda p: p.astype(dtype), params)
            outputs, updates = model.apply({**variables, "params": params}, images, *inputs, train=True,
                                           mutable=["batch_stats"], rngs=rngs, **apply_kwargs)  # fmt: skip
            return sum(jnp.sum(y.astype(jnp.float32)) for y in jax.tree.leaves(outputs)), updates

        return jax.grad(loss, has_aux=True)(variables["params"])

    images = jax.ShapeDtypeStruct((per_device, *image_shape), dtype)
    peak = peak_bytes(jax.make_jaxpr(gradient)(variables, images).jaxpr)
    at_rest = 2 * tree_bytes(variables) + tree_bytes(images)  # P(0): inputs and gradient
    state = at_rest + copies * tree_bytes(variables) + 4 * tree_bytes(inputs)
    data_bytes = sum(a.nbytes for a in (data.x_train, data.y_train, data.x_test, data.y_test))
    return StepMemory(state, (1 + passes) * max(0, peak - at_rest), data_bytes, per_device)


def available_memory() -> tuple[int | None, str]:
    """``(bytes, where)`` a training step may use: one accelerator's ``bytes_limit``, or on CPU the host's
    available RAM shared by the local devices (``None`` when unknown)."""
    device = jax.local_devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        return stats.get("bytes_limit"), f"one {device.platform.upper()}'s"
    meminfo = pathlib.Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "the host's available"
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "the host's available"
    except (ValueError, OSError):
        return None, "the host's available"


def check_step_memory(model: nn.Module, batch_size: int, data: ImageArrays, flags: str, **estimate_kwargs) -> None:
    """Raises a one-line ValueError naming ``flags`` to lower when one training step clearly exceeds the
    available memory (``estimate_step_memory`` takes ``estimate_kwargs``); silent when the memory is unknown."""
    available, where = available_memory()
    if available is None:
        return
    step = estimate_step_memory(model, batch_size, data, **estimate_kwargs)
    devices = jax.local_device_count() if jax.local_devices()[0].platform == "cpu" else 1
    need = devices * step.total
    if need > TOLERANCE * available:
        on = f" on {devices} CPU devices, each holding" if devices > 1 else ""
        raise ValueError(
            f"one training step needs about {_size(need)}{on} (weights and optimiser state {_size(step.state)}, "
            f"activations of {step.per_device_batch} images {_size(step.activations)}, data {_size(step.data)}), "
            f"more than {where} {_size(available)} of memory; lower {flags}"
        )


def _size(n: float) -> str:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB")):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 2**10:,.1f} KiB"


def failure_line(err: BaseException) -> str | None:
    """The one line (without ``error:``) that a run failing with ``err`` ends with: out of memory (a
    ``MemoryError`` or a JAX runtime error whose message says so) or another JAX runtime error; None for
    anything else. A run keeps its last checkpoint, which the same command resumes from."""
    if not isinstance(err, jax.errors.JaxRuntimeError | MemoryError):
        return None
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    first = first if len(first) <= _MESSAGE_CHARS else first[: _MESSAGE_CHARS - 3] + "..."
    if isinstance(err, MemoryError) or any(word.lower() in str(err).lower() for word in OUT_OF_MEMORY):
        return (f"out of memory ({first}); the last checkpoint is kept: lower --batch-size or the network size "
                "and rerun the same command")  # fmt: skip
    return f"{first} (a JAX runtime error); the last checkpoint is kept: rerun the same command to continue"
