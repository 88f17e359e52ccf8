"""Genotypes: discrete architectures derived from logits, their JSON form, and the published cells.

Each space defines its genotype (``chain``: per block the strongest op other than ``none``; ``darts``: per node
the two strongest inputs and their ops; ``nb201``: per edge the strongest op, ``none`` included); this module
is the space-independent front: it dispatches through ``space_of``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import reprlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import numpy as np

from asose_jax.nn.operations import OPS, check_op_names
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
    """Inverse of ``genotype_to_json``; raises one ValueError naming the field that is missing or wrong."""
    if not isinstance(data, dict) or "space" not in data:
        raise ValueError("genotype JSON must be an object with a 'space' key (chain, darts or nb201)")
    space = data["space"]
    if not isinstance(space, str) or space not in SPACES:
        raise ValueError(f"genotype JSON field 'space' must be one of {', '.join(SPACES)}, got {_shown(space)}")
    return check_genotype(get_space(space).genotype_from_json(GenotypeJson(data)))


Parse = Callable[[Any, str], Any]  # (value, field path) -> the checked value
_REQUIRED = object()


class GenotypeJson:
    """A genotype JSON object, as a space's ``genotype_from_json`` reads it: each reader returns one field as
    checked Python values (tuples for lists), or ``default`` where the field is absent, and raises one
    ValueError naming the field (``normal[3][0]``) and what belongs there. Wiring and ranges that depend on
    other fields are ``check_genotype``'s."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str) -> str:
        return self._read(key, _string)

    def op_names(self, key: str, default=_REQUIRED) -> tuple[str, ...]:
        return self._read(key, _list_of(_op_name), default)

    def op_name_lists(self, key: str, default=_REQUIRED) -> tuple[tuple[str, ...], ...]:
        return self._read(key, _list_of(_list_of(_op_name)), default)

    def op_pairs(self, key: str) -> tuple[tuple[str, int], ...]:
        """``[[op, input], ...]``."""
        return self._read(key, _list_of(_op_pair))

    def op_pair_lists(self, key: str) -> tuple[tuple[tuple[str, int], ...], ...]:
        return self._read(key, _list_of(_list_of(_op_pair)))

    def integers(self, key: str, low: int, high: int | None = None, default=_REQUIRED) -> tuple[int, ...]:
        return self._read(key, _list_of(_integer(low, high)), default)

    def booleans(self, key: str, default=_REQUIRED) -> tuple[bool, ...]:
        return self._read(key, _list_of(_boolean), default)

    def numbers(self, key: str, default=_REQUIRED) -> tuple[float, ...]:
        """Finite numbers."""
        return self._read(key, _list_of(_number), default)

    def _read(self, key: str, parse: Parse, default=_REQUIRED):
        if key in self.data:
            return parse(self.data[key], key)
        if default is _REQUIRED:
            raise ValueError(f"genotype JSON for space {self.data['space']!r} lacks the key {key!r}")
        return default


def _shown(value) -> str:
    return reprlib.repr(value)  # long lists, strings and numbers abridged


def _invalid(path: str, what: str, value) -> ValueError:
    return ValueError(f"genotype JSON field {path!r} must be {what}, got {_shown(value)}")


def _list_of(parse: Parse) -> Parse:
    def parse_list(value, path: str) -> tuple:
        if not isinstance(value, list | tuple):
            raise _invalid(path, "a list", value)
        return tuple(parse(item, f"{path}[{i}]") for i, item in enumerate(value))

    return parse_list


def _string(value, path: str) -> str:
    if not isinstance(value, str):
        raise _invalid(path, "a string", value)
    return value


def _op_name(value, path: str) -> str:
    if isinstance(value, str) and value in OPS:
        return value
    got = f"the unknown op name {_shown(value)}" if isinstance(value, str) else _shown(value)
    raise ValueError(f"genotype JSON field {path!r} must be an op name (one of {', '.join(OPS)}), got {got}")


def _op_pair(value, path: str) -> tuple[str, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _invalid(path, "an [op name, input] pair", value)
    return _op_name(value[0], f"{path}[0]"), _integer(0)(value[1], f"{path}[1]")


def _integer(low: int, high: int | None = None) -> Parse:
    what = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"

    def parse_integer(value, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise _invalid(path, what, value)
        return value

    return parse_integer


def _boolean(value, path: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(path, "true or false", value)
    return value


def _number(value, path: str) -> float:
    # Exact comparison: no float overflow for huge integers, and False for inf and nan.
    if isinstance(value, bool) or not isinstance(value, int | float) or not abs(value) <= sys.float_info.max:
        raise _invalid(path, "a finite number", value)
    return float(value)


def load_genotype(path: str | pathlib.Path) -> Genotype:
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError, RecursionError) as err:  # ValueError: not UTF-8, not JSON, a too long integer
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
