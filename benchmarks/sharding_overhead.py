"""The search iterations with and without the data-parallel wrapper, over 1, 2, 4, 8... devices.

For each device count a fresh process (on CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``)
runs the search CLI's weight and architecture iterations (gather, augmentation, step) on the same
global batches twice: plain ``jax.jit`` on one device, and jit with ``NamedSharding`` over all N
devices. It reports the median step time of each and the largest difference of the losses from the
one-device run. Fake CPU devices share the host's cores: this shows correctness and overhead, not
speed-up. Prints a table and writes JSON. Examples:

    python benchmarks/sharding_overhead.py --device-counts 1 2 4 8 --out benchmarks/results/sharding_cpu.json
    python benchmarks/sharding_overhead.py --device-counts 1 --batch-size 256 --init-channels 32 \\
        --out benchmarks/results/sharding_gpu.json          # one GPU: the wrapper's cost
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(args) -> dict:
    """Runs in the process with the devices; returns timings and losses of both variants."""
    import jax

    from asose_jax.runtime import parallel
    from asose_jax.search.iterations import make_iterations
    from asose_jax.search.run_config import RunConfig
    from asose_jax.search.step_config import SearchConfig
    from asose_jax.search.steps import init_search_state, supernet_from_config
    from benchmarks.timing import environment, time_compiled

    config = RunConfig(search=SearchConfig(space=args.space, sampler=args.sampler, init_channels=args.init_channels,
                                           depth=args.depth), batch_size=args.batch_size)  # fmt: skip
    model = supernet_from_config(config.search)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(args.batch_size, mesh)
    rng = np.random.default_rng(0)
    n = 4 * args.batch_size
    data = (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32))
    batches = [rng.permutation(n)[: 2 * args.batch_size].reshape(2, -1) for _ in range(4)]
    result = {**environment(), "rows": []}
    for variant, variant_mesh in (("plain jit, 1 device", None), (f"sharded, {mesh.devices.size} devices", mesh)):
        place = jax.device_put if variant_mesh is None else (lambda x: parallel.shard_batch(x, mesh))
        images, labels = jax.device_put(data) if variant_mesh is None else parallel.replicate(data, mesh)
        state = init_search_state(model, config.search, (32, 32, 3))
        state = state if variant_mesh is None else parallel.replicate(state, mesh)
        iterations = make_iterations(model, config, variant_mesh)
        weight_inputs = [(images, labels, place(b[0]), np.bool_(False)) for b in batches]
        arch_inputs = [(images, labels, place(b[0]), place(b[1])) for b in batches]
        row = {"variant": variant}
        for name, fn, inputs, loss in (("weights", iterations.weight_step, weight_inputs, "loss"),
                                       ("arch", iterations.arch_step, arch_inputs, "arch_loss")):  # fmt: skip
            # Same start, same batches: the losses of the first steps must agree across variants and counts.
            losses, s = [], jax.tree.map(lambda x: x.copy(), state)
            for i in range(args.check_steps):
                s, m = fn(s, *inputs[i % len(inputs)])
                losses.append(float(m[loss]))
            compile_s, step_s, _, _ = time_compiled(fn, s, inputs, args.warmup, args.steps)
            row[name] = {"losses": losses, "step_ms": round(1e3 * step_s, 3),
                         "images_per_s": round(args.batch_size / step_s, 1)}  # fmt: skip
        result["rows"].append(row)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device-counts", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--space", default="chain")
    parser.add_argument("--sampler", default="gumbel_soft")
    parser.add_argument("--init-channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--check-steps", type=int, default=3, help="steps whose losses are compared")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps; the median is reported")
    parser.add_argument("--out", default="benchmarks/results/sharding_overhead.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    settings = {k: getattr(args, k) for k in ("space", "sampler", "init_channels", "depth", "batch_size")}
    result = {"benchmark": "sharding_overhead", **settings, "runs": []}
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    forwarded += [f"--check-steps={args.check_steps}", f"--warmup={args.warmup}", f"--steps={args.steps}"]
    reference = None
    print(f"{'devices':>7s}  {'variant':24s} {'weights ms':>10s} {'arch ms':>9s} {'img/s':>8s}  max |loss diff|")
    for count in args.device_counts:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}
        out = subprocess.run([sys.executable, __file__, "--worker", *forwarded], env=env, capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        run = json.loads(out.strip().splitlines()[-1])
        for row in run["rows"]:
            losses = np.array(row["weights"]["losses"] + row["arch"]["losses"])
            reference = losses if reference is None else reference
            row["max_abs_loss_difference"] = float(np.max(np.abs(losses - reference)))
            print(f"{run['device_count']:7d}  {row['variant']:24s} {row['weights']['step_ms']:10.2f} "
                  f"{row['arch']['step_ms']:9.2f} {row['weights']['images_per_s']:8.1f}  "
                  f"{row['max_abs_loss_difference']:.2e}", flush=True)  # fmt: skip
        result["runs"].append(run)
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
