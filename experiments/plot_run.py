"""Redraw the plots of a search run from its metrics.jsonl.

python experiments/plot_run.py runs/reference-chain-20261127-120000
"""

from __future__ import annotations

import argparse
import sys

from asose_jax.runtime.plots import plot_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw a run's PNG plots from its metrics.jsonl.")
    parser.add_argument("run_dir", help="the run directory of a search")
    args = parser.parse_args(argv)
    try:
        written = plot_run(args.run_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
