"""Killed anywhere, resumed to the same run: a tiny search is killed (``ASOSE_FAULT``, exit 137 as SIGKILL) at
15 named points, in four chains (each resume is killed again at the next point), and ends bit-identical to the
uninterrupted run: metrics apart from wall-clock fields, genotype, the whole final state, summary apart from
times, and the checkpoints kept.

Each process is ``experiments/cifar10_search.py`` on 48 synthetic 8x8 images, epochs of 3 steps, a checkpoint
every 2 steps and at every phase boundary, the newest 3 kept. The ``growth`` run has 3 cycles of 1/1/-/1 epochs
with forced depth, width and branch growth; the ``early stop`` run has 3 cycles of 1/1/-/0 epochs without growth,
and its plateau rule (any gain under 100 points over 1 cycle) stops it after cycle 2; the ``selection`` run is two
NAS-Bench-201 cycles of 1/1/-/0 epochs, the first ending with progressive shrinking (killed there), and then
perturbation selection, killed inside it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

import jax.numpy as jnp
import pytest
from conftest import write_tiny_npz
from run_files import comparable

from asose_jax.runtime.checkpointing import Checkpoints, has_checkpoint
from asose_jax.runtime.faults import ENV, POINTS
from asose_jax.runtime.metrics_log import MetricsWriter

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/asose_jax_xla_cache")
RUNS = {
    "growth": ("--retrain-epochs", "1", "--grow-at", "1:depth,2:width,3:branch"),
    "early stop": ("--retrain-epochs", "0", "--growth", "off", "--plateau-window", "1", "--plateau-threshold", "100"),
    "selection": ("--space", "nb201", "--init-channels", "2", "--depth", "1", "--ops", "none,skip_connect,nor_conv_3x3",
                  "--cycles", "2", "--retrain-epochs", "0", "--growth", "off", "--selection", "perturbation",
                  "--selection-images", "16", "--selection-tune-steps", "2", "--shrink-ops", "1",
                  "--shrink-measure", "removal"),
}  # fmt: skip
CHAINS = {  # name: (run, kill points)
    "training": ("growth", ("step@3", "checkpoint_saved@1", "metrics_append@5", "epoch_end@2", "checkpoint_commit@2")),
    "growth and finish": ("growth", ("growth_inside@1", "growth_after@1", "growth_inside@2", "growth_after@1",
                                     "growth_inside@2", "final_plots", "final_summary")),
    "early stop": ("early stop", ("early_stop", "checkpoint_delete@1")),
    "selection": ("selection", ("shrink_after@1", "epoch_end@3", "step@3", "checkpoint_saved@2")),
}  # fmt: skip


def command(npz_path: pathlib.Path, workdir: pathlib.Path, kind: str) -> list[str]:
    return [
        sys.executable, str(ROOT / "experiments" / "cifar10_search.py"), "--preset", "smoke",
        "--data", f"npz:{npz_path}", "--workdir", str(workdir), "--compilation-cache", CACHE,
        "--init-channels", "4", "--depth", "2", "--ops", "skip_connect,sep_conv_3x3,max_pool_3x3",
        "--batch-size", "8", "--cycles", "3", "--warmup-epochs", "1", "--log-every", "1", "--checkpoint-every", "2",
        *RUNS[kind],
    ]  # fmt: skip


def run(npz_path, workdir, fault: str | None = None, kind: str = "growth") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV} | ({ENV: fault} if fault else {})
    return subprocess.run(command(npz_path, workdir, kind), capture_output=True, text=True, timeout=900, env=env)


def kept(workdir: pathlib.Path) -> list[str]:
    """The names in the run's checkpoint directory."""
    return sorted(p.name for p in (workdir / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory) -> pathlib.Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", seed=2)


@pytest.fixture(scope="module")
def uninterrupted(npz_path, tmp_path_factory) -> Callable[[str], pathlib.Path]:
    """The run directory of the uninterrupted run of a kind (run once, when first asked for)."""
    workdirs: dict[str, pathlib.Path] = {}

    def reference(kind: str) -> pathlib.Path:
        if kind not in workdirs:
            workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
            result = run(npz_path, workdir, kind=kind)
            assert result.returncode == 0, result.stderr[-2000:]
            workdirs[kind] = workdir
        return workdirs[kind]

    return reference


def test_every_fault_point_is_in_a_chain():
    assert {spec.split("@")[0] for _, chain in CHAINS.values() for spec in chain} == set(POINTS)
    assert sum(len(chain) for _, chain in CHAINS.values()) >= 15


@pytest.mark.parametrize("chain", list(CHAINS))
def test_killed_at_each_point_and_resumed_equals_the_uninterrupted_run(chain, npz_path, uninterrupted, tmp_path):
    kind, faults = CHAINS[chain]
    workdir = tmp_path / "run"
    for fault in faults:
        killed = run(npz_path, workdir, fault, kind)
        assert killed.returncode == 137, f"{fault}: the run was not killed there ({killed.stderr[-1500:]})"
        assert not (workdir / "summary.json").exists(), fault
        if fault.startswith("checkpoint_delete"):  # the oldest checkpoint half removed, the newest 3 kept
            steps = sorted(int(name) for name in kept(workdir) if name.isdigit())
            assert [(workdir / "checkpoints" / str(s) / "state").exists() for s in steps] == [False, True, True, True]
    resumed = run(npz_path, workdir, kind=kind)  # the same command continues the run
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((workdir / "summary.json").read_text())["resumed"] is True
    expected, actual = comparable(uninterrupted(kind)), comparable(workdir)
    assert actual["metrics"] == expected["metrics"]
    if kind == "growth":
        assert [r["kind"] for r in actual["metrics"] if r["event"] == "growth"] == ["depth", "width", "branch"]
    elif kind == "selection":
        assert [r["index"] for r in actual["metrics"] if r["event"] == "selection"] == [1, 2, 3, 4, 5, 6]
        assert [r["cycle"] for r in actual["metrics"] if r["event"] == "shrink"] == [1]
    else:
        assert [r["cycle"] for r in actual["metrics"] if r["event"] == "early_stop"] == [2]
        assert max(r.get("cycle", 0) for r in actual["metrics"]) == 2  # cycle 3 never ran
    assert actual == expected
    assert kept(workdir) == kept(uninterrupted(kind))  # the half-removed checkpoint was removed


def test_a_kill_before_the_commit_leaves_an_uncommitted_checkpoint_that_is_ignored(npz_path, tmp_path):
    workdir = tmp_path / "run"
    killed = run(npz_path, workdir, "checkpoint_commit@1")
    assert killed.returncode == 137
    names = [p.name for p in (workdir / "checkpoints").iterdir()]
    assert names == ["1.orbax-checkpoint-tmp"], names  # the first checkpoint written, never renamed into place
    assert not has_checkpoint(workdir)  # so the rerun starts over


def test_an_unknown_fault_point_is_refused(npz_path, tmp_path):
    failed = run(npz_path, tmp_path / "run", "nowhere@1")
    assert failed.returncode != 0 and f"{ENV}='nowhere@1'" in failed.stderr


def test_a_half_removed_old_checkpoint_is_never_restored_and_is_removed_at_close(tmp_path):
    """What a kill during orbax's removal of checkpoint 1 (after checkpoint 4 was committed, 3 kept) leaves: the
    newest is restored, and a session that saves nothing removes the half-removed one when it closes."""
    state = {"w": jnp.arange(3.0), "step": jnp.int32(0)}
    checkpoints = Checkpoints(tmp_path, keep=4)
    for step in range(1, 5):
        checkpoints.save(step, {**state, "step": jnp.int32(step)}, {"step": step})
    checkpoints.close()
    shutil.rmtree(tmp_path / "checkpoints" / "1" / "state")  # its state removed, the rest not yet
    checkpoints = Checkpoints(tmp_path, keep=3)
    restored, progress = checkpoints.restore(state)
    assert int(restored["step"]) == 4 and progress == {"step": 4}
    checkpoints.close()
    assert kept(tmp_path) == ["2", "3", "4"]


def test_a_metrics_file_shorter_than_the_checkpoint_records_is_refused_not_padded(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    writer.write({"event": "step", "step": 1})
    recorded = writer.tell()
    writer.close()
    path.write_bytes(path.read_bytes()[:-5])  # lost its end
    writer = MetricsWriter(path)
    message = (f"{path} is shorter than the checkpoint records ({recorded - 5} < {recorded} bytes); it was edited or "
               "damaged: restore it or choose a new --workdir")  # fmt: skip
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        writer.truncate(recorded)
    writer.close()
    assert path.stat().st_size == recorded - 5
