"""Scoring searches on NAS-Bench-201: --method, --nb201-table through the search CLI, the nb201-cpu preset,
the validation measure of each sampler, and the search-quality benchmark's records."""

import csv
import dataclasses
import gzip
import hashlib
import io
import itertools
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from asose_jax.runtime.metrics_log import read_metrics
from asose_jax.search import search_run
from asose_jax.search.iterations import DERIVED, SUPERNET, validation_measure
from asose_jax.search.methods import METHODS, method_of, with_method
from asose_jax.search.nb201_table import load_nb201_table
from asose_jax.search.run_config import preset
from asose_jax.search.step_config import SearchConfig
from asose_jax.spaces.genotypes import derive_genotype

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
    assert (config.warmup_epochs, config.arch_epochs, config.retrain_epochs) == (1, 0, 0)
    assert (config.selection, config.selection_measure, config.selection_tune_steps) == ("perturbation", "zico", 0)
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


TINY = ["--init-channels", "2", "--ops", ",".join(OPS), "--batch-size", "8", "--warmup-epochs", "1",
        "--arch-epochs", "2", "--log-every", "1", "--selection", "argmax"]  # fmt: skip


def search_args(npz_path, workdir, table, *extra) -> list[str]:
    return ["--preset", "nb201-cpu", "--data", f"npz:{npz_path}", "--workdir", str(workdir),
            "--compilation-cache", "", *TINY, "--nb201-table", str(table), *extra]  # fmt: skip


def table_by_hand(path: pathlib.Path) -> dict[str, float]:
    """The table read with the csv module, apart from the code under test."""
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
    return {row["arch_str"]: float(row["cifar10_test_acc"]) for row in csv.DictReader(io.StringIO(text))}


def ops_by_hand(arch: str) -> list[str]:
    """The six ops of ``|a~0|+|b~0|c~1|+|d~0|e~1|f~2|`` in that order."""
    return re.findall(r"\|([a-z0-9_]+)~\d", arch)


