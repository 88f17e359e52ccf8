"""Scoring searches on NAS-Bench-201: --method, --nb201-table through the search CLI, the nb201-cpu preset,
the validation measure of each sampler, and the search-quality benchmark's records."""

import dataclasses
import itertools
import json
import pathlib
import sys

import pytest

from asose_jax.runtime.metrics_log import read_metrics
from asose_jax.search import search_run
from asose_jax.search.config import SearchConfig
from asose_jax.search.iterations import DERIVED, SUPERNET, validation_measure
from asose_jax.search.methods import METHODS, method_of, with_method
from asose_jax.search.nb201_table import load_nb201_table
from asose_jax.search.run_config import preset

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT))

import cifar10_search  # noqa: E402

from benchmarks import search_quality  # noqa: E402

OPS = ("none", "skip_connect", "nor_conv_1x1")


def test_methods_set_their_fields_and_are_recognised_back():
    for name, fields in METHODS.items():
        search = with_method(SearchConfig(space="nb201"), name)
        assert {k: getattr(search, k) for k in fields} == fields
        assert method_of(search) == name
    assert method_of(dataclasses.replace(with_method(SearchConfig(), "gdas"), arch_regularizer="beta")) is None
    rescaled = dataclasses.replace(with_method(SearchConfig(), "beta_darts"), arch_reg_weight=5.0)
    assert method_of(rescaled) == "beta_darts"  # a coefficient scaled to the network is the same method
    with pytest.raises(ValueError, match="unknown --method 'enas'; use one of darts, gdas"):
        with_method(SearchConfig(), "enas")


def test_validation_measure_per_sampler():
    assert validation_measure("gumbel_hard") == DERIVED
    assert {validation_measure(s) for s in ("softmax", "gumbel_soft", "dirichlet")} == {SUPERNET}


def test_the_nb201_cpu_preset():
    config = preset("nb201-cpu")
    search = config.search
    assert (search.space, search.init_channels, search.depth) == ("nb201", 8, 1)
    assert method_of(search) == "beta_darts"
    assert search.arch_reg_weight == 5.0 and search.arch_lr == 3e-3
    assert (config.train_limit, config.batch_size, config.cycles) == (10000, 64, 1)
    assert (config.warmup_epochs, config.arch_epochs, config.retrain_epochs) == (2, 8, 0)
    assert config.growth == "off" and config.plateau_window == 0


def test_the_smoke_preset_searches_with_beta_darts():
    config = preset("smoke")
    search = config.search
    assert (search.space, search.init_channels, search.depth, len(search.op_names)) == ("chain", 16, 4, 4)
    assert method_of(search) == "beta_darts" and validation_measure(search.sampler) == SUPERNET
    assert search.arch_reg_weight == 5.0 and search.arch_lr == 6e-3
    assert (config.train_limit, config.batch_size, config.cycles) == (5000, 32, 6)
    assert (config.warmup_epochs, config.arch_epochs, config.retrain_epochs) == (2, 1, 1)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> pathlib.Path:
    """A table of every cell over three ops, accuracy = 50 + 5 x (number of convolutions)."""
    path = tmp_path_factory.mktemp("table") / "table.csv"
    lines = ["arch_str,cifar10_test_acc"]
    for ops in itertools.product(OPS, repeat=6):
        cell = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)
        lines.append(f"{cell},{50 + 5 * ops.count('nor_conv_1x1')}")
    path.write_text("\n".join(lines) + "\n")
    return path


def search_args(npz_path, workdir, table, *extra) -> list[str]:
    return ["--preset", "nb201-cpu", "--data", f"npz:{npz_path}", "--workdir", str(workdir),
            "--compilation-cache", "", "--init-channels", "2", "--ops", ",".join(OPS), "--batch-size", "8",
            "--warmup-epochs", "1", "--arch-epochs", "2", "--log-every", "1", "--nb201-table", str(table),
            *extra]  # fmt: skip


