"""One run in progress, search or training alike (``RunSession``): the run directory's ``metrics.jsonl``,
checkpoints with the wall time, stop signals, the step loop (fetching metrics, the NaN check, the progress bar,
step records, checkpoints inside epochs), epoch means, evaluation sums, the console lines and the finish sequence.

``asose_jax.search.search_run.SearchRun`` and ``asose_jax.train.train_run.TrainRun`` extend it with what differs:
the phases, growth and genotype of a search; recipes, EMA and drop-path of training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from asose_jax.runtime.checkpointing import Checkpoints
from asose_jax.runtime.faults import fault_point
from asose_jax.runtime.input_pipeline import eval_batches
from asose_jax.runtime.metrics_log import MetricsWriter, write_json
from asose_jax.runtime.parallel import is_primary, shard_batch
from asose_jax.runtime.progress import Progress, format_duration
from asose_jax.runtime.rundir import Interrupted, catch_stop_signals

SKIPPED = ("skipped", "arch_skipped")  # 1.0 where --nan-policy skip dropped an update


@dataclasses.dataclass
class SessionProgress:
    """What every checkpoint's JSON half holds besides the run's own position: the length of ``metrics.jsonl``
    at the save, the wall time before this session, the checkpoints written (their step numbers) and the
    updates ``--nan-policy skip`` dropped so far."""

    metrics_bytes: int = 0
    wall_time_s: float = 0.0
    saves: int = 0
    skipped_steps: int = 0


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    """How a session logs, checkpoints and treats non-finite steps: ``checked`` names the metrics that must stay
    finite under ``--nan-policy stop``; ``fix`` is the advice a stop gives; ``max_skipped`` bounds the updates
    ``--nan-policy skip`` may drop in the whole run."""

    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    nan_policy: str
    max_skipped: int
    checked: tuple[str, ...]
    fix: str
    total_steps: int


@dataclasses.dataclass(frozen=True)
class StepLoop:
    """One epoch's (or phase's) worth of calls of a jitted iteration, as ``RunSession.run_steps`` runs them.

    ``take(i)`` runs call ``i`` and returns its device metrics (scalars, or ``[K]`` arrays for K steps per call);
    calls ``start..calls-1`` remain; ``fetched`` holds the per-step metrics of the calls before ``start``;
    ``first_step`` is the global step of ``fetched[0]`` minus one; ``record`` is put into every step record;
    ``shown`` lists ``(metric, label, scale)`` for the progress bar; ``save(i, fetched)`` checkpoints with calls
    ``0..i-1`` done; ``program`` names the jitted iteration, compiled on its first call in a session.
    """

    program: str
    take: Callable[[int], dict]
    calls: int
    start: int
    fetched: list[dict]
    first_step: int
    steps_per_call: int
    images_per_call: int
    label: str
    where: str
    record: dict
    shown: Sequence[tuple[str, str, float]]
    save: Callable[[int, list[dict]], None]


def unstack(metrics: dict) -> list[dict]:
    """Host metrics of one call as one dict of floats per step: scalars are one step, ``[K]`` arrays K steps."""
    values = {k: np.asarray(v) for k, v in metrics.items()}
    if all(v.ndim == 0 for v in values.values()):
        return [{k: float(v) for k, v in values.items()}]
    steps = len(next(iter(values.values())))
    return [{k: float(v[i]) for k, v in values.items()} for i in range(steps)]


def epoch_means(fetched: Sequence[dict], scheduled: Sequence[str] = ()) -> dict:
    """Means of the per-step metrics over the steps ``--nan-policy skip`` kept (None for a metric when it kept
    none); ``scheduled`` metrics (learning rate, temperature) are the last step's value, not averaged; with skip
    flags present, ``skipped_steps`` counts the dropped steps."""
    used = [m for m in fetched if not any(m.get(k) for k in SKIPPED)]
    means = {k: float(np.mean([m[k] for m in used])) if used else None
             for k in fetched[0] if k not in (*scheduled, *SKIPPED)}  # fmt: skip
    means.update({k: fetched[-1][k] for k in scheduled if k in fetched[-1]})
    if any(k in fetched[0] for k in SKIPPED):
        means["skipped_steps"] = len(fetched) - len(used)
    return means


def say(line: str) -> None:
    """A console line on stderr (process 0 only): what the run is doing, for the person watching it."""
    if is_primary():
        print(line, file=sys.stderr, flush=True)


@jax.jit
def all_finite(state: dict) -> jax.Array:
    """Whether every floating-point array of ``state`` is finite."""
    floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in floats]))


class RunSession:
    """The run directory side of a run: subclasses set ``state`` (the state dict) and ``progress`` (a
    ``SessionProgress``) and call ``open_session`` before their first save."""

    state: dict
    progress: SessionProgress

    def open_session(self, workdir: pathlib.Path, settings: SessionSettings) -> None:
        """Opens ``metrics.jsonl`` and the checkpoints of ``workdir``, which this process has locked."""
        self.workdir, self.settings = workdir, settings
        self.writer = MetricsWriter(workdir / "metrics.jsonl", enabled=is_primary())
        self.checkpoints = Checkpoints(workdir, settings.keep_checkpoints)
        self.session_start = time.perf_counter()
        self.signal: int | None = None
        self.compiled: set[str] = set()  # the programs called so far (for the model in use)
        self.timed: tuple[int, float] | None = None  # (global step, time) after the first compiled calls
        self.estimated = False  # whether the remaining time was said since the last compilation

    def say(self, line: str) -> None:
        say(line)

    def restore(self, like: dict) -> dict | None:
        """The newest checkpoint's JSON progress, with ``self.state`` restored into the layout of ``like``; cuts
        ``metrics.jsonl`` back to the checkpoint. None (and an empty ``metrics.jsonl``) when there is none."""
        if self.checkpoints.latest_step() is None:
            self.writer.truncate(0)  # a run killed before its first checkpoint starts over
            return None
        self.state, progress = self.checkpoints.restore(like)
        self.writer.truncate(progress["metrics_bytes"])
        return progress

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """SIGTERM and SIGINT request a save and stop at the next step; checkpoints are committed and the
        metrics file closed on the way out, however the run ends."""
        restore_signals = catch_stop_signals(lambda signum: setattr(self, "signal", signum))
        try:
            yield
        finally:
            try:
                self.checkpoints.close()
            finally:
                restore_signals()
                self.writer.close()

    def wall_time(self) -> float:
        return self.progress.wall_time_s + time.perf_counter() - self.session_start

    def checkpoint(self, progress_json: Callable[[], dict]) -> None:
        """Checkpoints ``state`` with the JSON ``progress_json()`` (called after the session fields are set);
        refuses a non-finite state, so the newest checkpoint is always a good one. Raises ``Interrupted`` when a
        stop signal came."""
        if not bool(all_finite(self.state)):
            raise FloatingPointError(
                f"non-finite weights, BN state or other state after step {int(self.state['step'])}; the last "
                f"checkpoint is kept: {self.settings.fix}"
            )
        progress, now = self.progress, time.perf_counter()
        progress.wall_time_s, self.session_start = progress.wall_time_s + now - self.session_start, now
        progress.metrics_bytes, progress.saves = self.writer.tell(), progress.saves + 1
        self.checkpoints.save(progress.saves, self.state, progress_json())
        if self.signal is not None:
            raise Interrupted(self.signal, int(self.state["step"]), self.workdir)

    def check_steps(self, new: Sequence[dict], first_step: int, where: str) -> None:
        """``--nan-policy stop``: FloatingPointError at the first non-finite checked metric, before any checkpoint
        holds its state. ``skip``: counts the dropped updates and stops once there are more than
        ``max_skipped`` in the run (the newest checkpoint, taken before them, is kept)."""
        settings = self.settings
        for i, metrics in enumerate(new):
            bad = [k for k in settings.checked if k in metrics and not math.isfinite(metrics[k])]
            if settings.nan_policy == "stop" and bad:
                raise FloatingPointError(
                    f"non-finite {bad[0]} at step {first_step + i}{where}; the last checkpoint is kept: {settings.fix}"
                )
            self.progress.skipped_steps += int(any(metrics.get(k) for k in SKIPPED))
            if self.progress.skipped_steps > settings.max_skipped:
                raise FloatingPointError(
                    f"--nan-policy skip dropped {self.progress.skipped_steps} updates by step {first_step + i}"
                    f"{where}, more than --max-skipped-steps {settings.max_skipped}; the last checkpoint is kept: "
                    f"{settings.fix}"
                )

    def run_steps(self, loop: StepLoop) -> list[dict]:
        """Runs the remaining calls of ``loop``: fetches metrics every ``log_every`` steps (checking them), writes
        step records and the progress bar, checkpoints when due or asked to stop; returns every step's
        metrics."""
        fetched, pending = list(loop.fetched), []
        bar = Progress(loop.calls, loop.label)
        mark, mark_time, k = loop.start, time.perf_counter(), loop.steps_per_call

        def fetch() -> None:
            new = [m for call in jax.device_get(pending) for m in unstack(call)]
            self.check_steps(new, loop.first_step + 1 + len(fetched), loop.where)
            fetched.extend(new)
            pending.clear()

        for i in range(loop.start, loop.calls):
            pending.append(self.call(loop, i))
            fault_point("step")
            step = loop.first_step + (i + 1) * k
            if (i + 1) * k % self.settings.log_every < k or i + 1 == loop.calls:
                fetch()
                now = time.perf_counter()
                self.time_run(step, now)
                rate = (i + 1 - mark) * loop.images_per_call / (now - mark_time)
                mark, mark_time = i + 1, now
                self.writer.write({"event": "step", **loop.record, "step": step, **fetched[-1], "images_per_s": rate})
                shown = {label: fetched[-1][key] * scale for key, label, scale in loop.shown if key in fetched[-1]}
                bar.update(i + 1, step=step, img_s=round(rate, 1), **shown)
            every = self.settings.checkpoint_every
            if i + 1 < loop.calls and (self.signal is not None or every and step // every > (step - k) // every):
                fetch()
                loop.save(i + 1, fetched)
        bar.close()
        fetch()
        if fetched and all(any(m.get(k) for k in SKIPPED) for m in fetched):
            raise FloatingPointError(
                f"--nan-policy skip dropped every update of the epoch{loop.where}; the last checkpoint is kept: "
                f"{self.settings.fix}"
            )
        return fetched

    def call(self, loop: StepLoop, i: int) -> dict:
        """``loop.take(i)``, saying so when it compiles its program (the first call in a session or after the
        model changed)."""
        if loop.program in self.compiled:
            return loop.take(i)
        self.say(f"compiling {loop.program} (XLA; cached for later runs)...")
        start = time.perf_counter()
        metrics = jax.block_until_ready(loop.take(i))
        self.compiled.add(loop.program)
        self.say(f"compiled {loop.program} and ran its first call in {time.perf_counter() - start:.1f} s")
        self.timed, self.estimated = None, False  # time the run again from here
        return metrics

    def time_run(self, step: int, now: float) -> None:
        """Prints the whole run's remaining time once per compilation, when some 20 s of compiled steps have been
        timed."""
        if self.timed is None:
            self.timed = (step, now)
        elif not self.estimated and now - self.timed[1] > 20 and step > self.timed[0]:
            seconds_per_step = (now - self.timed[1]) / (step - self.timed[0])
            left = (self.settings.total_steps - step) * seconds_per_step
            self.say(f"about {format_duration(left)} left for the remaining {self.settings.total_steps - step:,} "
                     "steps (evaluations not included)")  # fmt: skip
            self.estimated = True

    def evaluate_sums(self, n: int, batch_size: int, mesh: Mesh, call: Callable[[jax.Array, jax.Array], dict],
                      subset: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
        """Sums over every batch of ``call(idx, mask)``'s metrics (each already a sum over its batch), for the
        ``n`` examples ``subset`` (default: ``0..n-1``) in padded batches of ``batch_size``."""
        subset = np.arange(n) if subset is None else subset
        sums: dict[str, float] = {}
        for pos, mask in eval_batches(n, batch_size):
            out = jax.device_get(call(shard_batch(subset[pos], mesh), shard_batch(mask, mesh)))
            sums = {name: sums.get(name, 0.0) + float(value) for name, value in out.items()}
        return sums

    def finish(self, summary: dict, files: dict[str, dict], plot: Callable[[pathlib.Path], None]) -> None:
        """Writes the finished run's ``files`` (name -> JSON), its plots and, last, ``summary.json``, which marks
        the run finished (process 0 only)."""
        if not is_primary():
            return
        for name, data in files.items():
            write_json(self.workdir / name, data)
        fault_point("final_plots")
        plot(self.workdir)
        fault_point("final_summary")
        write_json(self.workdir / "summary.json", {**summary, "skipped_steps": self.progress.skipped_steps})
