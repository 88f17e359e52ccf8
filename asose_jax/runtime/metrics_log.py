"""Machine-readable metrics: one JSON object per line (``metrics.jsonl``), flushed as written."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator

import numpy as np

from asose_jax.runtime.faults import armed_at, fault_point


def to_jsonable(value):
    """Numbers, arrays (JAX or NumPy) and nested containers as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__array__") and not isinstance(value, str):
        array = np.asarray(value)
        return array.item() if array.ndim == 0 else array.tolist()
    return value


def write_json(path: str | pathlib.Path, data: dict) -> None:
    """Writes ``data`` as indented JSON atomically: a kill mid-write leaves the old file, never a truncated one."""
    path = pathlib.Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    partial.replace(path)


class MetricsWriter:
    """Appends records to a JSON-lines file; each line is flushed, so a crash loses at most one line.

    ``enabled=False`` (every process but the first of a multi-host run) writes nothing.
    """

    def __init__(self, path: str | pathlib.Path, enabled: bool = True):
        self.path = pathlib.Path(path)
        self._file = self.path.open("a") if enabled else None

    def write(self, record: dict) -> None:
        if self._file:
            line = json.dumps(to_jsonable(record)) + "\n"
            if armed_at("metrics_append"):  # a kill here leaves half a line, which a resume cuts off
                self._file.write(line[: len(line) // 2])
                self._file.flush()
                fault_point("metrics_append")
                line = line[len(line) // 2 :]
            self._file.write(line)
            self._file.flush()

    def tell(self) -> int:
        """Bytes written so far: the point a checkpoint records, to cut back to on resume."""
        return self._file.tell() if self._file else 0

    def truncate(self, size: int) -> None:
        """Drops everything after byte ``size`` (lines written after the checkpoint being resumed); refuses with
        ValueError a file shorter than ``size``, which truncating would pad with NUL bytes."""
        if self._file:
            length = os.fstat(self._file.fileno()).st_size
            if length < size:
                raise ValueError(
                    f"{self.path} is shorter than the checkpoint records ({length} < {size} bytes); it was edited or "
                    "damaged: restore it or choose a new --workdir"
                )
            self._file.truncate(size)
            self._file.seek(size)

    def close(self) -> None:
        if self._file:
            self._file.close()


def read_metrics(path: str | pathlib.Path) -> Iterator[dict]:
    """The records of a ``metrics.jsonl``, in order."""
    with pathlib.Path(path).open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
