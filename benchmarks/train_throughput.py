"""Images/s of the ``fast`` recipe's training iteration (``experiments/cifar10_train.py``) per genotype.

Times the jitted, donated, data-parallel iteration the training CLI runs (gather from uint8 images on the
device, augmentation, forward and backward, SGD, EMA), with ``K`` steps per dispatch (``lax.scan``) and
each compute dtype. Prints a table and writes JSON. Examples:

    python benchmarks/train_throughput.py --out benchmarks/results/train_throughput_gpu.json
    python benchmarks/train_throughput.py --batch-size 64 --dispatch 1 --steps 3 \\
        --out benchmarks/results/train_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asose_jax.runtime import parallel  # noqa: E402
from asose_jax.spaces.genotypes import PUBLISHED  # noqa: E402
from asose_jax.spaces.networks import build_network  # noqa: E402
from asose_jax.train.config import recipe  # noqa: E402
from asose_jax.train.steps import compute_dtype, init_train_state, make_train_step, scan_steps  # noqa: E402
from benchmarks.timing import environment, time_compiled  # noqa: E402


def benchmark(genotype: str, dtype: str, k: int, args) -> dict:
    config = dataclasses.replace(recipe("fast"), compute_dtype=dtype, steps_per_dispatch=k, batch_size=args.batch_size)
    net = build_network(PUBLISHED[genotype], args.init_channels, args.layers, scan_cells=args.scan_cells)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(args.batch_size, mesh)
    shape = (args.image_size, args.image_size, 3)
    state = parallel.replicate(init_train_state(net, config, shape), mesh)
    n = args.batch_size * k * 2
    rng = np.random.default_rng(0)
    images, labels = parallel.replicate(
        (rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)), mesh
    )
    step = make_train_step(net, config, total_steps=10_000, steps_per_epoch=100, mesh=mesh)
    iteration = parallel.jit_data_parallel(scan_steps(step), mesh, {"idx": 1})
    inputs = [
        (images, labels, parallel.shard_batch(rng.permutation(n).reshape(2, k, -1)[i], mesh, leading=1))
        for i in range(2)
    ]
    compile_s, dispatch_s, _, metrics = time_compiled(iteration, state, inputs, args.warmup, args.steps)
    row = {
        "genotype": genotype, "scan_cells": args.scan_cells, "compute_dtype": jnp.dtype(compute_dtype(dtype)).name,
        "steps_per_dispatch": k,
        "batch_size": args.batch_size, "compile_s": round(compile_s, 2), "step_ms": round(1e3 * dispatch_s / k, 2),
        "images_per_s": round(args.batch_size * k / dispatch_s, 1),
        "loss_finite": bool(np.all(np.isfinite(np.asarray(metrics["loss"])))),
    }  # fmt: skip
    print(f"{genotype:11s} {row['compute_dtype']:9s} K={k:<3d} batch {args.batch_size:4d}  compile {compile_s:6.1f} s  "
          f"step {row['step_ms']:8.2f} ms  {row['images_per_s']:9.1f} img/s", flush=True)  # fmt: skip
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genotypes", nargs="+", default=["DARTS_V2", "NB201_BEST"], choices=list(PUBLISHED))
    parser.add_argument("--dtypes", nargs="+", default=["auto"], choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--dispatch", nargs="+", type=int, default=[1, 4], help="steps per dispatch (K) to time")
    parser.add_argument("--batch-size", type=int, default=recipe("fast").batch_size)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--init-channels", type=int, default=None, help="default: the evaluation network's")
    parser.add_argument("--layers", type=int, default=None, help="cells (darts) / cells per stage (nb201)")
    parser.add_argument("--scan-cells", action=argparse.BooleanOptionalAction, default=True,
                        help="repeated cells through one compiled body")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed dispatches; the median is reported")
    parser.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args()

    result = {"benchmark": "train_throughput", "recipe": "fast", **environment(), "init_channels": args.init_channels,
              "layers": args.layers, "image_size": args.image_size, "rows": []}  # fmt: skip
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for genotype in args.genotypes:
        for dtype in args.dtypes:
            for k in args.dispatch:
                result["rows"].append(benchmark(genotype, dtype, k, args))
                out.write_text(json.dumps(result, indent=2) + "\n")  # after every row: partial runs keep their numbers
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
