"""The interface every search space implements, and the growth vocabulary it shares.

A space owns everything that depends on its architecture: its supernet (``supernet``), how logits become a
genotype and back (``derive_genotype``, ``genotype_from_json``, ``check_genotype``, ``genotype_edge_weights``),
the discrete network of a genotype (``network``) and, for spaces that grow, its mutations. The rest of the
library asks ``asose_jax.spaces.space_of(model_or_genotype)`` for the space and never which one it has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import numpy as np

GROWTH_KINDS = ("depth", "width", "branch")


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One growth step. ``target``: the insertion index of the new block (depth), the stage (width) or the
    block index (branch); ``factor``: the width multiplier (width only)."""

    kind: str
    target: int
    factor: float = 1.0

    def __post_init__(self):
        if self.kind not in GROWTH_KINDS:
            raise ValueError(f"unknown growth kind {self.kind!r}; use one of {', '.join(GROWTH_KINDS)}")


@dataclasses.dataclass(frozen=True)
class GrowthCaps:
    """Limits on the grown network: blocks, any stage's width over its initial one, branches per block, weights."""

    max_depth: int
    max_width: float
    max_branches: int
    max_params: int


def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64 on the host: ``[E, K] -> [E, K]``."""
    a = np.asarray(logits, np.float64)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def best_op(row: np.ndarray, op_names: Sequence[str], exclude_none: bool) -> tuple[str, float]:
    """The strongest op of one edge's weights ``[K]`` and its weight (``none`` skipped if ``exclude_none``)."""
    order = [k for k in np.argsort(-row, kind="stable") if not (exclude_none and op_names[k] == "none")]
    if not order:
        raise ValueError("cannot derive a genotype: every candidate op is 'none'")
    return op_names[order[0]], float(row[order[0]])


def pairs(value) -> tuple[tuple[str, int], ...]:
    """``[[op, j], ...]`` (e.g. from JSON) as ``((op, j), ...)``."""
    return tuple((str(op), int(j)) for op, j in value)


def one_hot_edges(edges: int, chosen: dict[int, str], op_names: Sequence[str]) -> np.ndarray:
    """``[edges, K]`` float32: one-hot on ``op_names.index(chosen[e])`` for each chosen edge, zero rows elsewhere."""
    column = {op: k for k, op in enumerate(op_names)}
    if missing := sorted(set(chosen.values()) - set(column)):
        raise ValueError(f"genotype uses ops {missing} that the search's op set {list(op_names)} lacks")
    w = np.zeros((edges, len(op_names)), np.float32)
    for e, op in chosen.items():
        w[e, column[op]] = 1.0
    return w