def epoch_records(workdir: pathlib.Path) -> list[dict]:
    return [r for r in read_metrics(workdir / "metrics.jsonl") if r["event"] == "epoch"]


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
    accuracy = table_by_hand(table_path)
    epochs = epoch_records(scored_run)
    assert len(epochs) == 3
    for r in epochs:
        ops = ops_by_hand(r["arch_str"])
        assert len(ops) == 6 and set(ops) <= set(OPS)
        assert r["table_acc"] == accuracy[r["arch_str"]] == 50 + 5 * ops.count("nor_conv_1x1")
        assert r["table_rank"] == 1 + sum(acc > r["table_acc"] for acc in accuracy.values())
    summary = json.loads((scored_run / "summary.json").read_text())
    assert summary["method"] == "gdas" and summary["val_measure"] == DERIVED
    assert summary["arch_str"] == summary["genotype"]["arch_str"] == epochs[-1]["arch_str"]
    assert summary["table_acc"] == accuracy[summary["arch_str"]]
    assert summary["val_acc"] == summary["val_acc_derived"] and summary["val_acc_supernet"] is None
    assert (scored_run / "table_acc.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((scored_run / "config.json").read_text())
    assert config["search"]["sampler"] == "gumbel_hard" and config["search"]["tau_max"] == 10.0


def test_each_epoch_cell_is_the_argmax_of_the_weights_it_records(scored_run):
    op_names = json.loads((scored_run / "config.json").read_text())["computed"]["op_names"]
    for r in epoch_records(scored_run):
        logits = {name: np.log(np.asarray(w)) for name, w in r["arch_weights"].items()}
        assert derive_genotype("nb201", logits, op_names).to_string() == r["arch_str"]
        by_hand = [op_names[int(np.argmax(w))] for w in r["arch_weights"]["cell"]]
        assert ops_by_hand(r["arch_str"]) == by_hand


def connected_by_hand(ops: list[str]) -> bool:
    """Whether non-``none`` edges join node 0 to node 3: edges 1<-0; 2<-0, 2<-1; 3<-0, 3<-1, 3<-2."""
    e10, e20, e21, e30, e31, e32 = (op != "none" for op in ops)
    node1 = e10
    node2 = e20 or (e21 and node1)
    return e30 or (e31 and node1) or (e32 and node2)


def test_the_benchmark_reads_a_run_into_its_record(scored_run, table_path):
    row, epochs = search_quality.run_record(scored_run, "gdas", 0)
    accuracy, ops = table_by_hand(table_path), ops_by_hand(row["arch_str"])
    assert row["method"] == "gdas" and row["seed"] == 0 and len(row["table_acc_per_epoch"]) == len(epochs) == 3
    assert row["table_acc"] == accuracy[row["arch_str"]]
    assert row["table_rank"] == 1 + sum(acc > row["table_acc"] for acc in accuracy.values())
    assert (row["skip_connect"], row["none"]) == (ops.count("skip_connect"), ops.count("none"))
    assert row["connected"] is connected_by_hand(ops)
    assert epochs[0]["phase"] == "warmup" and row["initial_arch_str"] == epochs[0]["arch_str"]
    assert row["initial_table_acc"] == accuracy[epochs[0]["arch_str"]]
    weights = [sorted(w) for ws in epochs[-1]["arch_weights"].values() for w in ws]
    assert row["min_margin"] == pytest.approx(min(w[-1] - w[-2] for w in weights))
    assert row["config"] == json.loads((scored_run / "config.json").read_text())
    assert row["arch_images_per_s"] > 0 and row["wall_time_s"] > 0
    assert search_quality.method_flags("darts:--arch-lr=1e-3,--seed=3") == [
        "--method", "darts", "--arch-lr", "1e-3", "--seed", "3"
    ]  # fmt: skip
    assert search_quality.method_flags("preset") == []
    assert search_quality.method_flags("preset:--grow-at=1:depth,2:depth,--cycles=3") == [
        "--grow-at", "1:depth,2:depth", "--cycles", "3"
    ]  # fmt: skip
    assert search_quality.method_label("preset:--grow-at=1:depth,2:depth") == "preset_grow-at=1_depth+2_depth"
    assert search_quality.method_label("beta_darts:--arch-reg-weight=5") == "beta_darts_arch-reg-weight=5"


def test_the_smallest_merit_lead_is_over_the_ops_in_play():
    """Shrinking leaves the merits of dropped ops null; an edge with one op in play has no runner-up."""
    decisions = [{"merit": {"a": 0.3, "b": None, "c": 0.1}}, {"merit": {"a": 1.0, "b": 0.2, "c": 0.9}},
                 {"merit": {"a": 0.5, "b": None, "c": None}}]  # fmt: skip
    assert search_quality.min_merit_margin(decisions) == pytest.approx(0.1)
    assert search_quality.min_merit_margin(decisions[2:]) is None and search_quality.min_merit_margin([]) is None


def test_aggregate_and_baselines_summarise_table_accuracies(table_path):
    rows = [{"method": "m", "seed": s, "arch_str": cell, "table_acc": acc, "skip_connect": 0, "none": 1,
             "connected": s != 2, "initial_arch_str": cell, "initial_table_acc": acc - 1}
            for s, cell, acc in [(0, "a", 90.0), (1, "a", 92.0), (2, "b", 94.0)]]  # fmt: skip
    agg = search_quality.aggregate(rows)["m"]
    assert (agg["n"], agg["mean"], agg["median"], agg["min"], agg["max"]) == (3, 92.0, 92.0, 90.0, 94.0)
    assert agg["std"] == pytest.approx(2.0) and agg["distinct_cells"] == 2 and agg["disconnected_runs"] == 1
    assert search_quality.aggregate(rows[:1])["m"]["std"] is None
    accuracy = table_by_hand(table_path)
    conv = "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|"
    got = search_quality.baselines(list(search_quality.BASELINES), rows, load_nb201_table(table_path))
    assert got["initial_argmax"]["n"] == 3 and got["initial_argmax"]["mean"] == pytest.approx(91.0)
    assert (got["all_convolution"]["n"], got["all_convolution"]["mean"]) == (1, accuracy[conv]) == (1, 80.0)
    whole = got["uniform_random"]
    assert (whole["n"], whole["distinct_cells"]) == (len(accuracy), 3**6)
    assert whole["mean"] == pytest.approx(sum(accuracy.values()) / len(accuracy))
    assert whole["median"] == sorted(accuracy.values())[len(accuracy) // 2]


def test_the_all_convolution_prior_of_the_shipped_table():
    accuracy = table_by_hand(search_quality.DEFAULT_TABLE)
    conv = [acc for cell, acc in accuracy.items() if set(ops_by_hand(cell)) <= {"nor_conv_1x1", "nor_conv_3x3"}]
    got = search_quality.baselines(["all_convolution"], [], load_nb201_table(search_quality.DEFAULT_TABLE))
    assert got["all_convolution"]["n"] == len(conv) == 64
    assert got["all_convolution"]["mean"] == pytest.approx(sum(conv) / 64) and 93.0 < sum(conv) / 64 < 93.4


def test_the_committed_protocol():
    protocol = search_quality.load_protocol(search_quality.PROTOCOL)
    report, selection = set(protocol["report_seeds"]), set(protocol["selection_seeds"])
    assert len(report) >= 5 and not report & (selection | {int(s) for s in protocol["excluded_seeds"]})
    for path in (ROOT / "benchmarks/results").glob("search_quality*.json"):  # report seeds are fresh
        assert not report & {r["seed"] for r in json.loads(path.read_text())["runs"]}, path
    assert protocol["budget"]["grid"] and set(protocol["baselines"]) <= set(search_quality.BASELINES)


def test_every_method_gets_the_protocol_grid():
    grid = {"--arch-lr": ["1e-3", "3e-3"], "--tau-min": ["0.1"]}
    assert search_quality.grid_variants("darts", grid) == [
        "darts:--arch-lr=1e-3,--tau-min=0.1", "darts:--arch-lr=3e-3,--tau-min=0.1"
    ]  # fmt: skip
    assert search_quality.grid_variants("beta_darts:--arch-reg-weight=5", {"--arch-lr": ["1e-3"]}) == [
        "beta_darts:--arch-reg-weight=5,--arch-lr=1e-3"
    ]
    assert search_quality.grid_variants("gdas", {}) == ["gdas"]
    with pytest.raises(SystemExit, match="darts:--arch-lr=1 sets --arch-lr, which the protocol's grid sets"):
        search_quality.grid_variants("darts:--arch-lr=1", grid)
    means = {"darts_arch-lr=1e-3": {"mean": 91.0}, "darts_arch-lr=3e-3": {"mean": 92.5}}
    variants = {"darts": ["darts:--arch-lr=1e-3", "darts:--arch-lr=3e-3"]}
    assert search_quality.choose(means, variants) == {"darts": "darts:--arch-lr=3e-3"}


@pytest.fixture
def protocol_path(tmp_path) -> pathlib.Path:
    """A protocol without a grid: selection seed 0, report seeds 5-9."""
    path = tmp_path / "protocol.json"
    protocol = {"selection_seeds": [0], "report_seeds": [5, 6, 7, 8, 9], "excluded_seeds": {"3": "used"},
                "budget": {"rule": "same grid", "grid": {}}, "baselines": list(search_quality.BASELINES)}  # fmt: skip
    path.write_text(json.dumps(protocol))
    return path


def benchmark_args(npz_path, table_path, protocol_path, runs_dir, out, *extra) -> list[str]:
    return ["--preset", "nb201-cpu", "--data", f"npz:{npz_path}", "--table", str(table_path), "--methods", "gdas",
            "--protocol", str(protocol_path), "--runs-dir", str(runs_dir), "--out", str(out), *extra]  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "0", "5"], "--stage select refuses seeds [5]: they are report seeds"),
        (["--stage", "report", "--seeds", "0"], "--stage report refuses seeds [0]: the protocol's report_seeds are"),
    ],
)
def test_choosing_never_sees_a_report_seed(npz_path, table_path, protocol_path, tmp_path, extra, message):
    args = benchmark_args(npz_path, table_path, protocol_path, tmp_path / "runs", tmp_path / "out.json", *extra)
    with pytest.raises(SystemExit, match=re.escape(message)):
        search_quality.main(args)
    assert not (tmp_path / "runs").exists()


