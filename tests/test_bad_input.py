"""Bad input through both command-line entry points: every case ends with one line on stderr that starts with
``error:`` and names the fix, exit status 2, no traceback, and the workdir exactly as it was (nothing
half-written). docs/errors.md ("Bad input") lists these cases.

Most cases run ``main()`` in this process (they fail before any training); the case that needs 8 devices runs
in its own process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import IMAGE, cpu_devices_flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import cifar10_search  # noqa: E402
import cifar10_train  # noqa: E402

from asose_jax.runtime import memory  # noqa: E402
from asose_jax.runtime.input_pipeline import ImageArrays  # noqa: E402
from asose_jax.search.run_config import PRESETS  # noqa: E402
from asose_jax.train.config import TrainConfig  # noqa: E402

N_TRAIN, N_TEST = 48, 16


def arrays(**changes) -> dict:
    rng = np.random.default_rng(0)
    data = {
        "x_train": rng.integers(0, 256, (N_TRAIN, IMAGE, IMAGE, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 10, N_TRAIN),
        "x_test": rng.integers(0, 256, (N_TEST, IMAGE, IMAGE, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 10, N_TEST),
    }
    return {k: v for k, v in {**data, **changes}.items() if v is not None}


def npz(path: pathlib.Path, **changes) -> pathlib.Path:
    np.savez(path, **arrays(**changes))
    return path


def truncated(path: pathlib.Path) -> pathlib.Path:
    good = npz(path)
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


def corrupt(path: pathlib.Path) -> pathlib.Path:
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    return path


def data_flag(make) -> callable:
    return lambda tmp: ["--data", f"npz:{make(tmp / 'data.npz')}"]


def file_flag(flag: str, text: str, name: str = "file.json") -> callable:
    def setup(tmp):
        (tmp / name).write_text(text)
        return [flag, str(tmp / name)]

    return setup


def workdir_setup(kind: str, config: dict | None = None) -> callable:
    def setup(tmp):
        workdir = tmp / "run"
        if kind == "file":
            workdir.write_text("a file")
        elif kind == "under-a-file":
            (tmp / "plain").write_text("a file")
            return ["--workdir", str(tmp / "plain" / "run")]
        elif kind == "foreign":
            workdir.mkdir()
            (workdir / "notes.txt").write_text("not a run")
        elif kind == "finished":
            workdir.mkdir()
            (workdir / "config.json").write_text(json.dumps(config))
            (workdir / "summary.json").write_text(json.dumps({"val_acc": 50.0}))
        return []

    return setup


def flags(*given) -> callable:
    return lambda tmp: list(given)


# (cli, setup, message): setup(tmp_path) makes files and returns flags, applied over a valid tiny command.
SEARCH_CASES = {
    "truncated npz": (data_flag(truncated), "is not a readable .npz file"),
    "corrupt npz": (data_flag(corrupt), "is not a readable .npz file"),
    "npz without y_test": (data_flag(lambda p: npz(p, y_test=None)), "lacks the arrays ['y_test']"),
    "float images": (data_flag(lambda p: npz(p, x_train=np.zeros((N_TRAIN, 8, 8, 3), np.float32))), "must be uint8"),
    "grey images": (data_flag(lambda p: npz(p, x_train=np.zeros((N_TRAIN, 8, 8), np.uint8))), "[N, H, W, 3]"),
    "label 10": (data_flag(lambda p: npz(p, y_train=np.full(N_TRAIN, 10))), "labels must lie in [0, 10)"),
    "negative label": (data_flag(lambda p: npz(p, y_test=np.full(N_TEST, -1))), "labels must lie in [0, 10)"),
    "fewer labels": (data_flag(lambda p: npz(p, y_train=np.zeros(N_TRAIN - 1, int))), "but y_train has 47 labels"),
    "empty test split": (
        data_flag(lambda p: npz(p, x_test=np.zeros((0, 8, 8, 3), np.uint8), y_test=np.zeros(0, int))),
        "the test split is empty",
    ),
    "missing npz": (flags("--data", "npz:/no/such.npz"), "no data file at /no/such.npz"),
    "train limit above the data": (flags("--train-limit", "1000"), "--train-limit 1000 is larger than the 48"),
    "batch not a number": (flags("--batch-size", "many"), "argument --batch-size: invalid int value"),
    "negative cycles": (flags("--cycles", "-1"), "--cycles must be a positive integer"),
    "arch split out of range": (flags("--arch-split", "1"), "--arch-split must lie strictly between 0 and 1"),
    "temperature with softmax": (flags("--sampler", "softmax", "--tau-max", "2"), "--tau-max has no effect"),
    "regulariser weight without one": (
        flags("--arch-regularizer", "none", "--arch-reg-weight", "3"),
        "--arch-reg-weight has no effect with --arch-regularizer none",
    ),
    "unknown data source": (flags("--data", "csv:train.csv"), "unknown --data 'csv:train.csv'"),
    "unknown preset": (flags("--preset", "huge"), "unknown preset 'huge'"),
    "unknown op": (flags("--ops", "conv_9x9"), "unknown op name(s) ['conv_9x9']"),
    "unknown sampler": (flags("--sampler", "gumbel"), "unknown sampler 'gumbel'"),
    "malformed grow-at": (flags("--grow-at", "2:deeper"), "'2:deeper' is not CYCLE:KIND"),
    "forced growth with growth off": (flags("--grow-at", "2:depth", "--growth", "off"), "--growth is off"),
    "unknown space": (flags("--space", "resnet"), "unknown search space 'resnet'"),
    "seed of 2^63": (flags("--seed", "9223372036854775808"), "--seed must be an integer in [0, 4294967295]"),
    "absurd channels": (flags("--init-channels", "100000"), "--init-channels must lie in [1, 4096], got 100000"),
    "absurd depth": (flags("--depth", "100000000"), "--depth must lie in [1, 100], got 100000000"),
    "absurd batch": (flags("--batch-size", "1000000"), "--batch-size must lie in [1, 65536], got 1000000"),
    "workdir is a file": (workdir_setup("file"), "is a file; choose a directory"),
    "workdir cannot be created": (workdir_setup("under-a-file"), "cannot create --workdir"),
    "foreign workdir": (workdir_setup("foreign"), "is not empty and holds no asose-jax run"),
    "finished workdir": (workdir_setup("finished", PRESETS["smoke"].to_json()), "holds a finished run"),
    "unreadable run config": (workdir_setup("finished", {"cycles": 3}), "cannot read"),
    "resume without a run": (flags("--resume"), "--resume: no run in --workdir"),
    "missing table": (flags("--space", "nb201", "--nb201-table", "/no/table.csv"), "no such file"),
    "malformed table": (
        lambda tmp: ["--space", "nb201", *file_flag("--nb201-table", "arch,acc\nx,1\n", "t.csv")(tmp)],
        "lacks arch_str",
    ),
}
TRAIN_CASES = {
    "malformed genotype file": (file_flag("--genotype", "{not json"), "cannot read genotype file"),
    "genotype of an unknown space": (file_flag("--genotype", '{"space": "resnet", "ops": []}'), "resnet"),
    "genotype with another space's fields": (
        file_flag("--genotype", '{"space": "darts", "ops": ["skip_connect", "sep_conv_3x3"]}'),
        "genotype JSON for space 'darts' lacks the key 'normal'",
    ),
    "genotype with an unknown op": (
        file_flag("--genotype", '{"space": "chain", "ops": ["conv_9x9", "skip_connect"]}'),
        "unknown op",
    ),
    "unknown published genotype": (flags("--genotype", "DARTS_V9"), "neither a file nor a published genotype"),
    "zero steps per dispatch": (flags("--steps-per-dispatch", "0"), "--steps-per-dispatch must be a positive"),
    "unknown compute dtype": (flags("--compute-dtype", "float16"), "unknown --compute-dtype 'float16'"),
    "unknown nan policy": (flags("--nan-policy", "ignore"), "unknown --nan-policy 'ignore'"),
    "seed of 2^63 (train)": (flags("--seed", "9223372036854775808"), "--seed must be an integer in [0, 4294967295]"),
    "absurd channels (train)": (flags("--init-channels", "1099511627776"), "--init-channels must lie in [1, 4096]"),
    "absurd layers (train)": (flags("--layers", "100000000"), "--layers must lie in [1, 100], got 100000000"),
    "absurd batch (train)": (flags("--batch-size", "1000000"), "--batch-size must lie in [1, 65536], got 1000000"),
    "corrupt npz (train)": (data_flag(corrupt), "is not a readable .npz file"),
    "train limit above the data (train)": (flags("--train-limit", "500"), "--train-limit 500 is larger than the 48"),
    "finished workdir (train)": (workdir_setup("finished", TrainConfig().to_json()), "holds a finished run"),
}


def search_command(tmp: pathlib.Path) -> list[str]:
    return ["--preset", "smoke", "--data", f"npz:{npz(tmp / 'good.npz')}", "--workdir", str(tmp / "run"),
            "--compilation-cache", "", "--init-channels", "4", "--depth", "2", "--batch-size", "8"]  # fmt: skip


def train_command(tmp: pathlib.Path) -> list[str]:
    return ["--genotype", "NB201_BEST", "--data", f"npz:{npz(tmp / 'good.npz')}", "--workdir", str(tmp / "run"),
            "--compilation-cache", "", "--recipe", "fast", "--epochs", "2", "--batch-size", "8",
            "--init-channels", "2", "--layers", "1"]  # fmt: skip


def with_flags(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with each flag of ``extra`` replaced (or appended)."""
    args, i = list(base), 0
    while i < len(extra):
        flag = extra[i]
        value = [] if i + 1 == len(extra) or extra[i + 1].startswith("--") else [extra[i + 1]]
        if flag in args and value:
            args[args.index(flag) + 1] = value[0]
        else:
            args += [flag, *value]
        i += 1 + len(value)
    return args


