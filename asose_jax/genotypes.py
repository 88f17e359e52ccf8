"""Genotypes: discrete architectures derived from logits, and their JSON form.

* ``chain``: per block the strongest op other than ``none``.
* ``darts``: the DARTS rule: per node keep the two inputs whose strongest
  non-``none`` op weighs most, and on each that op.
* ``nb201``: per edge the strongest op (``none`` included, as in NAS-Bench-201),
  written as ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence

import numpy as np

from asose_jax.metrics_log import write_json
from asose_jax.operations import check_op_names
from asose_jax.spaces import darts as darts_space
from asose_jax.spaces import nb201 as nb201_space
from asose_jax.spaces.chain import ChainArchitecture, ChainBlockSpec


@dataclasses.dataclass(frozen=True)
class ChainGenotype:
    """A discrete chain network: per block its op and, for grown networks, its stage, gate and branch ops.

    ``widths``: the channels of each stage relative to the network's initial channels. Empty fields take
    the ungrown layout: blocks from ``len(ops) // 2`` on in stage 1, widths (1, 2), no gates, no branches.
    """

    ops: tuple[str, ...]
    stages: tuple[int, ...] = ()
    gated: tuple[bool, ...] = ()
    branches: tuple[tuple[str, ...], ...] = ()
    widths: tuple[float, ...] = ()

    def __post_init__(self):
        n = len(self.ops)
        defaults = {"stages": tuple(int(i >= n // 2) for i in range(n)), "gated": (False,) * n,
                    "branches": ((),) * n, "widths": (1.0, 2.0)}  # fmt: skip
        for name, default in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, default)

    def architecture(self, init_channels: int) -> ChainArchitecture:
        """The network's layout at ``init_channels`` (stage ``s`` gets ``round(init_channels * widths[s])``)."""
        blocks = tuple(
            ChainBlockSpec(f"block_{i}", stage, gated, len(branches))
            for i, (stage, gated, branches) in enumerate(zip(self.stages, self.gated, self.branches, strict=True))
        )
        channels = tuple(max(1, round(init_channels * w)) for w in self.widths)
        return ChainArchitecture(init_channels, channels, blocks)

    def edge_ops(self) -> list[tuple[tuple[str], ...]]:
        """Per block, its edges' ops (its op, then its branches'), as ``chain_body`` takes them."""
        return [((op,), *((b,) for b in branches)) for op, branches in zip(self.ops, self.branches, strict=True)]


