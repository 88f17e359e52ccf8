"""The NAS-Bench-201 table: the CIFAR-10 test accuracy of every cell, to score a search without training.

The file is a CSV (optionally gzipped) with the columns ``arch_str`` (the cell in NAS-Bench-201's string
form, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``) and ``cifar10_test_acc`` (percent); the project ships the
NATS-Bench topology table's 200-epoch column as ``benchmarks/tables/nb201_cifar10.csv.gz``.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
import pathlib

from asose_jax.spaces.genotypes import NB201Genotype, check_genotype

COLUMNS = ("arch_str", "cifar10_test_acc")


@dataclasses.dataclass(frozen=True)
class NB201Table:
    """Accuracy (percent) per cell string; ``rank`` 1 is the best cell, ties share the better rank."""

    path: str
    accuracy: dict[str, float]

    def __len__(self) -> int:
        return len(self.accuracy)

    def score(self, genotype: NB201Genotype | str) -> dict:
        """``{"arch_str", "table_acc", "table_rank"}`` of a cell; ValueError names a cell the table lacks."""
        arch = genotype if isinstance(genotype, str) else genotype.to_string()
        if arch not in self.accuracy:
            raise ValueError(f"cell {arch} is not in the NAS-Bench-201 table {self.path} ({len(self)} cells)")
        acc = self.accuracy[arch]
        rank = 1 + sum(other > acc for other in self.accuracy.values())
        return {"arch_str": arch, "table_acc": acc, "table_rank": rank}


def load_nb201_table(path: str | pathlib.Path) -> NB201Table:
    """Reads and checks the table; any problem is one ValueError that names the file and the fix."""
    path = pathlib.Path(path)
    fix = f"pass a CSV with the columns {', '.join(COLUMNS)} (e.g. benchmarks/tables/nb201_cifar10.csv.gz)"
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
    except FileNotFoundError:
        raise ValueError(f"--nb201-table {path}: no such file; {fix}") from None
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as err:
        raise ValueError(f"--nb201-table {path}: cannot read it ({err}); {fix}") from None
    rows = csv.DictReader(io.StringIO(text))
    if rows.fieldnames is None or not set(COLUMNS) <= set(rows.fieldnames):
        raise ValueError(f"--nb201-table {path}: header {rows.fieldnames} lacks {', '.join(COLUMNS)}; {fix}")
    accuracy = {}
    for line, row in enumerate(rows, start=2):
        try:
            arch = check_genotype(NB201Genotype.from_string(row["arch_str"] or "")).to_string()
            acc = float(row["cifar10_test_acc"] or "")
            if not math.isfinite(acc) or not 0 <= acc <= 100:
                raise ValueError(f"accuracy {acc} is not a percentage")
        except (ValueError, TypeError) as err:
            raise ValueError(f"--nb201-table {path}, line {line}: {err}; {fix}") from None
        accuracy[arch] = acc
    if not accuracy:
        raise ValueError(f"--nb201-table {path} holds no cells; {fix}")
    return NB201Table(str(path), accuracy)


def cell_statistics(arch: str) -> dict:
    """``skip_connect`` and ``none`` edges of a cell string, and whether a path of non-``none`` edges joins
    the cell's input (node 0) to its output (node 3); a cell cut off from its input only passes zeros."""
    genotype = NB201Genotype.from_string(arch)
    ops = [op for node in genotype.nodes for op, _ in node]
    reached = {0}
    for i, node in enumerate(genotype.nodes, start=1):
        if any(op != "none" and j in reached for op, j in node):
            reached.add(i)
    connected = len(genotype.nodes) in reached
    return {"skip_connect": ops.count("skip_connect"), "none": ops.count("none"), "connected": connected}
