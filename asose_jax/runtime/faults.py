"""Deterministic fault points, for tests of crash safety: ``ASOSE_FAULT=NAME[@N]`` ends the process at once with
exit status 137 (as SIGKILL would: no handler, no flush, no cleanup) the N-th time (default: the first) this
process passes the point ``NAME``.

Points: ``step`` (after a training step), ``epoch_end`` (after an epoch's record, before its checkpoint),
``metrics_append`` (half of a ``metrics.jsonl`` line written), ``checkpoint_saved`` (after a save was started),
``checkpoint_commit`` (a checkpoint fully written, not yet renamed into place), ``checkpoint_delete`` (orbax
removing a checkpoint beyond the newest kept: its ``state`` removed, the rest not yet), ``growth_inside`` (the
network grown, nothing recorded), ``growth_after`` (the growth recorded, not yet checkpointed), ``shrink_after``
(progressive shrinking recorded, not yet checkpointed), ``early_stop`` (the
plateau stop recorded, the cycle end not yet checkpointed), ``final_plots`` and ``final_summary`` (while the
finished run writes its plots and, last, ``summary.json``). Unset, every point is a dictionary lookup.
"""

from __future__ import annotations

import functools
import os

ENV = "ASOSE_FAULT"
POINTS = ("step", "epoch_end", "metrics_append", "checkpoint_saved", "checkpoint_commit", "checkpoint_delete",
          "growth_inside", "growth_after", "shrink_after", "early_stop", "final_plots", "final_summary")  # fmt: skip
_passes: dict[str, int] = {}


@functools.cache
def armed() -> tuple[str, int] | None:
    """``(point, n)`` from ``ASOSE_FAULT``, or None; raises ValueError for an unknown point."""
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    point, _, n = spec.partition("@")
    if point not in POINTS or not (n or "1").isdigit() or int(n or 1) < 1:
        raise ValueError(f"{ENV}={spec!r}: use POINT[@N] with POINT one of {', '.join(POINTS)} and N >= 1")
    return point, int(n or 1)


def armed_at(name: str) -> bool:
    """Whether ``ASOSE_FAULT`` names the point ``name`` (for points that must prepare, e.g. write half a line)."""
    spec = armed()
    return spec is not None and spec[0] == name


def fault_point(name: str) -> None:
    """Ends the process here if ``ASOSE_FAULT`` names this point and this is its N-th pass."""
    spec = armed()
    if spec is None or spec[0] != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == spec[1]:
        os._exit(137)
