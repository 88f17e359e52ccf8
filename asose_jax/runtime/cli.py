"""What the command-line entry points share: one-line flag errors and the runtime flags."""

from __future__ import annotations

import argparse
import pathlib


class ArgumentParser(argparse.ArgumentParser):
    """Flag errors in one line (``error: ...``, exit status 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see --help\n")


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """``--distributed`` and ``--compilation-cache``."""
    parser.add_argument(
        "--distributed",
        default="auto",
        help="multi-host runs, jax.distributed.initialize(): auto (on TPU pod slices with several hosts), "
        "on (always; JAX finds the cluster on Cloud TPU, SLURM and Open MPI), off (default: %(default)s)",
    )
    parser.add_argument(
        "--compilation-cache",
        default=str(pathlib.Path.home() / ".cache/asose_jax/xla"),
        help="persistent XLA compilation cache, so reruns skip compiling ('' disables; default: %(default)s)",
    )


def setup_runtime(args: argparse.Namespace) -> None:
    """Starts the distributed runtime if asked (before anything touches a device) and the compilation cache."""
    import jax  # imported here, after the cheap flag checks

    from asose_jax.runtime import parallel

    parallel.initialize(args.distributed)
    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
