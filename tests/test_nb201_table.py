"""The NAS-Bench-201 table: loading, lookup by genotype or string, ranks, cell statistics, bad files."""

import gzip
import itertools
import pathlib

import numpy as np
import pytest

from asose_jax.search.nb201_table import cell_statistics, load_nb201_table
from asose_jax.spaces.genotypes import PUBLISHED, NB201Genotype, derive_genotype

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEST = PUBLISHED["NB201_BEST"].to_string()
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def write_table(path: pathlib.Path, rows: list[tuple[str, str]], header: str = "arch_str,cifar10_test_acc") -> str:
    path.write_text("\n".join([header, *(f"{a},{b}" for a, b in rows)]) + "\n")
    return str(path)


def test_the_shipped_table_scores_the_published_anchors():
    table = load_nb201_table(ROOT / "benchmarks/tables/nb201_cifar10.csv.gz")
    assert len(table) == 5**6
    assert table.score(PUBLISHED["NB201_BEST"]) == {"arch_str": BEST, "table_acc": 94.3733, "table_rank": 1}
    assert table.score(ALL_SKIP)["table_acc"] == pytest.approx(54.30, abs=0.01)  # where DARTS collapses


def test_lookup_round_trips_the_string_form_and_ranks_ties_together(tmp_path):
    cells = ["|" + "|+|".join(["none~0", "none~0|none~1", f"{op}~0|none~1|none~2"]) + "|" for op in
             ("none", "skip_connect", "nor_conv_3x3")]  # fmt: skip
    table = load_nb201_table(write_table(tmp_path / "t.csv", list(zip(cells, ["10.0", "90.5", "90.5"], strict=True))))
    genotype = NB201Genotype.from_string(cells[2])
    assert genotype.to_string() == cells[2] and table.score(genotype)["table_acc"] == 90.5
    assert [table.score(c)["table_rank"] for c in cells] == [3, 1, 1]
    # A genotype derived from logits is looked up by its string form.
    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    logits = np.zeros((6, 5))
    logits[3, 3] = 1.0
    assert table.score(derive_genotype("nb201", {"cell": logits}, ops))["arch_str"] == cells[2]


def test_a_cell_missing_from_the_table_is_named(tmp_path):
    table = load_nb201_table(write_table(tmp_path / "t.csv", [(BEST, "94.37")]))
    with pytest.raises(ValueError, match=r"cell \|skip_connect~0\|.* is not in the NAS-Bench-201 table"):
        table.score(ALL_SKIP)


def test_gzip_and_plain_csv_read_alike(tmp_path):
    plain = write_table(tmp_path / "t.csv", [(BEST, "94.37"), (ALL_SKIP, "54.3")])
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(pathlib.Path(plain).read_bytes()))
    assert load_nb201_table(plain).accuracy == load_nb201_table(tmp_path / "t.csv.gz").accuracy


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("arch,acc\nx,1\n", "lacks arch_str, cifar10_test_acc"),
        ("", "lacks arch_str"),
        ("arch_str,cifar10_test_acc\n", "holds no cells"),
        (f"arch_str,cifar10_test_acc\n{BEST},ninety\n", "line 2: could not convert"),
        (f"arch_str,cifar10_test_acc\n{BEST},120\n", "line 2: accuracy 120.0 is not a percentage"),
        ("arch_str,cifar10_test_acc\n|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|,50\n", "line 2: unknown op"),
        ("arch_str,cifar10_test_acc\n|none~0|+|none~0|,50\n", "line 2: NAS-Bench-201 cell must have"),
        (b"\x1f\x8b\x08garbage", "cannot read it"),
    ],
)
def test_a_bad_table_is_one_error_naming_the_file_and_the_fix(tmp_path, content, message):
    path = tmp_path / "table.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_nb201_table(path)
    assert str(path) in str(error.value) and "pass a CSV with the columns" in str(error.value)
    assert "\n" not in str(error.value)


def test_cell_statistics_count_skips_and_nones_and_find_cells_cut_off_from_their_input():
    assert cell_statistics(ALL_SKIP) == {"skip_connect": 6, "none": 0, "connected": True}
    assert cell_statistics(BEST) == {"skip_connect": 1, "none": 0, "connected": True}
    cut = "|none~0|+|none~0|nor_conv_3x3~1|+|none~0|skip_connect~1|nor_conv_3x3~2|"  # node 1 gets only zeros
    assert cell_statistics(cut) == {"skip_connect": 1, "none": 3, "connected": False}
    via_node_2 = "|none~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"
    assert cell_statistics(via_node_2)["connected"] is True
    assert all(cell_statistics(c)["connected"] is False for c in
               ["|none~0|+|none~0|none~1|+|none~0|" + f"{a}~1|{b}~2|" for a, b in
                itertools.product(("skip_connect", "none"), repeat=2)])  # fmt: skip