def snapshot(tmp: pathlib.Path) -> dict:
    return {str(p.relative_to(tmp)): p.read_bytes() if p.is_file() else None for p in sorted(tmp.rglob("*"))}


def run_main(main, args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    return code, capsys.readouterr().err


def check(code: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0] and "Traceback" not in err, lines[0]


def test_the_table_has_at_least_30_cases():
    assert len(SEARCH_CASES) + len(TRAIN_CASES) + 1 >= 30  # + the 8-device case below


@pytest.mark.parametrize("case", list(SEARCH_CASES))
def test_search_cli_bad_input(case, tmp_path, capsys):
    setup, message = SEARCH_CASES[case]
    args = with_flags(search_command(tmp_path), setup(tmp_path))
    before = snapshot(tmp_path)
    check(*run_main(cifar10_search.main, args, capsys), message)
    assert snapshot(tmp_path) == before, "the command changed files"


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_cli_bad_input(case, tmp_path, capsys):
    setup, message = TRAIN_CASES[case]
    args = with_flags(train_command(tmp_path), setup(tmp_path))
    before = snapshot(tmp_path)
    check(*run_main(cifar10_train.main, args, capsys), message)
    assert snapshot(tmp_path) == before, "the command changed files"


def test_a_batch_not_divisible_by_the_devices_is_one_line(tmp_path):
    env = {**os.environ, "XLA_FLAGS": cpu_devices_flags(8)}
    args = with_flags(search_command(tmp_path), ["--batch-size", "12"])
    before = snapshot(tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "cifar10_search.py"), *args],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    check(done.returncode, done.stderr, "--batch-size 12 does not divide by the 8 devices")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("main", [cifar10_search.main, cifar10_train.main], ids=["search", "train"])
