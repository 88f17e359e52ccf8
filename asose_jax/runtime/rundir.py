"""The run directory, shared by the search and the training driver: refuse or continue, compare settings,
create it, describe the device, and stop on a signal with the command that resumes.

A run directory holds ``config.json`` (the settings and, apart, the values computed from them; written once),
``metrics.jsonl``, ``checkpoints/`` and, when the run finished, ``summary.json``. A new or empty directory starts
a run; one holding an unfinished run continues it if the settings match; anything else is refused with a
one-line error.
"""

from __future__ import annotations

import json
import math
import pathlib
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

import jax

COMPUTED = "computed"  # the key of config.json that holds the driver's derived values
NAN_POLICIES = ("stop", "skip")  # at a non-finite loss or gradient: end the run, or drop that update
NAN_POLICY_HELP = "stop: end the run at a non-finite loss or gradient; skip: drop that update"


def existing_config(workdir: pathlib.Path) -> dict | None:
    """The saved configuration of the unfinished run (search or training) in ``workdir``, or None for a new or
    empty directory.

    Refuses a file, a directory that holds something other than a run, and a finished run.
    """
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} is a file; choose a directory")
    if not workdir.is_dir() or not any(workdir.iterdir()):
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


def first_difference(saved: dict, requested: dict, resumable: Sequence[str] = ()) -> tuple[str, object, object] | None:
    """The first setting (``"batch_size"``, ``"search.sampler"``...) whose value differs:
    ``(name, saved value, requested value)``, or None. ``resumable`` settings are ignored; the user's settings
    come before nested ones and the ``computed`` values the driver derives from them."""
    return _difference(saved, requested, tuple(resumable))


def _difference(saved: dict, requested: dict, skip: tuple[str, ...]) -> tuple[str, object, object] | None:
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
    """Refuses to continue the run in ``workdir`` with settings other than its own, naming the first one by its
    flag: ``search.batch_size`` -> ``--batch-size``, or ``renamed_flags[field]`` (e.g. ``op_names`` -> ``--ops``)."""
    if saved is not None and (difference := first_difference(saved, requested, resumable)):
        setting, old, new = difference
        field = setting.split(".")[-1]
        flag = (renamed_flags or {}).get(field, "--" + field.replace("_", "-"))
        raise ValueError(
            f"--workdir {workdir} holds an unfinished run made with {flag} {old!r} ({setting}), but "
            f"this run asks for {new!r}; rerun with the run's settings to continue it, or choose a new --workdir"
        )


def check_finite(fetched: Sequence[Mapping[str, float]], first_step: int, keys: Sequence[str], where: str,
                 fix: str) -> None:  # fmt: skip
    """``--nan-policy stop``: raises FloatingPointError at the first of the per-step metrics ``fetched`` (the first
    being global step ``first_step``) whose value under one of ``keys`` is not finite, naming it, ``where`` it
    happened and the ``fix``; the newest checkpoint is older, so it is kept."""
    for i, metrics in enumerate(fetched):
        if bad := [k for k in keys if k in metrics and not math.isfinite(metrics[k])]:
            raise FloatingPointError(
                f"non-finite {bad[0]} at step {first_step + i}{where}; the last checkpoint is kept: {fix}, "
                "or pass --nan-policy skip"
            )


def config_record(settings: dict, computed: dict) -> dict:
    """What ``config.json`` holds: the user's ``settings`` and, apart under ``"computed"``, the values the driver
    derived from them and the data (schedule length, op names, network size)."""
    return {**settings, COMPUTED: computed}


def create(workdir: pathlib.Path) -> None:
    """Creates ``workdir`` (and its parents), or raises a one-line ValueError."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create --workdir {workdir}: {err.strerror}") from None


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
