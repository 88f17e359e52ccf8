"""Where a search step spends its time: XLA's per-thunk trace, grouped by kind and by candidate op.

Runs one search step under ``jax.profiler.trace``, reads the thunk events of the Perfetto trace (each names
the HLO instruction it ran) and maps every instruction to

* its **kind**: convolution, matmul (dot), an elementwise/reduction fusion, copy/transpose (layout), or other
  (a loop's body instructions are events of their own and counted there; ``loop_ms`` is the loops' total);
* the **op** whose code produced it, read from the instruction's metadata (the Flax module path: ``sep_conv_3x3``,
  ``conv_7x1_1x7``, ``final_conv``, ...); "mixture" is the weighted sum of a mixed op's candidates.

Prints both tables and writes JSON. Example (the chain ``gumbel_soft`` steps at batch 64, this CPU):

    python benchmarks/profile_step.py --out benchmarks/results/profile_chain_cpu.json
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asose_jax.nn.operations import OPS  # noqa: E402
from asose_jax.search.step_config import SearchConfig  # noqa: E402
from asose_jax.search.steps import init_search_state, make_search_steps, supernet_from_config  # noqa: E402
from benchmarks.timing import environment  # noqa: E402

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (?:\(.*?\)|\S+) ([a-z][\w\-]*)\((.*)$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_MODULE_PARTS = ("final_conv", "final_bn", "preprocess_conv", "preprocess_bn", "stem_conv", "stem_bn", "classifier")


def instruction_table(hlo_text: str) -> dict[str, tuple[str, str]]:
    """``{instruction name: (opcode, metadata op_name)}``. A fusion counts as a convolution, matmul or copy by what
    it holds; without an op_name of its own it takes that of its last instruction that has one."""
    table, computations, current = {}, {}, None
    for line in hlo_text.splitlines():
        if line and not line.startswith(" ") and "{" in line:
            current = line.split()[0].lstrip("%")
            if current == "ENTRY":
                current = line.split()[1].lstrip("%")
            computations[current] = []
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, opcode, rest = match.groups()
        op_name = _OP_NAME.search(rest)
        calls = _CALLS.search(rest)
        table[name] = (opcode, op_name.group(1) if op_name else "", calls)
        if current:
            computations[current].append(name)
    resolved = {}
    for name, (opcode, op_name, calls) in table.items():
        inner = computations.get(calls.group(1), []) if calls else []
        inner_opcodes = {table[i][0] for i in inner}
        if opcode == "fusion":
            if "convolution" in inner_opcodes:
                opcode = "convolution"
            elif "dot" in inner_opcodes:
                opcode = "dot"
            elif inner_opcodes <= {"copy", "transpose", "parameter", "bitcast", "reshape", "slice", "pad"}:
                opcode = "copy"
        if not op_name and inner:
            op_name = next((table[i][1] for i in reversed(inner) if table[i][1]), "")
        resolved[name] = (opcode, op_name)
    return resolved


def kind_of(opcode: str) -> str:
    """The table row of an (already fusion-resolved) opcode."""
    if opcode == "convolution":
        return "convolution"
    if opcode == "dot":
        return "matmul"
    if opcode in ("copy", "transpose", "bitcast", "reshape", "copy-start", "copy-done"):
        return "copy/transpose"
    if opcode in ("fusion", "reduce", "add", "multiply", "select", "broadcast"):
        return "elementwise/reduce"
    return "other"


def op_of(op_name: str) -> str:
    """The candidate op or network part an instruction belongs to, from its Flax module path."""
    parts = op_name.split("/")
    for part in reversed(parts):
        if part in OPS or part in _MODULE_PARTS:
            return part
    if any(p.startswith("MixedOp") or p in ("mixed_op",) or p.startswith("branch_") for p in parts):
        return "mixture"
    return "other"


def thunk_times(trace_dir: pathlib.Path, module: str) -> dict[str, float]:
    """Microseconds per HLO instruction of ``module``, summed over the trace's thunk events."""
    (path,) = trace_dir.glob("**/perfetto_trace.json.gz")
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    times = collections.Counter()
    for event in events:
        args = event.get("args", {})
        if event.get("ph") == "X" and args.get("hlo_module", "").startswith(module) and "hlo_op" in args:
            times[args["hlo_op"]] += event.get("dur", 0.0)
    return times


def profile(fn, state, batch, steps: int, name: str) -> dict:
    compiled = jax.jit(fn).lower(state, batch).compile()
    table = instruction_table(compiled.as_text())
    for _ in range(2):
        state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(steps):
                state, out = compiled(state, batch)
                jax.block_until_ready((state, out))
        times = thunk_times(pathlib.Path(tmp), f"jit_{name}")
    by_kind, by_op, whiles, top = collections.Counter(), collections.Counter(), 0.0, []
    for hlo_op, micros in times.most_common():
        opcode, op_name = table.get(hlo_op, ("other", ""))
        if len(top) < 15:
            top.append({"hlo": hlo_op, "opcode": opcode, "op": op_name[-120:], "ms": round(micros / steps / 1e3, 1)})
        if opcode == "while":  # its body's thunks are events of their own
            whiles += micros
            continue
        by_kind[kind_of(opcode)] += micros / steps / 1e3
        by_op[op_of(op_name)] += micros / steps / 1e3
    return {
        "thunk_ms": round(sum(by_kind.values()), 1),
        "loop_ms": round(whiles / steps / 1e3, 1),
        "by_kind_ms": {k: round(v, 1) for k, v in by_kind.most_common()},
        "by_op_ms": {k: round(v, 1) for k, v in by_op.most_common()},
        "slowest_instructions": top,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="chain")
    parser.add_argument("--sampler", default="gumbel_soft")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--init-channels", type=int, default=None, help="default: the space's own")
    parser.add_argument("--depth", type=int, default=None, help="blocks / cells / cells per stage")
    parser.add_argument("--scan-cells", action=argparse.BooleanOptionalAction, default=None,
                        help="scanned cells or edges (default: the space's choice)")  # fmt: skip
    parser.add_argument("--step-fns", nargs="+", default=["weight_step", "arch_step"],
                        choices=["weight_step", "arch_step"])  # fmt: skip
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/profile_step.json")
    args = parser.parse_args()

    config = SearchConfig(
        space=args.space,
        sampler=args.sampler,
        init_channels=args.init_channels,
        depth=args.depth,
        scan_cells=args.scan_cells,
    )
    model = supernet_from_config(config)
    state = init_search_state(model, config, (args.image_size, args.image_size, 3))
    steps = make_search_steps(model, config)
    key_image, key_label = jax.random.split(jax.random.key(0))
    batch = {
        "image": jax.random.normal(key_image, (args.batch_size, args.image_size, args.image_size, 3)),
        "label": jax.random.randint(key_label, (args.batch_size,), 0, 10),
    }
    result = {"benchmark": "profile_step", **environment(), **vars(args), "steps_profiled": {}}
    for name in args.step_fns:
        fn = getattr(steps, name)
        row = profile(fn, state, batch, args.steps, name)
        result["steps_profiled"][name] = row
        print(f"\n{name}: {row['thunk_ms']} ms in thunks per step")
        for table in ("by_kind_ms", "by_op_ms"):
            for key, ms in row[table].items():
                print(f"  {key:24s} {ms:8.1f} ms  {100 * ms / row['thunk_ms']:5.1f}%")
            print()
        for item in row["slowest_instructions"]:
            print(f"  {item['ms']:8.1f} ms  {item['hlo']:28s} {item['opcode']:12s} {item['op']}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