def test_a_protocol_reporting_on_spent_seeds_is_refused(protocol_path):
    protocol = json.loads(protocol_path.read_text())
    protocol_path.write_text(json.dumps({**protocol, "report_seeds": [3, 5, 6, 7, 8]}))
    with pytest.raises(SystemExit, match=r"report seeds \[3\] are selection or excluded seeds"):
        search_quality.load_protocol(protocol_path)


def test_a_run_directory_with_other_settings_is_refused(scored_run, npz_path, table_path, protocol_path, tmp_path):
    same = search_args(npz_path, scored_run, table_path, "--method", "gdas")
    search_quality.check_reusable(scored_run, same)  # its own settings: reused
    search_quality.check_reusable(scored_run, [*same, "--checkpoint-every", "7"])  # changes no result
    with pytest.raises(SystemExit, match=r"--batch-size 8 \(batch_size\), but this run asks for 16"):
        search_quality.check_reusable(scored_run, [*same, "--batch-size", "16"])
    before = sorted(scored_run.parent.iterdir())
    args = benchmark_args(npz_path, table_path, protocol_path, scored_run.parent, tmp_path / "out.json")
    finished = f"error: --workdir {scored_run} holds a finished run made with --batch-size 8"
    with pytest.raises(SystemExit, match=finished):
        search_quality.main(args)  # the preset's own settings, not the tiny run's
    assert sorted(scored_run.parent.iterdir()) == before and not (tmp_path / "out.json").exists()


