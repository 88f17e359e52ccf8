"""Training from scratch: the step maths (scan, EMA, bfloat16) and ``experiments/cifar10_train.py`` end to end."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import IMAGE, write_tiny_npz
from run_files import check_against_committed, run_files

from asose_jax.runtime.checkpointing import Checkpoints
from asose_jax.runtime.metrics_log import read_metrics
from asose_jax.spaces.genotypes import PUBLISHED, ChainGenotype, genotype_to_json
from asose_jax.spaces.networks import build_network
from asose_jax.train.config import recipe
from asose_jax.train.steps import flops_per_image, init_train_state, make_train_step, scan_steps

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import cifar10_train  # noqa: E402

N_TRAIN, N_TEST = 40, 12
GENOTYPE = ChainGenotype(("sep_conv_3x3", "skip_connect"))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (N_TRAIN, IMAGE, IMAGE, 3), dtype=np.uint8))
    return images, jnp.asarray(rng.integers(0, 10, N_TRAIN), jnp.int32)


def _setup(**overrides):
    config = dataclasses.replace(recipe("fast"), init_channels=4, batch_size=8, epochs=2, **overrides)
    net = build_network(GENOTYPE, init_channels=4)
    return config, net, init_train_state(net, config, (IMAGE, IMAGE, 3))


def test_scan_of_k_steps_equals_k_single_steps(data):
    config, net, state = _setup()
    step = make_train_step(net, config, total_steps=10, steps_per_epoch=5)
    idx = jnp.arange(16).reshape(2, 8)
    scanned, metrics = jax.jit(scan_steps(step))(state, *data, idx)
    single = state
    for i in range(2):
        single, _ = jax.jit(step)(single, *data, idx[i])
    chex.assert_shape(metrics["loss"], (2,))
    chex.assert_trees_all_close(scanned, single, rtol=1e-5, atol=1e-6)
    assert int(scanned["step"]) == 2


def test_ema_follows_its_formula(data):
    config, net, state = _setup(ema_decay=0.99)
    new, _ = jax.jit(make_train_step(net, config, 10, 5))(jax.tree.map(jnp.copy, state), *data, jnp.arange(8))
    decay = min(0.99, 1 / 10)  # the ramp (1 + t) / (10 + t) at t = 0
    expected = jax.tree.map(lambda e, v: decay * e + (1 - decay) * v, state["ema"],
                            {"params": new["params"], "batch_stats": new["batch_stats"]})  # fmt: skip
    chex.assert_trees_all_close(new["ema"], expected, rtol=1e-6)


def test_bfloat16_compute_keeps_float32_state(data):
    config, net, state = _setup(compute_dtype="bfloat16")
    step = jax.jit(make_train_step(net, config, 10, 5))
    new, metrics = step(state, *data, jnp.arange(8))
    assert np.isfinite(float(metrics["loss"]))
    for leaf in jax.tree.leaves({k: new[k] for k in ("params", "batch_stats", "opt", "ema")}):
        assert leaf.dtype == jnp.float32
    assert not np.allclose(new["params"]["classifier"]["kernel"], state["params"]["classifier"]["kernel"])


def test_loss_decreases_on_a_fixed_batch(data):
    config, net, state = _setup(lr=0.05, warmup_epochs=0.0, label_smoothing=0.0, cutout=0)
    step = jax.jit(make_train_step(net, config, 200, 100))
    losses = []
    for _ in range(30):
        state, metrics = step(state, *data, jnp.arange(8))
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory) -> pathlib.Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", N_TRAIN, N_TEST)


def _args(genotype: str, npz_path, workdir, *extra) -> list[str]:
    return ["--genotype", genotype, "--data", f"npz:{npz_path}", "--workdir", str(workdir), "--compilation-cache", "",
            "--recipe", "fast", "--epochs", "2", "--batch-size", "8", "--init-channels", "4", "--log-every", "4",
            *extra]  # fmt: skip


def test_cli_end_to_end(tmp_path, npz_path):
    genotype_path = tmp_path / "search" / "genotype.json"
    genotype_path.parent.mkdir()
    genotype_path.write_text(json.dumps({"space": "chain", "ops": list(GENOTYPE.ops)}))
    workdir = tmp_path / "run"
    assert cifar10_train.main(_args(str(genotype_path), npz_path, workdir)) == 0
    assert {p.name for p in workdir.iterdir()} >= {"config.json", "genotype.json", "metrics.jsonl", "summary.json",
                                                   "curves.png"}  # fmt: skip
    assert (workdir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["genotype"] == genotype_to_json(GENOTYPE)  # the ungrown layout, spelled out
    assert summary["genotype"]["stages"] == [0, 1] and summary["genotype"]["widths"] == [1.0, 2.0]
    for key in ("test_acc", "test_acc_no_tta", "test_acc_raw_weights"):
        assert 0 <= summary[key] <= 100
    assert summary["params"] > 0 and summary["flops_per_image"] > 0 and summary["train_images_per_s"] > 0
    assert summary["evaluated_weights"] == "ema" and summary["compute_dtype"] == "float32"
    config = json.loads((workdir / "config.json").read_text())
    assert config["recipe"] == "fast" and config["batch_size"] == 8 and config["computed"]["init_channels"] == 4
    records = list(read_metrics(workdir / "metrics.jsonl"))
    epochs = [r for r in records if r["event"] == "epoch"]
    steps = [r for r in records if r["event"] == "step"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert steps and all(r["step"] % 4 == 0 for r in steps)  # every --log-every steps (K = 4 per dispatch)
    check_against_committed("train run", run_files(workdir))
    assert epochs[-1]["step"] == summary["steps"] == 2 * 8  # 40 // 8 = 5 steps, rounded up to 2 dispatches of 4
    assert cifar10_train.main(_args(str(genotype_path), npz_path, workdir)) == 2  # a finished run is kept
    assert json.loads((workdir / "summary.json").read_text()) == summary


def _stopped_after_epoch(monkeypatch, epoch: int, argv: list[str]) -> None:
    """Runs the training CLI with ``argv`` and stops it (KeyboardInterrupt) right after the checkpoint of the end
    of ``epoch``, as a kill there would."""
    save = Checkpoints.save

    def save_then_die(self, step, state, progress):
        save(self, step, state, progress)
        if (progress["epoch"], progress["dispatch"]) == (epoch + 1, 0):
            self.manager.wait_until_finished()
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        cifar10_train.main(argv)
    monkeypatch.undo()


def test_a_resumed_run_trains_its_own_genotype_when_the_file_changed(tmp_path, npz_path, monkeypatch, capsys):
    """A search rewrites its genotype.json every cycle: a training run continued after that trains the genotype it
    started with (its own copy in the run directory), says so, and ends as the uninterrupted run of that one."""
    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps({"space": "chain", "ops": list(GENOTYPE.ops)}))
    assert cifar10_train.main(_args(str(genotype), npz_path, tmp_path / "whole")) == 0
    _stopped_after_epoch(monkeypatch, 1, _args(str(genotype), npz_path, tmp_path / "killed"))
    genotype.write_text(json.dumps({"space": "chain", "ops": ["max_pool_3x3", "max_pool_3x3"]}))  # same shapes
    capsys.readouterr()
    assert cifar10_train.main(_args(str(genotype), npz_path, tmp_path / "killed")) == 0
    assert f"--genotype {genotype} changed since this run started" in capsys.readouterr().err
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("whole", "killed")]
    assert summaries[1]["genotype"]["ops"] == list(GENOTYPE.ops)
    assert summaries[1]["test_acc"] == summaries[0]["test_acc"]


def test_killed_run_continues_to_the_same_result(tmp_path, npz_path, monkeypatch):
    """A run killed after epoch 2's checkpoint, rerun with the same command, ends where an uninterrupted run ends."""
    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps({"space": "chain", "ops": list(GENOTYPE.ops)}))

    def args(workdir):
        return _args(str(genotype), npz_path, workdir, "--epochs", "3")

    assert cifar10_train.main(args(tmp_path / "whole")) == 0
    _stopped_after_epoch(monkeypatch, 2, args(tmp_path / "killed"))
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert cifar10_train.main(args(tmp_path / "killed")) == 0
    whole, resumed = ([r for r in read_metrics(tmp_path / name / "metrics.jsonl") if r["event"] == "epoch"]
                      for name in ("whole", "killed"))  # fmt: skip
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for a, b in zip(whole, resumed, strict=True):
        assert (a["train_loss"], a["test_acc"]) == (b["train_loss"], b["test_acc"])
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "killed")]
    assert summaries[0]["test_loss"] == summaries[1]["test_loss"]


