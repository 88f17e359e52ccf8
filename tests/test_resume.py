"""Checkpoints and exact resume: SIGKILL at several points, SIGTERM, NaN stop and skip, determinism, bad workdirs.

Every run here is a separate process of ``experiments/cifar10_search.py`` (so it can be killed), on
48 synthetic 8x8 images: 2 cycles of 1/1/-/2 epochs of 3 steps, 24 steps, a checkpoint every 2.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import write_tiny_npz

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import cifar10_search  # noqa: E402

CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/asose_jax_xla_cache")


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory) -> pathlib.Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", seed=1)


def command(npz_path, workdir, *extra) -> list[str]:
    return [
        sys.executable, str(ROOT / "experiments" / "cifar10_search.py"), "--preset", "smoke",
        "--data", f"npz:{npz_path}", "--workdir", str(workdir), "--compilation-cache", CACHE,
        "--init-channels", "4", "--depth", "2", "--ops", "skip_connect,sep_conv_3x3,max_pool_3x3",
        "--batch-size", "8", "--cycles", "2", "--warmup-epochs", "1", "--retrain-epochs", "2",
        "--log-every", "1", "--checkpoint-every", "2", *extra,
    ]  # fmt: skip


def run(npz_path, workdir, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(command(npz_path, workdir, *extra), capture_output=True, text=True, timeout=600)


def run_until(npz_path, workdir, condition, signum: int) -> subprocess.CompletedProcess:
    """Starts a run and sends ``signum`` as soon as ``condition(workdir)`` holds."""
    process = subprocess.Popen(command(npz_path, workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and not condition(workdir):
        time.sleep(0.001)
    if process.poll() is None:
        process.send_signal(signum)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def metrics(workdir) -> list[dict]:
    """metrics.jsonl without the timing field."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("images_per_s", None)
    return records


