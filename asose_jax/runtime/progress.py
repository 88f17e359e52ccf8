"""A dependency-free progress bar: ``[phase] 120/390 |####----| step 1234 312 img/s loss 1.23 ... ETA 0:01:23``."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Redraws one line on a terminal (``\\r``); prints one line per update elsewhere (logs, notebooks)."""

    def __init__(self, total: int, description: str, stream: TextIO | None = None, width: int = 20):
        self.total, self.description, self.width = total, description, width
        self.stream = sys.stderr if stream is None else stream
        self.interactive = self.stream.isatty()
        self.start = time.perf_counter()

    def update(self, done: int, **fields) -> None:
        """``done`` of ``total`` finished; ``fields`` are shown as ``name value`` (floats to 4 digits)."""
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        filled = self.width * done // max(self.total, 1)
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        line = (
            f"[{self.description}] {done}/{self.total} |{'#' * filled}{'-' * (self.width - filled)}| "
            f"{shown} ETA {format_duration(eta)}"
        )
        self.stream.write(("\r" + line + "\033[K") if self.interactive else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