class SearchSpace:
    """A search space. Subclasses set the class attributes and implement the methods without a default.

    ``name``: the ``--space`` value; ``op_set``: the default op set (``OP_SETS`` key); ``search_defaults``:
    ``(initial channels, depth)`` of the supernet; ``eval_defaults``: those of the discrete network (depth
    None: the genotype's own); ``depth_field``: the discrete network's attribute that holds its depth;
    ``growth_kinds``: its mutations (see ``asose_jax.search.growth`` for the rule);
    ``auxiliary_head``: whether the discrete network has DARTS's auxiliary classifier; ``scans_cells``: which of
    its networks (``"supernet"``, ``"network"``) have a ``scan_cells`` attribute (repeated cells, or in the DARTS
    supernet a cell's edges, through one compiled body; see ``nb201`` and ``darts``); ``scanned_unrecorded``:
    whether its supernet was scanned in runs saved before checkpoints recorded their layout; ``nas_bench_201``:
    whether a NAS-Bench-201 table scores its cells; ``one_op_per_row``: whether its genotype keeps every logit row's
    strongest op, ``none`` included (each row one edge), which perturbation selection needs
    (``asose_jax.search.selection``).
    """

    name: str
    op_set: str
    search_defaults: tuple[int, int]
    eval_defaults: tuple[int, int | None]
    depth_field: str
    min_eval_depth: int = 1
    auxiliary_head: bool = False
    scans_cells: tuple[str, ...] = ()
    growth_kinds: tuple[str, ...] = ()
    scanned_unrecorded: bool = False
    nas_bench_201: bool = False
    one_op_per_row: bool = False

    # --- supernet and genotypes -------------------------------------------------------------------
    def supernet(self, channels: int, depth: int, num_classes: int, op_names: tuple[str, ...]) -> nn.Module:
        """The search network: ``model.apply(variables, images, arch_weights, train=..., single_path=...)``."""
        raise NotImplementedError

    def derive_genotype(self, logits: dict, op_names: Sequence[str], model: nn.Module | None = None):
        """The discrete architecture that ``logits`` (``{name: [E, K]}``) prefer; ``model``: the (grown)
        supernet they belong to, when its layout matters."""
        raise NotImplementedError

    def genotype_from_json(self, data: dict):
        """The genotype in ``data`` (``genotype_to_json``'s output); KeyError/TypeError on bad input."""
        raise NotImplementedError

    def check_genotype(self, genotype) -> None:
        """Raises ValueError unless op names are known and the wiring fits the space."""
        raise NotImplementedError

    def genotype_edge_weights(self, genotype, op_names: Sequence[str]) -> dict[str, np.ndarray]:
        """The genotype as one-hot supernet edge weights ``{name: [E, K]}`` (zero rows on dropped edges)."""
        raise NotImplementedError

    def network(self, genotype, channels: int, depth: int | None, num_classes: int, auxiliary: bool) -> nn.Module:
        """The discrete network of ``genotype`` (see ``asose_jax.spaces.networks``)."""
        raise NotImplementedError

    def edge_names(self, model: nn.Module) -> dict[str, list[str]] | None:
        """Labels of the logit rows, where rows are not simply numbered (None)."""
        return None

    def edge_label(self, model: nn.Module, name: str, row: int) -> str:
        """How a console line names logit row ``row`` of array ``name``: its ``edge_names`` label or ``name[row]``."""
        names = self.edge_names(model)
        return names[name][row] if names else f"{name}[{row}]"

    # --- growth (spaces with growth_kinds) --------------------------------------------------------
    def architecture_json(self, model: nn.Module) -> dict | None:
        """What growth can change about ``model``, as JSON (None for spaces without growth)."""
        return None

    def with_architecture(self, model: nn.Module, data: dict | None) -> nn.Module:
        """``model`` rebuilt with the grown architecture ``data`` (``architecture_json``'s output)."""
        return model

    def grown_model(self, model: nn.Module, mutation: Mutation) -> nn.Module:
        """``model`` with ``mutation`` applied to its architecture (no weights involved)."""
        raise ValueError(f"{mutation.kind} growth does not apply to the {self.name} space")

    def depth_of(self, model: nn.Module) -> int:
        """What ``--max-depth`` caps."""
        raise NotImplementedError

    def describe(self, model: nn.Module, mutation: Mutation) -> str:
        """A short description of where ``mutation`` grows ``model``."""
        raise NotImplementedError

    def choose_target(self, model: nn.Module, kind: str) -> int:
        """Where a growth of ``kind`` goes."""
        raise NotImplementedError

    def stage_channels(self, model: nn.Module, stage: int) -> int:
        """Channels of ``stage`` (spaces with width growth)."""
        raise NotImplementedError

    def exceeded_layout_cap(self, grown: nn.Module, caps: GrowthCaps) -> str | None:
        """The width or branch cap ``grown`` breaks, if the space has such caps."""
        return None

    def logit_rows(self, old: nn.Module, new: nn.Module) -> dict[tuple[str, ...], np.ndarray]:
        """For each logit array whose rows growth moves, the new row of each old row."""
        return {}
