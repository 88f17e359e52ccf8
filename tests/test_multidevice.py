"""Runs ``multidevice_checks.py`` in a fresh process with 8 CPU devices (XLA reads the flag at start-up)."""

import os
import pathlib
import subprocess
import sys

from conftest import cpu_devices_flags

HERE = pathlib.Path(__file__).resolve().parent


def test_data_parallel_on_eight_cpu_devices():
    env = {**os.environ, "XLA_FLAGS": cpu_devices_flags(8), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "multidevice_checks.py")],
        cwd=HERE.parent, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