@dataclasses.dataclass(frozen=True)
class DartsGenotype:
    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class NB201Genotype:
    nodes: tuple[tuple[tuple[str, int], ...], ...]  # node i: ((op, input node), ...) for inputs 0..i-1

    def to_string(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|" for node in self.nodes)

    @classmethod
    def from_string(cls, arch: str) -> NB201Genotype:
        try:
            nodes = []
            for node in arch.split("+"):
                edges = [e.split("~") for e in node.strip("|").split("|")]
                nodes.append(tuple((op, int(j)) for op, j in edges))
        except ValueError as err:
            raise ValueError(f"malformed NAS-Bench-201 string {arch!r}: {err}") from None
        return cls(tuple(nodes))


Genotype = ChainGenotype | DartsGenotype | NB201Genotype
_SPACE_OF = {ChainGenotype: "chain", DartsGenotype: "darts", NB201Genotype: "nb201"}


def _best_op(row: np.ndarray, op_names: Sequence[str], exclude_none: bool) -> tuple[str, float]:
    order = [k for k in np.argsort(-row, kind="stable") if not (exclude_none and op_names[k] == "none")]
    if not order:
        raise ValueError("cannot derive a genotype: every candidate op is 'none'")
    return op_names[order[0]], float(row[order[0]])


def _softmax(logits) -> np.ndarray:
    a = np.asarray(logits, np.float64)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _darts_cell(weights: np.ndarray, op_names: Sequence[str]) -> tuple[tuple[str, int], ...]:
    edges = darts_space.edge_inputs()
    cell = []
    for node in range(darts_space.STEPS):
        rows = [(j, _best_op(weights[e], op_names, True)) for e, (i, j) in enumerate(edges) if i == node]
        rows.sort(key=lambda r: -r[1][1])
        cell.extend((op, j) for j, (op, _) in rows[:2])  # strongest first, as DARTS lists them
    return tuple(cell)


def derive_genotype(
    space: str, logits: dict, op_names: Sequence[str], architecture: ChainArchitecture | None = None
) -> Genotype:
    """The discrete architecture that ``logits`` (``{name: [E, K]}``) prefer. A chain's ``architecture``
    (default: ungrown, one row per block) says which rows are blocks and which are branches."""
    op_names = check_op_names(op_names)
    if space == "chain":
        ops = [_best_op(row, op_names, True)[0] for row in _softmax(logits["blocks"])]
        if architecture is None:
            return ChainGenotype(tuple(ops))
        if len(ops) != architecture.num_edges:
            raise ValueError(f"{len(ops)} logit rows for a chain architecture of {architecture.num_edges} edges")
        starts = np.cumsum([0] + [b.edges for b in architecture.blocks])
        return ChainGenotype(
            tuple(ops[s] for s in starts[:-1]),
            tuple(b.stage for b in architecture.blocks),
            tuple(b.gated for b in architecture.blocks),
            tuple(tuple(ops[s + 1 : s + b.edges]) for s, b in zip(starts, architecture.blocks, strict=False)),
            tuple(c / architecture.init_channels for c in architecture.stage_channels),
        )
    if space == "darts":
        concat = tuple(range(2, 2 + darts_space.STEPS))
        return DartsGenotype(
            _darts_cell(_softmax(logits["normal"]), op_names),
            concat,
            _darts_cell(_softmax(logits["reduce"]), op_names),
            concat,
        )
    if space == "nb201":
        w = _softmax(logits["cell"])
        ops = [_best_op(row, op_names, False)[0] for row in w]
        nodes, e = [], 0
        for i in range(1, nb201_space.NODES):
            nodes.append(tuple((ops[e + j], j) for j in range(i)))
            e += i
        return NB201Genotype(tuple(nodes))
    raise ValueError(f"unknown search space {space!r}; use one of chain, darts, nb201")


def genotype_to_json(genotype: Genotype) -> dict:
    """A JSON-ready dict with a ``space`` key; nb201 adds the NAS-Bench-201 string as ``arch_str``."""
    out = {"space": _SPACE_OF[type(genotype)], **json.loads(json.dumps(dataclasses.asdict(genotype)))}
    if isinstance(genotype, NB201Genotype):
        out["arch_str"] = genotype.to_string()
    return out


def _pairs(value) -> tuple[tuple[str, int], ...]:
    return tuple((str(op), int(j)) for op, j in value)


def check_genotype(genotype: Genotype) -> Genotype:
    """Raises ValueError unless op names are known and the wiring fits the space's cell."""
    if isinstance(genotype, ChainGenotype):
        if not genotype.ops:
            raise ValueError("a chain genotype needs at least one op")
        n = len(genotype.ops)
        for name in ("stages", "gated", "branches"):
            if (got := len(getattr(genotype, name))) != n:
                raise ValueError(f"a chain genotype needs one {name} entry per op ({n}), got {got}")
        if any(not w > 0 for w in genotype.widths):
            raise ValueError(f"chain stage widths must be positive, got {list(genotype.widths)}")
        check_op_names([*genotype.ops, *(op for branches in genotype.branches for op in branches)])
        genotype.architecture(1)  # stage order and gates
    elif isinstance(genotype, DartsGenotype):
        for name, cell in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            if len(cell) != 2 * darts_space.STEPS:
                raise ValueError(
                    f"a DARTS {name} cell needs {2 * darts_space.STEPS} (op, input) pairs, got {len(cell)}"
                )
            for p, (_, j) in enumerate(cell):
                if not 0 <= j < 2 + p // 2:
                    raise ValueError(
                        f"DARTS {name} pair {p} (node {p // 2}) reads state {j}; valid are 0..{p // 2 + 1}"
                    )
            check_op_names([op for op, _ in cell])
        for concat in (genotype.normal_concat, genotype.reduce_concat):
            if not set(concat) <= set(range(2, 2 + darts_space.STEPS)):
                raise ValueError(f"DARTS concat {concat} must list nodes among 2..{1 + darts_space.STEPS}")
    else:
        expected = [tuple(range(i)) for i in range(1, nb201_space.NODES)]
        if [tuple(j for _, j in node) for node in genotype.nodes] != expected:
            raise ValueError(f"NAS-Bench-201 cell must have node i read nodes 0..i-1, got {genotype.to_string()}")
        check_op_names([op for node in genotype.nodes for op, _ in node])
    return genotype


def genotype_from_json(data: dict) -> Genotype:
    """Inverse of ``genotype_to_json``; raises ValueError naming what is missing or wrong."""
    if not isinstance(data, dict) or "space" not in data:
        raise ValueError("genotype JSON must be an object with a 'space' key (chain, darts or nb201)")
    space = data["space"]
    try:
        if space == "chain":
            genotype = ChainGenotype(
                tuple(str(op) for op in data["ops"]),
                tuple(int(s) for s in data.get("stages", ())),
                tuple(bool(g) for g in data.get("gated", ())),
                tuple(tuple(str(op) for op in b) for b in data.get("branches", ())),
                tuple(float(w) for w in data.get("widths", ())),
            )
        elif space == "darts":
            genotype = DartsGenotype(
                _pairs(data["normal"]),
                tuple(int(i) for i in data["normal_concat"]),
                _pairs(data["reduce"]),
                tuple(int(i) for i in data["reduce_concat"]),
            )
        elif space == "nb201":
            if "nodes" in data:
                genotype = NB201Genotype(tuple(_pairs(node) for node in data["nodes"]))
            else:
                genotype = NB201Genotype.from_string(data["arch_str"])
        else:
            raise ValueError(f"unknown space {space!r}; use chain, darts or nb201")
    except KeyError as err:
        raise ValueError(f"genotype JSON for space {space!r} lacks the key {err}") from None
    except TypeError as err:
        raise ValueError(f"genotype JSON for space {space!r} is malformed: {err}") from None
    return check_genotype(genotype)


def save_genotype(path: str | pathlib.Path, genotype: Genotype) -> None:
    """Writes the genotype's JSON atomically (a kill mid-write leaves the previous file)."""
    write_json(path, genotype_to_json(genotype))


def load_genotype(path: str | pathlib.Path) -> Genotype:
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read genotype file {path}: {err}") from None
    try:
        return genotype_from_json(data)
    except ValueError as err:
        raise ValueError(f"genotype file {path}: {err}") from None


def genotype_edge_weights(genotype: Genotype, op_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The genotype as supernet edge weights ``{name: [E, K]}``: one-hot on each kept edge's op, zero rows
    on edges the genotype drops (DARTS keeps two inputs per node). Evaluating the supernet with these
    (single-path) runs exactly the derived discrete architecture on the shared weights."""
    op_names = check_op_names(op_names)
    column = {op: k for k, op in enumerate(op_names)}

    def one_hot(edges: int, chosen: dict[int, str]) -> np.ndarray:
        missing = sorted({op for op in chosen.values()} - set(column))
        if missing:
            raise ValueError(f"genotype uses ops {missing} that the search's op set {list(op_names)} lacks")
        w = np.zeros((edges, len(op_names)), np.float32)
        for e, op in chosen.items():
            w[e, column[op]] = 1.0
        return w

    if isinstance(genotype, ChainGenotype):  # rows: each block's op, then its branches' ops
        ops = [op for edges in genotype.edge_ops() for (op,) in edges]
        return {"blocks": one_hot(len(ops), dict(enumerate(ops)))}
    if isinstance(genotype, DartsGenotype):
        edge_of = {edge: e for e, edge in enumerate(darts_space.edge_inputs())}
        edges = len(edge_of)
        return {
            name: one_hot(edges, {edge_of[(p // 2, j)]: op for p, (op, j) in enumerate(cell)})
            for name, cell in (("normal", genotype.normal), ("reduce", genotype.reduce))
        }
    edge_of = {edge: e for e, edge in enumerate(nb201_space.edge_inputs())}
    chosen = {edge_of[(i + 1, j)]: op for i, node in enumerate(genotype.nodes) for op, j in node}
    return {"cell": one_hot(len(edge_of), chosen)}


def _darts(normal: list, reduce: list) -> DartsGenotype:
    concat = tuple(range(2, 2 + darts_space.STEPS))
    return DartsGenotype(_pairs(normal), concat, _pairs(reduce), concat)


# Published cells, as their authors' code lists them (normal / reduce: (op, input state) pairs, two per node).
PUBLISHED: dict[str, Genotype] = {
    # DARTS (Liu et al., ICLR 2019): first order (V1) and second order (V2), 3.3M parameters at 20 cells / 36 channels.
    "DARTS_V1": _darts(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    ),
    "DARTS_V2": _darts(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    ),
    # GDAS (Dong & Yang, CVPR 2019), as in D-X-Y/AutoDL-Projects.
    "GDAS": _darts(
        [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_5x5", 4), ("sep_conv_3x3", 3)],
        [("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
         ("dil_conv_5x5", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
    ),
    # PC-DARTS (Xu et al., ICLR 2020), the CIFAR-10 cell.
    "PC_DARTS": _darts(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    ),
    # The best NAS-Bench-201 cell on CIFAR-10.
    "NB201_BEST": NB201Genotype.from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    ),
}  # fmt: skip


def resolve_genotype(name_or_path: str) -> Genotype:
    """A published genotype by name (``PUBLISHED``), or a genotype JSON file (e.g. a search's
    ``RUN_DIR/genotype.json``; a run directory itself is accepted too)."""
    if name_or_path in PUBLISHED:
        return PUBLISHED[name_or_path]
    path = pathlib.Path(name_or_path)
    if path.is_dir():
        path = path / "genotype.json"
    if not path.exists():
        raise ValueError(
            f"--genotype {name_or_path!r} is neither a file nor a published genotype; "
            f"use a genotype.json or one of {', '.join(PUBLISHED)}"
        )
    return load_genotype(path)
