"""The cell-order benchmark: trains each cell once per seed through the training CLI, reports the runs next to
the table, reuses a finished run only with the same settings, and refuses a cell the table lacks before training."""

import json
import pathlib
import re
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import cell_order  # noqa: E402

CELLS = ["|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_1x1~2|",
         "|nor_conv_1x1~0|+|none~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|"]  # fmt: skip
UNTRAINED = "|none~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|"
FLAGS = "--init-channels=2,--layers=1,--epochs=1,--batch-size=16,--cutout=0,--compilation-cache="


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("table") / "table.csv"
    cells = [*CELLS, UNTRAINED]
    path.write_text("arch_str,cifar10_test_acc\n" + "".join(f"{c},{90 + i}\n" for i, c in enumerate(cells)))
    return path


def args(npz_path, table_path, runs_dir, out, flags=FLAGS, cells=CELLS) -> list[str]:
    return ["--data", f"npz:{npz_path}", "--table", str(table_path), "--seeds", "0", "--runs-dir", str(runs_dir),
            f"--train-flags={flags}", "--out", str(out), "--cells", *cells]  # fmt: skip


def test_each_cell_trains_once_and_a_finished_run_is_reused_only_with_its_settings(
    npz_path, table_path, tmp_path, capsys
):
    runs = tmp_path / "runs"
    assert cell_order.main(args(npz_path, table_path, runs, tmp_path / "a.json")) == 0
    result = json.loads((tmp_path / "a.json").read_text())
    assert [r["arch_str"] for r in result["runs"]] == CELLS and [c["table_acc"] for c in result["cells"]] == [90, 91]
    for row, cell in zip(result["runs"], result["cells"], strict=True):
        workdir = runs / f"{cell_order.cell_name(row['arch_str'])}-seed0"
        summary = json.loads((workdir / "summary.json").read_text())
        assert row["test_acc"] == summary["test_acc"] == cell["mean"] and cell["accs"] == [row["test_acc"]]
        assert json.loads((workdir / "genotype.json").read_text())["arch_str"] == row["arch_str"]
        assert row["config"]["epochs"] == 1 and row["config"]["init_channels"] == 2
    assert len({cell_order.cell_name(c) for c in CELLS}) == 2
    assert result["data_sha256"] and result["git"]["commit"]
    printed = capsys.readouterr().out
    assert all(f"`{c}` | {90 + i:.2f}" in printed for i, c in enumerate(CELLS))
    stamps = sorted(p.stat().st_mtime_ns for p in runs.glob("*/summary.json"))
    assert cell_order.main(args(npz_path, table_path, runs, tmp_path / "b.json")) == 0  # reused, not retrained
    assert sorted(p.stat().st_mtime_ns for p in runs.glob("*/summary.json")) == stamps
    np.testing.assert_equal(json.loads((tmp_path / "b.json").read_text())["cells"], result["cells"])
    longer = FLAGS.replace("--epochs=1", "--epochs=2")
    with pytest.raises(SystemExit, match=r"holds a finished run made with --epochs 1 \(epochs\), but this run asks"):
        cell_order.main(args(npz_path, table_path, runs, tmp_path / "c.json", longer, [UNTRAINED, CELLS[0]]))
    assert not (runs / f"{cell_order.cell_name(UNTRAINED)}-seed0").exists()  # refused before any training
    assert not (tmp_path / "c.json").exists()


def test_a_cell_the_table_lacks_is_refused_before_any_training(npz_path, table_path, tmp_path):
    other = CELLS[0].replace("skip_connect", "avg_pool_3x3")
    with pytest.raises(SystemExit, match=f"error: cell {re.escape(other)} is not in"):
        cell_order.main(args(npz_path, table_path, tmp_path / "runs", tmp_path / "out.json", cells=[CELLS[0], other]))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out.json").exists()


def test_data_other_than_an_npz_file_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cell_order.main(["--data", "tfds", "--seeds", "0", "--cells", CELLS[0], "--out", str(tmp_path / "o.json")])
    assert exit_info.value.code == 2 and "--data must be npz:PATH" in capsys.readouterr().err
