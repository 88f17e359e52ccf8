"""The run directory, shared by the search and the training driver: refuse or continue, compare settings,
create it, describe the device, and stop on a signal with the command that resumes.

A run directory holds ``config.json`` (the settings and, apart, the values computed from them; written once),
``metrics.jsonl``, ``checkpoints/`` and, when the run finished, ``summary.json``. A new or empty directory starts
a run; one holding an unfinished run continues it if the settings match; anything else is refused with a
one-line error.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import jax

from asose_jax.runtime.metrics_log import write_json

LOCK_FILE = "run.lock"  # the advisory lock of the process writing a run directory
COMPUTED = "computed"  # the key of config.json that holds the driver's derived values
CHANGES = "changes"  # the key of config.json that lists the settings changed when the run continued
NAN_POLICIES = ("stop", "skip")  # at a non-finite loss or gradient: end the run, or drop that update
NAN_POLICY_HELP = "stop: end the run at a non-finite loss or gradient; skip: drop that update"
MAX_SKIPPED_DEFAULT = 100
MAX_SKIPPED_HELP = "with --nan-policy skip: stop the run once it dropped more updates than this"


def existing_config(workdir: pathlib.Path, resume: bool = False, dry_run: bool = False) -> dict | None:
    """The saved configuration of the unfinished run (search or training) in ``workdir``, or None for a new or
    empty directory.

    Refuses a file, a directory that holds something other than a run, a finished run, ``resume`` without a run
    and ``dry_run`` in a directory that holds one.
    """
    saved = _saved_config(workdir)
    if resume and saved is None:
        raise ValueError(f"--resume: no run in --workdir {workdir}; start one without --resume")
    if dry_run and saved is not None:
        raise ValueError(f"--dry-run: --workdir {workdir} already holds a run; choose a new --workdir")
    return saved


def _saved_config(workdir: pathlib.Path) -> dict | None:
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} is a file; choose a directory")
    if not workdir.is_dir() or not any(p.name != LOCK_FILE for p in workdir.iterdir()):
        return None
    try:
        saved = json.loads((workdir / "config.json").read_text())
        summary = json.loads((workdir / "summary.json").read_text()) if (workdir / "summary.json").exists() else {}
    except FileNotFoundError:
        raise ValueError(
            f"--workdir {workdir} is not empty and holds no asose-jax run; choose a new --workdir"
        ) from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the run in --workdir {workdir} ({err}); choose a new --workdir") from None
    if summary and not summary.get("dry_run"):  # a search's or a training run's final summary
        raise ValueError(f"--workdir {workdir} holds a finished run (summary.json); choose a new --workdir")
    return saved


def _finished(workdir: pathlib.Path) -> bool:
    """Whether ``workdir`` holds a run's final ``summary.json`` (a dry run's is not one)."""
    try:
        return not json.loads((workdir / "summary.json").read_text()).get("dry_run")
    except (OSError, json.JSONDecodeError):
        return False


def _difference(saved: dict, requested: dict, skip: tuple[str, ...]) -> tuple[str, object, object] | None:
    """The first setting (``"batch_size"``, ``"search.sampler"``...) whose value differs: ``(name, saved value,
    requested value)``, or None. Settings named in ``skip`` are ignored; the user's settings come before nested
    ones and the ``computed`` values the driver derives from them."""
    keys = sorted(dict.fromkeys([*saved, *requested]), key=lambda k: (k == COMPUTED, isinstance(saved.get(k), dict)))
    for key in keys:
        if key in skip:
            continue
        old, new = saved.get(key), requested.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            if inner := _difference(old, new, skip):
                return (f"{key}.{inner[0]}", inner[1], inner[2])
        elif _as_list(old) != _as_list(new):
            return (key, old, new)
    return None


def _as_list(value):
    return list(value) if isinstance(value, list | tuple) else value


def check_same_settings(
    workdir: pathlib.Path,
    saved: dict | None,
    requested: dict,
    resumable: Sequence[str] = (),
    renamed_flags: Mapping[str, str] | None = None,
) -> None:
    """Refuses to continue (or, finished, to reuse) the run in ``workdir`` with settings other than its own, naming
    the first one by its flag: ``search.batch_size`` -> ``--batch-size``, or ``renamed_flags[field]`` (e.g.
    ``op_names`` -> ``--ops``)."""
    if saved is not None and (difference := _difference(saved, requested, (*resumable, CHANGES))):
        setting, old, new = difference
        field = setting.split(".")[-1]
        flag = (renamed_flags or {}).get(field, "--" + field.replace("_", "-"))
        run, use = ("a finished", "reuse") if _finished(workdir) else ("an unfinished", "continue")
        raise ValueError(
            f"--workdir {workdir} holds {run} run made with {flag} {old!r} ({setting}), but "
            f"this run asks for {new!r}; rerun with the run's settings to {use} it, or choose a new --workdir"
        )


def _flattened(settings: dict, prefix: str = "") -> dict[str, object]:
    """``{"search.weight_lr": 0.025, ...}``: the settings of a nested ``config.json`` by dotted path."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flattened(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = _as_list(value)
    return flat