def test_the_benchmark_end_to_end_on_a_finished_run(scored_run, npz_path, table_path, protocol_path, tmp_path,
                                                    monkeypatch, capsys):  # fmt: skip
    tiny = search_quality.search_args
    monkeypatch.setattr(search_quality, "search_args", lambda *a: [*tiny(*a), *TINY])  # the tiny run's settings
    out = tmp_path / "select.json"
    assert search_quality.main(benchmark_args(npz_path, table_path, protocol_path, scored_run.parent, out)) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert result["git"]["commit"] == head and isinstance(result["git"]["dirty"], bool)
    assert result["data_sha256"] == hashlib.sha256(npz_path.read_bytes()).hexdigest()
    assert result["table_sha256"] == hashlib.sha256(table_path.read_bytes()).hexdigest()
    assert result["stage"] == "select" and result["seeds"] == [0] and result["chosen"] == {"gdas": "gdas"}
    (run,) = result["runs"]
    assert run["config"] == json.loads((scored_run / "config.json").read_text())
    assert result["arch_epochs"] == 2  # the run's (TINY's), not the preset's 0
    assert run["table_acc"] == table_by_hand(table_path)[run["arch_str"]]
    assert result["methods"]["gdas"]["mean"] == run["table_acc"] and result["methods"]["gdas"]["std"] is None
    assert result["baselines"]["all_convolution"]["mean"] == 80.0
    markdown = search_quality.render_markdown(result)
    assert printed == markdown
    assert f"| `gdas` | 0 | {run['table_acc']:.2f} | {run['table_rank']} |" in markdown
    assert "| baseline: all-convolution cells (nor_conv_1x1 / nor_conv_3x3 only) | 1 | 80.00 |" in markdown
    assert f"commit {head[:10]}" in markdown and "| `gdas` | `gdas` |" in markdown
    assert search_quality.main(["--render", str(out)]) == 0 and capsys.readouterr().out == markdown
    assert search_quality.chosen_methods(out, "nb201-cpu") == ["gdas"]  # what --stage report --selection runs
    with pytest.raises(SystemExit, match="is not a select-stage result of preset smoke"):
        search_quality.chosen_methods(out, "smoke")


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