def test_cifar10_offline_is_one_line_within_seconds(tmp_path, capsys, monkeypatch, main):
    from asose_jax.runtime import input_pipeline

    monkeypatch.setattr(input_pipeline, "unreachable", lambda host: "gaierror: Name or service not known")
    command = search_command(tmp_path) if main is cifar10_search.main else train_command(tmp_path)
    args = with_flags(command, ["--data", "cifar10", "--data-dir", str(tmp_path / "cache")])
    start = time.perf_counter()
    check(*run_main(main, args, capsys), "www.cs.toronto.edu cannot be reached (gaierror")
    assert time.perf_counter() - start < 30 and not (tmp_path / "run").exists()


CLIS = {"search": (cifar10_search, search_command, "asose_jax.search.driver", "--depth"),
        "train": (cifar10_train, train_command, "asose_jax.train.driver", "--layers")}  # fmt: skip


@pytest.mark.parametrize("cli", list(CLIS))
def test_a_step_larger_than_the_memory_is_one_line(cli, tmp_path, capsys, monkeypatch):
    module, command, _, depth_flag = CLIS[cli]
    monkeypatch.setattr(memory, "available_memory", lambda: (2**10, "the host's available"))
    args = command(tmp_path)
    before = snapshot(tmp_path)
    message = f"more than the host's available 1.0 KiB of memory; lower --batch-size, --init-channels or {depth_flag}"
    check(*run_main(module.main, args, capsys), message)
    assert snapshot(tmp_path) == before, "the command changed files"