def record_changes(
    workdir: pathlib.Path, saved: dict, requested: dict, resumable: Sequence[str], step: int
) -> list[str]:
    """When a run continues with other values of ``resumable`` settings (e.g. a lower learning rate after a
    non-finite loss), rewrites its ``config.json`` with them and appends ``{step, setting, from, to}`` to its
    ``changes``; returns one line per change. The settings saved before stay in ``changes``."""
    old = _flattened({k: v for k, v in saved.items() if k not in (CHANGES, COMPUTED)})
    new = _flattened({k: v for k, v in requested.items() if k != COMPUTED})
    changes = [{"step": step, "setting": path, "from": old.get(path), "to": value} for path, value in new.items()
               if path.split(".")[-1] in resumable and old.get(path) != value]  # fmt: skip
    if changes:
        write_json(workdir / "config.json", {**requested, CHANGES: [*saved.get(CHANGES, []), *changes]})
    return [f"{c['setting']} changed from {c['from']!r} to {c['to']!r} at step {step}" for c in changes]


def config_record(settings: dict, computed: dict) -> dict:
    """What ``config.json`` holds: the user's ``settings`` and, apart under ``"computed"``, the values the driver
    derived from them and the data (schedule length, op names, network size)."""
    return {**settings, COMPUTED: computed}


class RunDirectoryLock:
    """An advisory lock (``flock``) on ``workdir/run.lock``, held while a process writes the run directory: a
    second process is refused before it writes anything. The OS releases it when the process ends, however it
    ends, so a killed run leaves no stale lock. Only process 0 of a multi-host run writes, so only it locks."""

    def __init__(self, workdir: pathlib.Path, enabled: bool = True):
        self.path, self._fd = workdir / LOCK_FILE, None
        if not enabled:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ValueError(
                f"--workdir {workdir} is in use by {holder}; wait for it to finish or stop it, or choose a new "
                "--workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {os.uname().nodename} (since {time.strftime('%H:%M:%S')})".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunDirectoryLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def create(workdir: pathlib.Path, lock: bool = True) -> RunDirectoryLock:
    """Creates ``workdir`` (and its parents) and locks it for this process (``lock``: process 0 of the run), or
    raises a one-line ValueError; nothing is written into it before the lock is held. Use it as a context
    manager: ``with create(workdir): ...`` holds the lock until the block ends, however it ends."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create --workdir {workdir}: {err.strerror}") from None
    return RunDirectoryLock(workdir, lock)


def default_workdir(name: str) -> str:
    """``runs/<name>-<date>-<time>-<pid>``: a new run's directory, which two runs started in the same second on one
    machine do not share."""
    return f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def device_description() -> str:
    devices = jax.devices()
    return f"{devices[0].platform}: {devices[0].device_kind} x{len(devices)}"


def resume_command(workdir: pathlib.Path, argv: Sequence[str] | None = None) -> str:
    """The command that continues the run in ``workdir``: this process's script (``argv[0]``) with
    ``--workdir`` and ``--resume``; the run's settings come back from its ``config.json``."""
    script = (sys.argv if argv is None else argv)[0]
    return shlex.join(["python", script, "--workdir", str(workdir), "--resume"])


def catch_stop_signals(request: Callable[[int], None]) -> Callable[[], None]:
    """Makes SIGTERM and SIGINT call ``request(signum)`` (the run saves and stops at its next step) instead of
    ending the process; returns the function that puts the previous handlers back. Off the main thread, where
    Python cannot install handlers, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {sig: signal.signal(sig, lambda signum, frame: request(signum)) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped the run after it saved a checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, signum: int, step: int, workdir: pathlib.Path):
        name = signal.Signals(signum).name
        super().__init__(f"{name} at step {step}: checkpoint saved; resume with: {resume_command(workdir)}")
        self.exit_code = 128 + signum
