"""Images/s and compile time of ``weight_step`` and ``arch_step`` per search space and sampler.

Prints a table and writes JSON. Example (CPU, the chain space only):

    python benchmarks/step_throughput.py --spaces chain --out benchmarks/results/step_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asose_jax.search.sampling import SAMPLERS  # noqa: E402
from asose_jax.search.step_config import SearchConfig  # noqa: E402
from asose_jax.search.steps import init_search_state, make_search_steps, supernet_from_config  # noqa: E402
from asose_jax.spaces import SPACES  # noqa: E402
from benchmarks.timing import environment, time_compiled  # noqa: E402


def benchmark(space: str, sampler: str, args) -> list[dict]:
    config = SearchConfig(
        space=space, sampler=sampler, init_channels=args.init_channels, depth=args.depth, scan_cells=args.scan_cells
    )
    model = supernet_from_config(config)
    state = init_search_state(model, config, (args.image_size, args.image_size, 3))
    steps = make_search_steps(model, config)
    keys = jax.random.split(jax.random.key(0), 4)
    batches = [
        (
            {
                "image": jax.random.normal(k, (args.batch_size, args.image_size, args.image_size, 3)),
                "label": jax.random.randint(k, (args.batch_size,), 0, 10),
            },
        )
        for k in keys
    ]
    rows = []
    for name, fn in (("weight_step", steps.weight_step), ("arch_step", steps.arch_step)):
        compile_s, step_s, _, _ = time_compiled(jax.jit(fn), state, batches, args.warmup, args.steps)
        rows.append(
            {
                "space": space,
                "sampler": sampler,
                "step": name,
                "scan_cells": args.scan_cells,
                "batch_size": args.batch_size,
                "compile_s": round(compile_s, 2),
                "step_s": round(step_s, 4),
                "images_per_s": round(args.batch_size / step_s, 1),
            }
        )
        print(
            f"{space:6s} {sampler:12s} {name:12s} compile {compile_s:7.1f} s   "
            f"step {step_s * 1e3:8.1f} ms   {args.batch_size / step_s:8.1f} img/s",
            flush=True,
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--init-channels", type=int, default=None, help="default: the space's own")
    parser.add_argument("--depth", type=int, default=None, help="blocks / cells / cells per stage")
    parser.add_argument("--scan-cells", action=argparse.BooleanOptionalAction, default=None,
                        help="scanned cells or edges (default: the space's choice)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps; the median is reported")
    parser.add_argument("--out", default="benchmarks/results/step_throughput.json")
    args = parser.parse_args()

    result = {
        "benchmark": "step_throughput",
        **environment(),
        "init_channels": args.init_channels,
        "depth": args.depth,
        "image_size": args.image_size,
        "rows": [],
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for space in args.spaces:
        for sampler in args.samplers:
            result["rows"] += benchmark(space, sampler, args)
            out.write_text(json.dumps(result, indent=2) + "\n")  # after every row: partial runs keep their numbers
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
