"""Preemption-safe checkpoints of a run (a search, or training from scratch): the state pytree plus the
driver's progress, with orbax.

A search's checkpoint holds two items (training from scratch saves its state dict and its epoch, wall time
and ``metrics.jsonl`` length the same way):

* ``state``: the whole train-state dict (weights, BN state, logits, both optimiser states, PRNG key
  data, global step);
* ``progress``: JSON with the position in the run (cycle, phase, epoch, batch), the per-step metrics
  of the unfinished epoch, the cycle-final accuracies, the length of ``metrics.jsonl`` at that point
  and the wall time so far.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
during a save leaves the previous checkpoints valid; incomplete directories are ignored and removed. It removes
checkpoints beyond the newest ``keep`` only after a newer one is committed, so a crash during a removal leaves the
newest valid and an older one half removed: never restored, and removed by the next save or at ``close``.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import orbax.checkpoint as ocp

from asose_jax.runtime.faults import armed_at, fault_point

CHECKPOINT_DIR = "checkpoints"


@functools.cache
def _fault_point_before_commit() -> None:
    """With ``ASOSE_FAULT=checkpoint_commit``: the fault point inside orbax's save, after every file of the
    checkpoint is written and before its temporary directory is renamed into place (the commit)."""
    from orbax.checkpoint._src.path import atomicity  # orbax's own commit step; only tests arm this

    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize_after_fault_point(self):
        fault_point("checkpoint_commit")
        return await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize_after_fault_point


@functools.cache
def _fault_point_inside_delete() -> None:
    """With ``ASOSE_FAULT=checkpoint_delete``: the fault point inside orbax's removal of a checkpoint beyond the
    newest kept (after a newer one was committed), with its ``state`` item removed and the rest not yet."""
    from orbax.checkpoint._src.path import deleter  # orbax's own removal; only tests arm this

    delete = deleter.StandardCheckpointDeleter._delete_step_permanently

    def delete_around_fault_point(self, step, delete_target):
        (delete_target / "state").rmtree(missing_ok=True)  # a half-removed checkpoint has none
        fault_point("checkpoint_delete")
        return delete(self, step, delete_target)

    deleter.StandardCheckpointDeleter._delete_step_permanently = delete_around_fault_point


def has_checkpoint(workdir: str | pathlib.Path) -> bool:
    """Whether ``workdir`` holds a complete checkpoint (incomplete ones have non-numeric temporary names; a
    half-removed one is older than a complete one)."""
    directory = pathlib.Path(workdir) / CHECKPOINT_DIR
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


class Checkpoints:
    """The checkpoints of one run directory (``workdir/checkpoints/<save index>``), newest ``keep`` kept."""

    def __init__(self, workdir: str | pathlib.Path, keep: int):
        if armed_at("checkpoint_commit"):
            _fault_point_before_commit()
        if armed_at("checkpoint_delete"):
            _fault_point_inside_delete()
        self.keep = keep
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(pathlib.Path(workdir).resolve() / CHECKPOINT_DIR, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, progress: dict) -> None:
        """Saves checkpoint ``step`` asynchronously (after waiting for the previous save).

        ``progress`` is copied now: orbax serialises JSON in a background thread, and the caller goes
        on changing its dict. (The state arrays are immutable, so they need no copy.)
        """
        snapshot = json.loads(json.dumps(progress))
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(snapshot))
        if not self.manager.save(step, args=args):
            raise RuntimeError(f"orbax declined to save checkpoint {step}")
        fault_point("checkpoint_saved")

    def restore(self, like_state: dict, step: int | None = None) -> tuple[dict, dict]:
        """``(state, progress)`` of ``step`` (default: the newest); ``like_state`` gives the structure."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore())
        )
        return restored["state"], restored["progress"]

    def restore_progress(self, step: int | None = None) -> dict:
        """Only the JSON ``progress`` of ``step`` (default: the newest), e.g. to rebuild a grown model first."""
        step = self.latest_step() if step is None else step
        return self.manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))["progress"]

    def close(self) -> None:
        """Waits for the last save, then removes the checkpoints beyond the newest ``keep`` that a crash during
        orbax's removal left (orbax removes them after a save, and a resumed run may save no more)."""
        self.manager.wait_until_finished()
        for step in sorted(self.manager.all_steps())[: -self.keep]:
            self.manager.delete(step)
        self.manager.close()
