"""Killed anywhere, resumed to the same run: a tiny search with forced depth, width and branch growth is killed
(``ASOSE_FAULT``, exit 137 as SIGKILL) at 12 named points, in two chains (each resume is killed again at the
next point), and ends bit-identical to the uninterrupted run: metrics apart from wall-clock fields, genotype,
the whole final state and summary apart from times.

Each process is ``experiments/cifar10_search.py`` on 48 synthetic 8x8 images: 3 cycles of 1/1/-/1 epochs of
3 steps, growth at every mutation phase, a checkpoint every 2 steps and at every phase boundary.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import write_tiny_npz
from run_files import comparable

from asose_jax.runtime.checkpointing import has_checkpoint
from asose_jax.runtime.faults import ENV, POINTS

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/asose_jax_xla_cache")
CHAINS = {
    "training": ("step@3", "checkpoint_saved@1", "metrics_append@5", "epoch_end@2", "checkpoint_commit@2"),
    "growth and finish": ("growth_inside@1", "growth_after@1", "growth_inside@2", "growth_after@1", "growth_inside@2",
                          "final_plots", "final_summary"),
}  # fmt: skip


def command(npz_path: pathlib.Path, workdir: pathlib.Path) -> list[str]:
    return [
        sys.executable, str(ROOT / "experiments" / "cifar10_search.py"), "--preset", "smoke",
        "--data", f"npz:{npz_path}", "--workdir", str(workdir), "--compilation-cache", CACHE,
        "--init-channels", "4", "--depth", "2", "--ops", "skip_connect,sep_conv_3x3,max_pool_3x3",
        "--batch-size", "8", "--cycles", "3", "--warmup-epochs", "1", "--retrain-epochs", "1",
        "--grow-at", "1:depth,2:width,3:branch", "--log-every", "1", "--checkpoint-every", "2",
    ]  # fmt: skip


def run(npz_path, workdir, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV} | ({ENV: fault} if fault else {})
    return subprocess.run(command(npz_path, workdir), capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory) -> pathlib.Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", seed=2)


@pytest.fixture(scope="module")
def uninterrupted(npz_path, tmp_path_factory) -> pathlib.Path:
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run(npz_path, workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir


def test_every_fault_point_is_in_a_chain():
    assert {spec.split("@")[0] for chain in CHAINS.values() for spec in chain} == set(POINTS)
    assert sum(len(chain) for chain in CHAINS.values()) >= 12


@pytest.mark.parametrize("chain", list(CHAINS))
def test_killed_at_each_point_and_resumed_equals_the_uninterrupted_run(chain, npz_path, uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    for fault in CHAINS[chain]:
        killed = run(npz_path, workdir, fault)
        assert killed.returncode == 137, f"{fault}: the run was not killed there ({killed.stderr[-1500:]})"
        assert not (workdir / "summary.json").exists(), fault
    resumed = run(npz_path, workdir)  # the same command continues the run
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((workdir / "summary.json").read_text())["resumed"] is True
    expected, actual = comparable(uninterrupted), comparable(workdir)
    assert actual["metrics"] == expected["metrics"]
    assert [r["kind"] for r in actual["metrics"] if r["event"] == "growth"] == ["depth", "width", "branch"]
    assert actual == expected


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