def final_state(workdir) -> dict:
    """The state of the newest checkpoint, as NumPy arrays."""
    newest = max((p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return ocp.StandardCheckpointer().restore(newest / "state")


def assert_same_run(expected, actual) -> None:
    assert metrics(actual) == metrics(expected)
    assert (actual / "genotype.json").read_text() == (expected / "genotype.json").read_text()
    want, got = final_state(expected), final_state(actual)
    for name in want["arch"]:
        np.testing.assert_array_equal(got["arch"][name], want["arch"][name])
    assert int(got["step"]) == int(want["step"]) == 24
    summaries = [json.loads((d / "summary.json").read_text()) for d in (expected, actual)]
    for key in ("val_acc", "val_loss", "test_acc", "test_loss", "steps"):
        assert summaries[0][key] == summaries[1][key], key


@pytest.fixture(scope="module")
def reference_run(npz_path, tmp_path_factory) -> pathlib.Path:
    workdir = tmp_path_factory.mktemp("reference") / "run"
    result = run(npz_path, workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir


def _has(text: str):
    return lambda workdir: (workdir / "metrics.jsonl").exists() and text in (workdir / "metrics.jsonl").read_text()


def _saving(workdir) -> bool:
    """A checkpoint is being written (its temporary directory exists) and an earlier one is complete."""
    checkpoints = workdir / "checkpoints"
    names = [p.name for p in checkpoints.iterdir()] if checkpoints.is_dir() else []
    return any("tmp" in n for n in names) and any(n.isdigit() for n in names)


KILL_POINTS = {
    "mid-epoch": _has('"step": 4,'),  # inside the first architecture epoch
    "phase-boundary": _has('"event": "phase", "cycle": 1, "phase": "arch"'),
    "after-mutation": _has('"event": "mutation", "cycle": 2'),
    "during-checkpoint-write": _saving,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_resume_equals_the_uninterrupted_run(point, npz_path, reference_run, tmp_path):
    workdir = tmp_path / "run"
    killed = run_until(npz_path, workdir, KILL_POINTS[point], signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (workdir / "summary.json").exists()
    resumed = run(npz_path, workdir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((workdir / "summary.json").read_text())["resumed"] is True
    assert_same_run(reference_run, workdir)
    steps = [r["step"] for r in metrics(workdir) if r["event"] == "step"]
    assert steps == list(range(1, 25))  # nothing duplicated, nothing missing


def test_sigterm_saves_and_says_how_to_resume(npz_path, reference_run, tmp_path):
    workdir = tmp_path / "run"
    stopped = run_until(npz_path, workdir, _has('"step": 14,'), signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM at step") and f"--workdir {workdir} --resume" in last
    rerun = run(npz_path, workdir)  # the same command again continues the run, too
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_same_run(reference_run, workdir)


def test_two_runs_with_one_seed_are_bit_identical(npz_path, reference_run, tmp_path):
    again = run(npz_path, tmp_path / "run")
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_run(reference_run, tmp_path / "run")


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(npz_path, tmp_path):
    workdir = tmp_path / "run"
    failed = run(npz_path, workdir, "--weight-lr", "1e30", "--checkpoint-every", "1")
    assert failed.returncode == 2
    message = failed.stderr.strip().splitlines()[-1]  # after the progress lines
    assert message.startswith("error: non-finite loss at step 2 (cycle 1, warmup epoch 1)"), message
    state = final_state(workdir)
    assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(state["params"]))


def test_the_nan_advice_works_as_printed(npz_path, reference_run, tmp_path):
    """The stop says to rerun the same command with a lower learning rate: done literally (no checkpoint
    predates the blow-up here, so the rerun starts over), it finishes, and config.json records the change."""
    workdir = tmp_path / "run"
    failed = run(npz_path, workdir, "--weight-lr", "1e30", "--checkpoint-every", "0")
    message = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 2 and "rerun the same command with a lower --weight-lr" in message, message
    smoke_lr = str(cifar10_search.preset("smoke").search.weight_lr)
    rerun = run(npz_path, workdir, "--weight-lr", smoke_lr, "--checkpoint-every", "0")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["search"]["weight_lr"] == float(smoke_lr)
    assert config["changes"] == [{"step": 0, "setting": "search.weight_lr", "from": 1e30, "to": float(smoke_lr)}]
    assert metrics(workdir) == metrics(reference_run)  # started over: the run the lower rate gives


def test_nan_policy_skip_stops_a_run_that_skips_every_update(npz_path, tmp_path):
    workdir = tmp_path / "run"
    failed = run(npz_path, workdir, "--weight-lr", "1e30", "--nan-policy", "skip")
    assert failed.returncode == 2, failed.stderr[-2000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: --nan-policy skip dropped every update of the epoch"), message
    assert not (workdir / "summary.json").exists()
    epochs = [r for r in metrics(workdir) if r["event"] == "epoch"]
    assert sum(r.get("skipped_steps", 0) for r in epochs) > 0
    assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(final_state(workdir)["params"]))


def test_nan_policy_skip_stops_past_its_limit_and_counts_in_the_summary(npz_path, tmp_path):
    workdir = tmp_path / "run"
    failed = run(npz_path, workdir, "--weight-lr", "1e30", "--nan-policy", "skip", "--max-skipped-steps", "1")
    message = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 2 and "dropped 2 updates by step 3" in message, message
    assert "more than --max-skipped-steps 1" in message
    done = run(npz_path, tmp_path / "fine", "--nan-policy", "skip")
    assert done.returncode == 0 and json.loads((tmp_path / "fine" / "summary.json").read_text())["skipped_steps"] == 0


def test_a_second_process_on_a_live_run_directory_is_refused(npz_path, reference_run, tmp_path):
    workdir = tmp_path / "run"
    first = subprocess.Popen(command(npz_path, workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while first.poll() is None and not _has('"step": 2,')(workdir):
        time.sleep(0.01)
    second = run(npz_path, workdir)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
    assert lines[0].startswith(f"error: --workdir {workdir} is in use by process {first.pid} on "), lines[0]
    assert_same_run(reference_run, workdir)  # the first run's files are intact


def _leaves(tree):
    return [leaf for value in tree.values() for leaf in (_leaves(value) if isinstance(value, dict) else [value])]


@pytest.mark.parametrize(
    ("setup", "flags", "message"),
    [
        ("none", ["--resume"], "--resume: no run in --workdir"),
        ("dry-run", ["--resume"], "has no checkpoint yet"),
        (
            "dry-run",
            ["--batch-size", "4"],
            "holds an unfinished run made with --batch-size 8 (batch_size), but this run asks for 4",
        ),
        ("dry-run", ["--sampler", "gumbel_soft"], "holds an unfinished run made with --sampler 'softmax'"),
        ("foreign", [], "is not empty and holds no asose-jax run"),
        ("corrupt", [], "cannot read"),
        ("file", [], "is a file; choose a directory"),
        ("finished", [], "holds a finished run"),
    ],
)
def test_bad_workdirs_give_one_line_and_change_nothing(
    setup, flags, message, npz_path, reference_run, tmp_path, capsys
):
    workdir = tmp_path / "run"
    main = cifar10_search.main  # in-process: these fail before any training
    in_process = command(npz_path, workdir)[2:]
    if setup == "dry-run":
        assert main([*in_process, "--dry-run"]) == 0
    elif setup == "foreign":
        workdir.mkdir()
        (workdir / "notes.txt").write_text("not a run")
    elif setup == "corrupt":
        workdir.mkdir()
        (workdir / "config.json").write_text("{truncated")
    elif setup == "file":
        workdir.write_text("a file")
    elif setup == "finished":
        workdir = reference_run
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} if workdir.is_dir() else None
    capsys.readouterr()
    assert main([*command(npz_path, workdir)[2:], *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err  # before any progress line
    if before is not None:
        assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before


def test_a_checkpoint_keeps_the_progress_of_its_save_time(tmp_path, monkeypatch):
    """orbax serialises JSON in a background thread, and the driver goes on changing its progress dict:
    ``save`` must hand orbax a snapshot, so changes made after ``save`` never leak into the checkpoint."""
    from asose_jax.runtime.checkpointing import Checkpoints

    handed = []
    json_save = ocp.args.JsonSave
    monkeypatch.setattr(ocp.args, "JsonSave", lambda item: handed.append(item) or json_save(item))
    state = {"step": np.array(3, np.int32), "params": {"w": np.ones((64, 64), np.float32)}}
    progress = {"position": {"cycle": 1, "batch": 2}, "cycle_accuracies": [10.0]}
    checkpoints = Checkpoints(tmp_path, keep=2)
    checkpoints.save(1, state, progress)
    progress["position"]["batch"] = 99
    progress["cycle_accuracies"].append(50.0)
    assert handed == [{"position": {"cycle": 1, "batch": 2}, "cycle_accuracies": [10.0]}]
    checkpoints.close()
    restored_state, restored = Checkpoints(tmp_path, keep=2).restore(state)
    assert restored == handed[0]
    np.testing.assert_array_equal(restored_state["params"]["w"], state["params"]["w"])


@pytest.mark.parametrize(
    "space,flag,computed,expected",
    [
        ("nb201", None, None, None),  # a new run: the space's choice
        ("nb201", False, None, False),  # the flag, when given
        ("nb201", None, {"scanned_cells": False}, False),  # a run keeps the layout it saved
        ("darts", None, {"scanned_cells": True}, True),
        ("nb201", None, {}, False),  # saved before the layout was recorded: nb201 unrolled then,
        ("darts", None, {}, True),  # DARTS scanned
    ],
)
def test_a_resumed_run_builds_its_cells_in_the_layout_it_saved(space, flag, computed, expected):
    """Changing a space's default layout must not change the parameter tree a saved run restores into."""
    from asose_jax.search.driver import cell_layout
    from asose_jax.search.step_config import SearchConfig

    saved = None if computed is None else {"search": {"space": space, "scan_cells": None}, "computed": computed}
    assert cell_layout(SearchConfig(space=space, scan_cells=flag), saved) == expected