def test_cli_refuses_to_continue_with_other_settings(tmp_path, npz_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"genotype": "NB201_BEST", "epochs": 5}))
    assert cifar10_train.main(_args("NB201_BEST", npz_path, tmp_path / "run")) == 2
    assert "holds an unfinished run made with" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--genotype", "NOT_A_CELL"], "neither a file nor a published genotype"),
        (["--recipe", "slow"], "unknown --recipe"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--drop-path", "1.5"], "--drop-path must lie in"),
        (["--batch-size", "64"], "larger than the 40 training images"),
        (["--data", "npz:/nonexistent.npz"], "no data file"),
        (["--lr", "abc"], "invalid float value"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, npz_path, capsys, extra, message):
    workdir = tmp_path / "run"
    try:
        code = cifar10_train.main(_args("NB201_BEST", npz_path, workdir, *extra))
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not workdir.exists()


def test_cli_refuses_a_used_workdir(tmp_path, npz_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    assert cifar10_train.main(_args("NB201_BEST", npz_path, tmp_path / "run")) == 2
    assert "holds no asose-jax run; choose a new --workdir" in capsys.readouterr().err
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_cli_subprocess_bad_genotype_has_no_traceback(tmp_path, npz_path):
    bad = tmp_path / "genotype.json"
    bad.write_text('{"space": "chain", "ops": ["conv_9x9"]}')
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "cifar10_train.py"),
                             *_args(str(bad), npz_path, tmp_path / "run")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: genotype file") and "Traceback" not in result.stderr


@pytest.mark.parametrize(("name", "depth"), [("DARTS_V2", 12), ("NB201_BEST", 2)])
def test_flops_of_scanned_cells_count_every_cell(name, depth):
    """XLA's cost analysis counts a loop body once; a network that scans its cells counts as its unrolled twin."""
    images = jax.ShapeDtypeStruct((1, IMAGE, IMAGE, 3), jnp.float32)
    counts, layouts = [], []
    for scan in (True, False):
        net = build_network(PUBLISHED[name], init_channels=4, depth=depth, scan_cells=scan)
        variables = jax.eval_shape(lambda x, net=net: net.init(jax.random.key(0), x, train=False), images)
        counts.append(flops_per_image(net, variables, (IMAGE, IMAGE, 3)))
        layouts.append(jax.tree_util.tree_structure(variables))
    assert layouts[0] != layouts[1]  # the first network does scan (DARTS: 12 cells, the fewest with a run)
    assert counts[0] == pytest.approx(counts[1], rel=0.02)