@pytest.fixture(scope="module")
def scored_run(npz_path, table_path, tmp_path_factory):
    """A tiny GDAS search scored on the table; records the images every BatchNorm re-estimation reads."""
    workdir = tmp_path_factory.mktemp("runs") / "gdas-seed0"
    make_iterations = search_run.make_iterations

    def recording(model, config, mesh, jitted=None):
        inner = make_iterations(model, config, mesh, jitted)

        def recalibrate(state, images, labels, idx, fixed_weights):
            RECALIBRATED.append(images.shape[0])
            return inner.recalibrate(state, images, labels, idx, fixed_weights)

        return inner._replace(recalibrate=recalibrate)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_run, "make_iterations", recording)
        assert cifar10_search.main(search_args(npz_path, workdir, table_path, "--method", "gdas")) == 0
    return workdir


RECALIBRATED: list[int] = []


def test_batch_norm_is_re_estimated_on_training_images_for_every_split(scored_run):
    # 3 epoch records, growth off, then val and test of the derived path: 5 re-estimations, all on the 48
    # training images (never on the 16 test images).
    assert RECALIBRATED == [48] * 5


def test_every_epoch_and_the_summary_carry_the_table_score(scored_run, table_path):
    table = load_nb201_table(table_path)
    epochs = [r for r in read_metrics(scored_run / "metrics.jsonl") if r["event"] == "epoch"]
    assert len(epochs) == 3
    for r in epochs:
        assert table.score(r["arch_str"]) == {k: r[k] for k in ("arch_str", "table_acc", "table_rank")}
    summary = json.loads((scored_run / "summary.json").read_text())
    assert summary["method"] == "gdas" and summary["val_measure"] == DERIVED
    assert summary["arch_str"] == summary["genotype"]["arch_str"] == epochs[-1]["arch_str"]
    assert summary["table_acc"] == table.score(summary["arch_str"])["table_acc"]
    assert summary["val_acc"] == summary["val_acc_derived"] and summary["val_acc_supernet"] is None
    assert (scored_run / "table_acc.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((scored_run / "config.json").read_text())
    assert config["search"]["sampler"] == "gumbel_hard" and config["search"]["tau_max"] == 10.0


def test_the_benchmark_reads_a_run_into_its_record(scored_run):
    row, epochs = search_quality.run_record(scored_run, "gdas", 0)
    assert row["method"] == "gdas" and row["seed"] == 0 and len(row["table_acc_per_epoch"]) == len(epochs) == 3
    assert row["skip_connect"] + row["none"] <= 6 and isinstance(row["connected"], bool)
    assert row["arch_images_per_s"] > 0 and row["wall_time_s"] > 0
    agg = search_quality.aggregate([row, {**row, "seed": 1, "table_acc": row["table_acc"] + 2.0}])
    assert agg["gdas"]["runs"] == 2 and agg["gdas"]["table_acc_mean"] == pytest.approx(row["table_acc"] + 1, abs=0.01)
    assert search_quality.method_flags("darts:--arch-lr=1e-3,--seed=3") == [
        "--method", "darts", "--arch-lr", "1e-3", "--seed", "3"
    ]  # fmt: skip
    assert search_quality.method_flags("preset") == []
    assert search_quality.method_label("beta_darts:--arch-reg-weight=5") == "beta_darts_arch-reg-weight=5"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--nb201-table", "/nonexistent/table.csv"], "--nb201-table /nonexistent/table.csv: no such file"),
        (["--method", "enas"], "unknown --method 'enas'"),
        (["--arch-regularizer", "l1"], "unknown --arch-regularizer 'l1'"),
        (["--arch-reg-weight", "-1"], "--arch-reg-weight must be >= 0"),
        (["--space", "chain", "--ops", "skip_connect,sep_conv_3x3"], "--nb201-table scores NAS-Bench-201 cells"),
    ],
)
def test_bad_scoring_input_is_one_line_before_any_training(npz_path, table_path, tmp_path, capsys, extra, message):
    workdir = tmp_path / "run"
    assert cifar10_search.main(search_args(npz_path, workdir, table_path, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not workdir.exists()


def test_a_cell_missing_from_the_table_is_named(npz_path, tmp_path, capsys):
    table = tmp_path / "one_cell.csv"
    table.write_text("arch_str,cifar10_test_acc\n|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|,80\n")
    args = search_args(npz_path, tmp_path / "run", table, "--method", "gdas", "--arch-epochs", "0")
    assert cifar10_search.main(args) == 2
    err = capsys.readouterr().err
    assert "is not in the NAS-Bench-201 table" in err and str(table) in err and err.count("\n") == 1, err
