"""Data parallelism over every device with ``jax.jit`` + ``NamedSharding`` (no ``pmap``).

A 1-D mesh over all devices (of all hosts) with the axis ``"data"``. Index batches are sharded along it;
the state (weights, BatchNorm state, logits, optimiser states, step, key) and the uint8 data set are
replicated. Inside the jitted step the gathered images are constrained to the batch sharding, so each
device augments and runs its slice, while XLA turns every batch reduction (the loss mean, BatchNorm's
batch statistics) into a cross-device reduction: N devices compute the numbers one device computes on
the same global batch. Random numbers (Gumbel samples, augmentation) are drawn from replicated keys,
so every device uses one architecture sample per step.

Multi-host (TPU pods): ``initialize`` calls ``jax.distributed.initialize()``; every process computes the
same global index batch from the seed and contributes its slice through
``jax.make_array_from_process_local_data``; every process holds the whole uint8 data set (150 MB for
CIFAR-10) on its devices.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
INIT_MODES = ("auto", "on", "off")


def initialize(mode: str = "auto") -> None:
    """Starts JAX's distributed runtime: ``on`` always, ``auto`` on a TPU pod slice with several workers
    (``TPU_WORKER_HOSTNAMES`` lists more than one), ``off`` never. Call it before anything touches a device.

    ``jax.distributed.initialize()`` finds the coordinator on Cloud TPU, SLURM and Open MPI by itself;
    elsewhere set ``JAX_COORDINATOR_ADDRESS=host:port``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` on
    every process. CPU processes exchange data through gloo.
    """
    if mode not in INIT_MODES:
        raise ValueError(f"unknown --distributed {mode!r}; use one of {', '.join(INIT_MODES)}")
    if mode == "on" or (mode == "auto" and "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        given = {name: int(os.environ[var]) for name, var in (("num_processes", "JAX_NUM_PROCESSES"),
                 ("process_id", "JAX_PROCESS_ID")) if var in os.environ}  # fmt: skip
        jax.distributed.initialize(**given)


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh, flag: str = "--batch-size") -> None:
    """Raises ValueError unless ``batch_size`` divides evenly over the mesh's devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"{flag} {batch_size} does not divide by the {n} devices; use a multiple of {n} "
            f"(e.g. {max(n, batch_size // n * n)})"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """Shards the batch axis, which follows ``leading`` unsharded axes (e.g. 1 for ``[K, B]`` index stacks)."""
    return NamedSharding(mesh, P(*(None,) * leading, DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Every leaf of ``tree`` as a global array replicated over the mesh (each process passes the whole value)."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def shard_batch(batch: np.ndarray, mesh: Mesh, leading: int = 0) -> jax.Array:
    """The global batch ``batch`` (the same on every process) as an array sharded along its batch axis;
    each process contributes only the rows its devices hold."""
    sharding = batch_sharding(mesh, leading)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    rows = batch.shape[leading] // jax.process_count()
    start = jax.process_index() * rows
    local = np.take(batch, np.arange(start, start + rows), axis=leading)
    return jax.make_array_from_process_local_data(sharding, local, batch.shape)


def constrain_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Inside jit: ``x`` (batch axis first) laid out along the data axis; no-op without a mesh."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def jit_data_parallel(
    fn: Callable,
    mesh: Mesh | None,
    batched: Mapping[str, int],
    donate_state: bool = True,
    static_model: bool = False,
) -> Callable:
    """``jax.jit(fn)`` with the state (the first argument) donated. With a mesh, explicit shardings by argument
    name: the arguments named in ``batched`` (name -> leading unsharded axes, e.g. ``{"idx": 1}`` for a
    ``[K, B]`` index stack) sharded along their batch axis, every other argument and every output replicated.
    Without a mesh, a plain jit (the baseline). Call the result with positional arguments.

    ``static_model``: ``fn`` takes a hashable model first, as a static argument (one trace per model).
    """
    offset = int(static_model)
    names = list(inspect.signature(fn).parameters)[offset:]
    if unknown := set(batched) - set(names):
        raise TypeError(f"{fn.__name__} has no argument {', '.join(sorted(unknown))} to shard; it takes {names}")
    static = (0,) if static_model else ()
    donate = (offset,) if donate_state else ()
    if mesh is None:
        return jax.jit(fn, static_argnums=static, donate_argnums=donate)
    in_shardings = tuple(batch_sharding(mesh, batched[n]) if n in batched else replicated(mesh) for n in names)
    return jax.jit(fn, static_argnums=static, in_shardings=in_shardings, out_shardings=replicated(mesh),
                   donate_argnums=donate)  # fmt: skip


def is_primary() -> bool:
    """Whether this process writes the run directory (process 0)."""
    return jax.process_index() == 0
