"""Shared by the benchmarks: timing of compiled calls and a description of the machine."""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable, Sequence

import jax


def environment() -> dict:
    """Backend, device kind and count, host processor, JAX version."""
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
    }


def time_compiled(fn: Callable, state, inputs: Sequence[tuple], warmup: int, steps: int):
    """``(compile seconds, median seconds per call, final state, last outputs)`` of ``fn(state, *inputs[i])``,
    a jitted function (or a ``functools.partial`` of one, e.g. bound to a static model) that returns
    ``(state, outputs)`` (state donated), cycling through ``inputs``."""
    start = time.perf_counter()
    lower = functools.partial(fn.func.lower, *fn.args) if isinstance(fn, functools.partial) else fn.lower
    compiled = lower(state, *inputs[0]).compile()
    compile_s = time.perf_counter() - start
    for i in range(warmup):
        state, out = compiled(state, *inputs[i % len(inputs)])
    jax.block_until_ready(state)
    times = []
    for i in range(steps):
        start = time.perf_counter()
        state, out = compiled(state, *inputs[i % len(inputs)])
        jax.block_until_ready((state, out))
        times.append(time.perf_counter() - start)
    return compile_s, sorted(times)[len(times) // 2], state, out
