"""The run-directory contract: the key sets of ``config.json``, ``summary.json`` and the metrics records, and the
flags of both command-line entry points, against the committed list ``tests/data/run_files.json``.

After an intended change, rewrite the list with ``UPDATE_RUN_FILES=1`` (the test session then fails, so that a
rewrite never passes unnoticed), review it and commit it with the change.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from asose_jax.runtime.metrics_log import read_metrics

COMMITTED = pathlib.Path(__file__).parent / "data" / "run_files.json"
# Wall-clock fields: the only values in which a killed-and-resumed run may differ from an uninterrupted one.
TIMING = ("images_per_s", "wall_time_s", "epoch_seconds", "train_images_per_s", "train_time_s")
# Values whose keys depend on the space or the run (genotypes, architectures, per-edge weights): kept as one key.
OPAQUE = ("genotype", "architecture", "arch_weights", "entropy", "edge_names", "margins")


def key_paths(record: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every key: ``{"a": {"b": 1}}`` -> ``["a", "a.b"]``; values under ``OPAQUE`` keys are not
    entered."""
    paths = []
    for key, value in record.items():
        paths.append(prefix + key)
        if isinstance(value, dict) and key not in OPAQUE:
            paths.extend(key_paths(value, f"{prefix}{key}."))
    return sorted(paths)


def run_files(workdir: pathlib.Path) -> dict:
    """``{"config.json": [...], "summary.json": [...], "metrics.jsonl": {event: [...]}}``."""
    events: dict[str, set[str]] = {}
    for record in read_metrics(workdir / "metrics.jsonl"):
        events.setdefault(record["event"], set()).update(key_paths(record))
    return {
        "config.json": key_paths(json.loads((workdir / "config.json").read_text())),
        "summary.json": key_paths(json.loads((workdir / "summary.json").read_text())),
        "metrics.jsonl": {event: sorted(keys) for event, keys in sorted(events.items())},
    }


def check_against_committed(section: str, actual) -> None:
    """Asserts that ``actual`` equals the committed ``section`` (or rewrites it with ``UPDATE_RUN_FILES=1``)."""
    committed = json.loads(COMMITTED.read_text()) if COMMITTED.exists() else {}
    if os.environ.get("UPDATE_RUN_FILES"):  # conftest then fails the session, so a rewrite never passes unnoticed
        COMMITTED.write_text(json.dumps({**committed, section: actual}, indent=1, sort_keys=True) + "\n")
        return
    expected = committed.get(section)
    assert actual == expected, (
        f"{section} differs from {COMMITTED.name}: an intended change? rerun with UPDATE_RUN_FILES=1 and commit it\n"
        f"added: {_diff(actual, expected)}\nremoved: {_diff(expected, actual)}"
    )


def _diff(a, b) -> list[str]:
    return sorted(_flat(a) - _flat(b))


def _flat(keys) -> set[str]:
    return set(keys or ()) if not isinstance(keys, dict) else {f"{k}:{v}" for k, vs in keys.items() for v in vs}


def comparable(workdir: pathlib.Path) -> dict:
    """What must not depend on interruptions: ``metrics.jsonl``, ``genotype.json`` and ``summary.json`` without
    wall-clock fields (and the summary's ``resumed`` flag), and every array of the newest checkpoint's state."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((workdir / "summary.json").read_text())
    newest = max((p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    state = ocp.StandardCheckpointer().restore(newest / "state")
    return {
        "metrics": [{k: v for k, v in r.items() if k not in TIMING} for r in records],
        "genotype": json.loads((workdir / "genotype.json").read_text()),
        "summary": {k: v for k, v in summary.items() if k not in (*TIMING, "resumed")},
        "state": {
            jax.tree_util.keystr(path): np.asarray(leaf).tobytes()
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        },  # fmt: skip
    }
