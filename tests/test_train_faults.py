"""The training CLI is preemptible: killed anywhere (``ASOSE_FAULT``, exit 137 as SIGKILL) or stopped by SIGTERM,
it continues to the run an uninterrupted process makes, bit for bit on CPU; non-finite losses are caught at every
step (stop or skip); ``--dry-run`` writes the network's size without training.

Every run is ``experiments/cifar10_train.py`` in its own process on 40 synthetic 8x8 images: the ``fast`` recipe
(4 steps per dispatch), 3 epochs of 8 steps, a checkpoint every 4 steps and at every epoch's end.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import write_tiny_npz
from run_files import comparable

from asose_jax.runtime.checkpointing import has_checkpoint
from asose_jax.runtime.faults import ENV

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/asose_jax_xla_cache")
KILLS = ("step@3", "checkpoint_commit@2", "metrics_append@4", "epoch_end@1", "checkpoint_saved@3", "final_plots",
         "final_summary")  # fmt: skip


def command(npz_path, workdir, *extra) -> list[str]:
    return [
        sys.executable, str(ROOT / "experiments" / "cifar10_train.py"), "--genotype", "NB201_BEST",
        "--data", f"npz:{npz_path}", "--workdir", str(workdir), "--compilation-cache", CACHE, "--recipe", "fast",
        "--epochs", "3", "--batch-size", "8", "--init-channels", "2", "--layers", "1", "--log-every", "4",
        "--checkpoint-every", "4", *extra,
    ]  # fmt: skip


def run(npz_path, workdir, *extra, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV} | ({ENV: fault} if fault else {})
    return subprocess.run(command(npz_path, workdir, *extra), capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory) -> pathlib.Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", 40, 12, seed=3)


@pytest.fixture(scope="module")
def uninterrupted(npz_path, tmp_path_factory) -> pathlib.Path:
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run(npz_path, workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir


def test_killed_at_each_point_and_rerun_equals_the_uninterrupted_run(npz_path, uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    for fault in KILLS:  # each rerun is killed again at the next point
        killed = run(npz_path, workdir, fault=fault)
        assert killed.returncode == 137, f"{fault}: the run was not killed there ({killed.stderr[-1500:]})"
        assert not (workdir / "summary.json").exists(), fault
    resumed = run(npz_path, workdir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert comparable(workdir) == comparable(uninterrupted)


def test_sigterm_saves_after_the_step_and_prints_the_resume_command(npz_path, uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    process = subprocess.Popen(command(npz_path, workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    while process.poll() is None and not (metrics.exists() and '"step": 12' in metrics.read_text()):
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM at step") and f"--workdir {workdir} --resume" in last, last
    assert "Traceback" not in err
    resumed = run(npz_path, workdir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert comparable(workdir) == comparable(uninterrupted)


def test_a_non_finite_loss_stops_at_its_step_before_any_checkpoint_holds_it(npz_path, tmp_path):
    failed = run(npz_path, tmp_path / "run", "--lr", "1e30", "--grad-clip", "0")
    assert failed.returncode == 2
    message = failed.stderr.strip().splitlines()[-1]
    assert re.match(
        r"error: non-finite (loss|grad_norm) at step \d+ \(epoch 1\); the last checkpoint is kept", message
    ), message
    assert "--nan-policy skip" in message
    assert not has_checkpoint(tmp_path / "run")  # the step was caught before the first save (after step 4)


def test_nan_policy_skip_stops_a_run_that_skips_every_update(npz_path, tmp_path):
    failed = run(npz_path, tmp_path / "run", "--lr", "1e30", "--grad-clip", "0", "--nan-policy", "skip")
    message = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 2 and message.startswith("error: --nan-policy skip dropped every update"), message
    assert not (tmp_path / "run" / "summary.json").exists()


def test_nan_policy_skip_stops_past_its_limit(npz_path, tmp_path):
    flags = ("--lr", "1e30", "--grad-clip", "0", "--nan-policy", "skip", "--max-skipped-steps", "2")
    failed = run(npz_path, tmp_path / "run", *flags)
    message = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 2 and "dropped 3 updates" in message and "--max-skipped-steps 2" in message, message


def test_the_nan_advice_works_as_printed(npz_path, uninterrupted, tmp_path):
    """Rerunning the same command with a lower --lr, as the stop says, continues (here: starts over, no checkpoint
    predates the blow-up) and finishes as a run with that rate; config.json records the change."""
    workdir = tmp_path / "run"
    failed = run(npz_path, workdir, "--lr", "1e30")
    message = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 2 and "rerun the same command with a lower --lr" in message, message
    fast_lr = str(json.loads((uninterrupted / "config.json").read_text())["lr"])
    rerun = run(npz_path, workdir, "--lr", fast_lr)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads((workdir / "config.json").read_text())["changes"][0]["to"] == float(fast_lr)
    assert comparable(workdir)["metrics"] == comparable(uninterrupted)["metrics"]


def test_dry_run_writes_the_network_size_and_trains_nothing(tmp_path):
    workdir, npz_path = tmp_path / "run", tmp_path / "cifar_sized.npz"  # the auxiliary head needs 32x32 images
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 16)
    np.savez(npz_path, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])
    done = run(npz_path, workdir, "--dry-run", "--genotype", "DARTS_V2", "--layers", "3", "--recipe", "standard")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["params"] > 0 and summary["params_auxiliary"] > 0
    assert summary["flops_per_image"] > 0 and not (workdir / "metrics.jsonl").exists()
    assert json.loads((workdir / "config.json").read_text())["computed"]["auxiliary"] is True
