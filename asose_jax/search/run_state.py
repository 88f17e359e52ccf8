"""Where a search run is, as typed data: the JSON half of every checkpoint (the other half is the state pytree)."""

from __future__ import annotations

import dataclasses

from asose_jax.runtime.session import SessionProgress


@dataclasses.dataclass(frozen=True)
class Position:
    """Where to continue: cycle (from 1), phase index in the cycle, epoch (from 1) and batch in the epoch."""

    cycle: int = 1
    phase: int = 0
    epoch: int = 1
    batch: int = 0

    def describe(self) -> str:
        return f"cycle {self.cycle}, phase {self.phase + 1}, epoch {self.epoch}, batch {self.batch}"

    def same_epoch(self, cycle: int, phase: int, epoch: int) -> bool:
        return (self.cycle, self.phase, self.epoch) == (cycle, phase, epoch)


@dataclasses.dataclass
class RunProgress(SessionProgress):
    """Everything besides the arrays that a resumed search needs to continue bit for bit.

    ``epoch_history``: the fetched per-step metrics of the unfinished epoch; ``cycle_accuracies``: the
    cycle-final validation accuracies; ``last_val_acc``: the newest cycle epoch's; ``phase_start``: the global step
    at which the current phase began; ``growth``: one ``{cycle, step, kind, where}`` per growth;
    ``architecture``: the grown model's layout (the space's ``architecture_json``), or None for a space without
    growth; ``selection``: one record per edge that perturbation selection decided, in its order (the position's
    cycle is then ``cycles + 1`` and its phase the edge's index); ``shrinking``: one ``{cycle, measure, dropped}`` per
    progressive shrinking, ``dropped`` the ops each edge dropped. The session's fields (metrics length, wall time,
    saves, skipped updates) are ``SessionProgress``'s.
    """

    architecture: dict | None = None
    position: Position = Position()
    epoch_history: list[dict] = dataclasses.field(default_factory=list)
    cycle_accuracies: list[float] = dataclasses.field(default_factory=list)
    last_val_acc: float | None = None
    stopped_early: bool = False
    phase_start: int = 0
    growth: list[dict] = dataclasses.field(default_factory=list)
    selection: list[dict] = dataclasses.field(default_factory=list)
    shrinking: list[dict] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        """A deep copy as plain JSON data (a checkpoint serialises it in the background)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RunProgress:
        return cls(**{**data, "position": Position(**data["position"])})
