"""The ``smoke`` search at its real size on 8 CPU devices (``--xla_force_host_platform_device_count=8``), with its
own sampler (softmax) and with the single-path hard Gumbel, whose ``lax.switch`` used to deadlock XLA's CPU
collectives there (see ``asose_jax.nn.mixed_op.branches_may_deadlock``). Each search runs in its own process;
the table shows exit status, wall time, stuck-rendezvous warnings and the final accuracies. Writes JSON:

    python benchmarks/cpu_devices_smoke.py --data npz:data/cifar10.npz --out benchmarks/results/cpu_devices_smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
VARIANTS = {
    "softmax (the preset)": [],
    "gumbel_hard (single path)": ["--sampler", "gumbel_hard", "--arch-regularizer", "none", "--arch-reg-weight", "0"],
}


def run(data: str, devices: int, extra: list[str], workdir: pathlib.Path) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    flags = ["--preset", "smoke", "--train-limit", "2000", "--data", data, *extra]
    command = [sys.executable, str(ROOT / "experiments" / "cifar10_search.py"), *flags, "--workdir", str(workdir),
               "--compilation-cache", ""]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)  # fmt: skip
    summary = json.loads((workdir / "summary.json").read_text()) if done.returncode == 0 else {}
    return {
        "flags": " ".join(flags),
        "exit_status": done.returncode,
        "wall_s": round(time.perf_counter() - start, 1),
        "stuck_rendezvous_warnings": done.stderr.count("may be stuck"),
        "val_acc": summary.get("val_acc"),
        "test_acc": summary.get("test_acc"),
        "device": summary.get("device"),
        "error": done.stderr.strip().splitlines()[-1] if done.returncode else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="npz:PATH of CIFAR-10 arrays (experiments/prepare_cifar10.py)")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(VARIANTS.items()):
            rows[name] = run(args.data, args.devices, extra, pathlib.Path(tmp) / str(i))
            r = rows[name]
            stuck = r["stuck_rendezvous_warnings"]
            print(f"{name:<28} exit {r['exit_status']:>3}  {r['wall_s']:>7.1f} s  stuck {stuck}  "
                  f"val {r['val_acc']}  test {r['test_acc']}", flush=True)  # fmt: skip
    result = {"machine": f"{platform.node()}, {os.cpu_count()} cores", "python": platform.python_version(),
              "devices": args.devices, "runs": rows}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if any(r["exit_status"] for r in rows.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
