"""Genotypes: discrete architectures derived from logits, their JSON form, and the published cells.

Each space defines its genotype (``chain``: per block the strongest op other than ``none``; ``darts``: per node
the two strongest inputs and their ops; ``nb201``: per edge the strongest op, ``none`` included); this module
is the space-independent front: it dispatches through ``space_of``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence

import flax.linen as nn
import numpy as np

from asose_jax.nn.operations import check_op_names
from asose_jax.spaces import SPACES, get_space, space_of
from asose_jax.spaces.chain import ChainGenotype
from asose_jax.spaces.darts import PUBLISHED as PUBLISHED_DARTS
from asose_jax.spaces.darts import DartsGenotype
from asose_jax.spaces.nb201 import NB201_BEST, NB201Genotype

Genotype = ChainGenotype | DartsGenotype | NB201Genotype
PUBLISHED: dict[str, Genotype] = {**PUBLISHED_DARTS, "NB201_BEST": NB201_BEST}


def derive_genotype(space: str, logits: dict, op_names: Sequence[str], model: nn.Module | None = None) -> Genotype:
    """The discrete architecture of ``space`` that ``logits`` (``{name: [E, K]}``) prefer. ``model``: the (grown)
    supernet the logits belong to, where its layout says which rows are which (default: ungrown)."""
    return get_space(space).derive_genotype(logits, check_op_names(op_names), model)


def genotype_to_json(genotype: Genotype) -> dict:
    """A JSON-ready dict with a ``space`` key; nb201 adds the NAS-Bench-201 string as ``arch_str``."""
    out = {"space": genotype.space, **json.loads(json.dumps(dataclasses.asdict(genotype)))}
    if hasattr(genotype, "to_string"):
        out["arch_str"] = genotype.to_string()
    return out


def check_genotype(genotype: Genotype) -> Genotype:
    """Raises ValueError unless op names are known and the wiring fits the space's cell."""
    space_of(genotype).check_genotype(genotype)
    return genotype


def genotype_from_json(data: dict) -> Genotype:
    """Inverse of ``genotype_to_json``; raises ValueError naming what is missing or wrong."""
    if not isinstance(data, dict) or "space" not in data:
        raise ValueError("genotype JSON must be an object with a 'space' key (chain, darts or nb201)")
    space = data["space"]
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; use {', '.join(SPACES)}")
    try:
        genotype = get_space(space).genotype_from_json(data)
    except KeyError as err:
        raise ValueError(f"genotype JSON for space {space!r} lacks the key {err}") from None
    except TypeError as err:
        raise ValueError(f"genotype JSON for space {space!r} is malformed: {err}") from None
    return check_genotype(genotype)


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
    return space_of(genotype).genotype_edge_weights(genotype, check_op_names(op_names))


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