@pytest.mark.parametrize("cli", list(CLIS))
@pytest.mark.parametrize(
    "error, message",
    [
        (jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while allocating 8.00GiB.\nstack"),
         "error: out of memory (RESOURCE_EXHAUSTED: Out of memory while allocating 8.00GiB.); the last checkpoint is "
         "kept: lower --batch-size"),
        (MemoryError("Unable to allocate 9.7 GiB"), "error: out of memory (Unable to allocate 9.7 GiB)"),
        (jax.errors.JaxRuntimeError("INTERNAL: cuDNN failed"), "error: INTERNAL: cuDNN failed (a JAX runtime error)"),
    ],
)  # fmt: skip
def test_a_runtime_failure_mid_run_is_one_line(cli, error, message, tmp_path, capsys, monkeypatch):
    module, command, driver, _ = CLIS[cli]

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(f"{driver}.train_and_evaluate", fail)
    code, err = run_main(module.main, command(tmp_path), capsys)
    check(code, err, message)


def test_another_runtime_error_keeps_its_traceback(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("asose_jax.search.driver.train_and_evaluate", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        cifar10_search.main(search_command(tmp_path))


def test_the_memory_estimate_matches_xla():
    """The estimated activations of a step lie within the refusal's tolerance of the temporary memory XLA assigns
    to the compiled gradient (a small chain supernet on 32 x 32 images)."""
    from asose_jax.search.steps import supernet_from_config
    from asose_jax.spaces import uniform_arch_weights

    model = supernet_from_config(dataclasses.replace(PRESETS["smoke"].search, init_channels=8, depth=2))
    images = np.zeros((8, 32, 32, 3), np.uint8)
    data = ImageArrays(images, np.zeros(8, np.int32), images, np.zeros(8, np.int32))
    estimate = memory.estimate_step_memory(model, 8 * jax.device_count(), data, copies=1)
    arch = uniform_arch_weights(model)
    x = jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x[:1], arch, train=False), x)

    def grad(variables, x):
        def loss(params):
            out, updates = model.apply({**variables, "params": params}, x, arch, train=True, mutable=["batch_stats"])
            return jnp.sum(out), updates

        return jax.grad(loss, has_aux=True)(variables["params"])

    compiled = jax.jit(grad).lower(variables, x).compile().memory_analysis()
    ratio = estimate.activations / compiled.temp_size_in_bytes
    assert 1 / memory.TOLERANCE < ratio < memory.TOLERANCE, ratio
