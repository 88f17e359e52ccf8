"""SIGKILL a small real-data search at random moments and check that it still ends as the uninterrupted run does.

One uninterrupted search, then the same search in a fresh directory killed with SIGKILL at ``--kills`` random
moments (each rerun of the same command is killed again after a random delay), then left to finish. The two
run directories must agree bit for bit apart from wall-clock fields: metrics, genotype, summary, and every
array of the final checkpoint. Prints a table and writes JSON. Example (CPU, 2,000 CIFAR-10 images):

    python benchmarks/random_kills.py --data npz:data/cifar10.npz --kills 20 \\
        --out benchmarks/results/random_kills_cpu.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from run_files import comparable  # noqa: E402

SEARCH = ["--preset", "smoke", "--train-limit", "2000", "--init-channels", "8", "--cycles", "3", "--batch-size", "32",
          "--grow-at", "1:depth,2:width,3:branch", "--checkpoint-every", "5", "--log-every", "5"]  # fmt: skip


def command(args, workdir: pathlib.Path) -> list[str]:
    return [sys.executable, str(ROOT / "experiments" / "cifar10_search.py"), *SEARCH, "--data", args.data,
            "--workdir", str(workdir), "--compilation-cache", args.compilation_cache]  # fmt: skip


def killed_after(args, workdir: pathlib.Path, delay: float) -> tuple[int | None, float]:
    """Runs the search and SIGKILLs it after ``delay`` seconds; ``(exit status, seconds)``, status None if killed."""
    start = time.perf_counter()
    process = subprocess.Popen(command(args, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = process.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.communicate()
        return None, time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"the search failed (exit {process.returncode}): {err.strip()[-2000:]}")
    return 0, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="npz:PATH of CIFAR-10 arrays (experiments/prepare_cifar10.py)")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--compilation-cache", default=str(pathlib.Path.home() / ".cache/asose_jax/xla"))
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        reference, interrupted = pathlib.Path(tmp) / "reference", pathlib.Path(tmp) / "interrupted"
        _, whole_s = killed_after(args, reference, 3600)
        kills, finished = [], False
        while not finished:
            # A random moment 3 to 20 s into each process (start-up, restore, compilation from the cache, training,
            # growth, checkpoints); after the last kill, the run is left to finish.
            delay = rng.uniform(3.0, 20.0) if len(kills) < args.kills else 3600
            status, seconds = killed_after(args, interrupted, delay)
            finished = status == 0
            if not finished:
                steps = sum('"event": "step"' in line for line in (interrupted / "metrics.jsonl").open()) \
                    if (interrupted / "metrics.jsonl").exists() else 0  # fmt: skip
                kills.append({"after_s": round(seconds, 2), "step_records_on_disk": steps})
                print(f"kill {len(kills):2d} after {seconds:6.1f} s ({steps} step records on disk)", flush=True)
        expected, actual = comparable(reference), comparable(interrupted)
        same = {key: expected[key] == actual[key] for key in expected}
    result = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "python": platform.python_version(),
        "command": " ".join(SEARCH),
        "uninterrupted_s": round(whole_s, 1),
        "kills": kills,
        "killed_before_it_finished": len(kills) == args.kills,
        "identical": same,
        "all_identical": all(same.values()) and len(kills) == args.kills,
    }
    print(f"\n{'part':<10} identical\n" + "\n".join(f"{k:<10} {v}" for k, v in same.items()))
    print(f"{len(kills)} kills; uninterrupted run {whole_s:.0f} s; all identical: {result['all_identical']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not result["all_identical"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
