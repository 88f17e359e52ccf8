"""Checkpoint size, save time and step-time overhead for a preset's search state.

Prints a table and writes JSON. Example (CPU, the reference preset):

    python benchmarks/checkpoint_cost.py --preset reference --out benchmarks/results/checkpoint_cost_cpu.json

``blocking`` is the time the training loop waits for ``save`` (orbax writes asynchronously); ``complete``
is the time until the checkpoint is committed on disk. The overhead is ``blocking`` over the time of
``checkpoint_every`` steps of the preset's weight step at its batch size.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asose_jax.runtime.checkpointing import CHECKPOINT_DIR, Checkpoints  # noqa: E402
from asose_jax.search.run_config import preset  # noqa: E402
from asose_jax.search.steps import init_search_state, make_search_steps, supernet_from_config  # noqa: E402


def _directory_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(args) -> dict:
    config = preset(args.preset)
    model = supernet_from_config(config.search)
    state = init_search_state(model, config.search, (32, 32, 3))
    progress = {"position": {"cycle": 1, "phase": 0, "epoch": 1, "batch": 0}, "epoch_history": [{"loss": 1.0}] * 200}
    workdir = pathlib.Path(tempfile.mkdtemp())
    checkpoints = Checkpoints(workdir, keep=args.saves)
    blocking, complete = [], []
    for i in range(1, args.saves + 1):
        start = time.perf_counter()
        checkpoints.save(i, state, progress)
        blocking.append(time.perf_counter() - start)
        checkpoints.manager.wait_until_finished()
        complete.append(time.perf_counter() - start)
    size = _directory_bytes(workdir / CHECKPOINT_DIR / str(args.saves))
    checkpoints.close()
    shutil.rmtree(workdir)

    weight_step = jax.jit(make_search_steps(model, config.search).weight_step)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(config.batch_size, 32, 32, 3)).astype(np.float32),
             "label": rng.integers(0, 10, config.batch_size).astype(np.int32)}  # fmt: skip
    state, metrics = weight_step(state, batch)  # compile
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = weight_step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    median_blocking = float(np.median(blocking))
    return {
        "preset": args.preset, "sampler": config.search.sampler, "batch_size": config.batch_size,
        "state_bytes": int(sum(x.nbytes for x in jax.tree.leaves(state))), "checkpoint_bytes": size,
        "save_blocking_s": median_blocking, "save_complete_s": float(np.median(complete)),
        "weight_step_s": step_s, "checkpoint_every": config.checkpoint_every,
        "overhead_percent": 100.0 * median_blocking / (config.checkpoint_every * step_s),
        "backend": jax.default_backend(), "device": jax.devices()[0].device_kind, "jax": jax.__version__,
        "machine": platform.machine(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="reference")
    parser.add_argument("--saves", type=int, default=5, help="checkpoints to time")
    parser.add_argument("--steps", type=int, default=3, help="weight steps to time")
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args()
    result = measure(args)
    print("| preset | checkpoint | save blocking / complete | weight step | overhead |")
    print(
        f"| {result['preset']} | {result['checkpoint_bytes'] / 1e6:.2f} MB | {result['save_blocking_s'] * 1e3:.0f} / "
        f"{result['save_complete_s'] * 1e3:.0f} ms | {result['weight_step_s']:.2f} s | "
        f"{result['overhead_percent']:.3f}% (a checkpoint every {result['checkpoint_every']} steps) |"
    )
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
