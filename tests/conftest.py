"""Shared fixtures: tiny configurations so that the suite compiles quickly on 2 CPU cores."""

from __future__ import annotations

import functools
import os
import pathlib

# Tiny programs: XLA's optimisations cost more compile time than they save run time, and its CPU fusion emitters
# compile slower than the older emitters (the suite is mostly compilation with an empty XLA cache; measured in
# CHANGELOG.md). Set in the environment, so that the CLI processes the tests start (resume, fault, multi-device
# and multi-host checks) compile likewise.
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"
FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


def _pin_worker() -> None:
    """Under ``pytest -n N``, worker ``gwK`` (and every process it starts) runs on core ``K`` alone when there are
    at least N cores: each JAX process sizes its thread pools to one core instead of all, and two workers' compiler
    threads no longer take turns on the same cores."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 0))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker.startswith("gw") and 1 < count <= len(cores):
        os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})


_pin_worker()


def cpu_devices_flags(devices: int) -> str:
    """``XLA_FLAGS`` for a process the tests start with ``devices`` CPU devices, compiling as the tests do."""
    return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_disable_most_optimizations", True)  # also where a plugin imported jax before the variable
jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/asose_jax_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

from asose_jax.search.step_config import SearchConfig  # noqa: E402
from asose_jax.search.steps import init_search_state, make_search_steps, supernet_from_config  # noqa: E402

IMAGE = 8
TINY = {
    "chain": {"init_channels": 4, "depth": 2},
    "darts": {"init_channels": 2, "depth": 3},
    "nb201": {"init_channels": 2, "depth": 1},
}


def tiny_config(space: str = "chain", **overrides) -> SearchConfig:
    return SearchConfig(space=space, **{**TINY[space], **overrides})


@functools.cache
def search_setup(space: str = "chain", **overrides):
    """(config, model, initial state, steps) for a tiny model; cached across tests."""
    config = tiny_config(space, **overrides)
    model = supernet_from_config(config)
    return config, model, init_search_state(model, config, (IMAGE, IMAGE, 3)), make_search_steps(model, config)


def float64(tree):
    """``tree`` with its float32 arrays in float64 (inside ``jax.enable_x64``), for checks against differences."""
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, tree)


def make_batch(seed: int, size: int = 4, num_classes: int = 10) -> dict:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "image": jax.random.normal(k1, (size, IMAGE, IMAGE, 3)),
        "label": jax.random.randint(k2, (size,), 0, num_classes),
    }


@pytest.fixture
def batch():
    return make_batch(0)


def write_tiny_npz(path: pathlib.Path, n_train: int = 48, n_test: int = 16, seed: int = 0) -> pathlib.Path:
    """Random uint8 ``IMAGE x IMAGE`` images and labels in the ``.npz`` layout the data source reads."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, IMAGE, IMAGE, 3), dtype=np.uint8)
    y_train = rng.integers(0, 10, n_train)
    x_test = rng.integers(0, 256, (n_test, IMAGE, IMAGE, 3), dtype=np.uint8)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=rng.integers(0, 10, n_test))
    return path


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory) -> pathlib.Path:
    """A tiny synthetic data set: 48 training and 16 test images."""
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


RUN_FILES = pathlib.Path(__file__).parent / "data" / "run_files.json"


def pytest_sessionstart(session) -> None:
    session.config.stash[_RUN_FILES_KEY] = RUN_FILES.read_bytes() if RUN_FILES.exists() else b""


def pytest_sessionfinish(session, exitstatus) -> None:
    """``UPDATE_RUN_FILES=1`` rewrites the committed run-file list (``run_files.py``); a session that changed it
    fails, so that a rewrite is reviewed and committed, never passed unnoticed."""
    before = session.config.stash.get(_RUN_FILES_KEY, None)
    if before is not None and RUN_FILES.exists() and RUN_FILES.read_bytes() != before:
        print(f"\nrewrote {RUN_FILES}: review and commit it, then rerun without UPDATE_RUN_FILES")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_RUN_FILES_KEY = pytest.StashKey[bytes]()


# The files that take longest (seconds of work, measured cold on 2 cores with --durations), started first: with
# ``--dist loadfile`` each file runs on one worker, and longest-first keeps the two workers' loads even.
LONGEST_FIRST = ("test_fault_points.py", "test_resume.py", "test_scanned_cells.py", "test_train_faults.py",
                 "test_multidevice.py", "test_selection.py", "test_steps.py", "test_growth.py", "test_multihost.py",
                 "test_search_quality.py", "test_notebook.py")  # fmt: skip


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
