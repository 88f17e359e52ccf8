"""The NAS-Bench-201 genotype: per edge the strongest op (``none`` included, as in NAS-Bench-201), written as
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar


@dataclasses.dataclass(frozen=True)
class NB201Genotype:
    """``nodes[i - 1]``: node i's ``(op, input node)`` pairs for inputs 0..i-1."""

    space: ClassVar[str] = "nb201"
    nodes: tuple[tuple[tuple[str, int], ...], ...]

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


# The best NAS-Bench-201 cell on CIFAR-10.
NB201_BEST = NB201Genotype.from_string(
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
)
