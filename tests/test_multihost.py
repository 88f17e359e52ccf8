"""Two processes with two CPU devices each run one search together through ``jax.distributed``
(``--distributed on``): both finish, only process 0 writes the run directory, and the numbers are those
of a one-process run on the same global batches."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
from conftest import cpu_devices_flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import cifar10_search  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _args(npz_path, workdir) -> list[str]:
    return ["--preset", "smoke", "--data", f"npz:{npz_path}", "--workdir", str(workdir), "--compilation-cache", "",
            "--init-channels", "4", "--depth", "2", "--ops", "skip_connect,sep_conv_3x3", "--batch-size", "8",
            "--cycles", "1", "--warmup-epochs", "1", "--plateau-window", "0", "--log-every", "1"]  # fmt: skip


def test_two_processes_run_one_search(tmp_path, npz_path):
    workdir = tmp_path / "shared_run"
    port = _free_port()
    processes = []
    for pid in range(2):
        env = {**os.environ, "XLA_FLAGS": cpu_devices_flags(2), "JAX_PLATFORMS": "cpu",
               "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
               "JAX_PROCESS_ID": str(pid)}  # fmt: skip
        command = [sys.executable, str(ROOT / "experiments" / "cifar10_search.py"), *_args(npz_path, workdir),
                   "--distributed", "on"]  # fmt: skip
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["device"] == "cpu: cpu x4"
    steps = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert len({(r["event"], r.get("step"), r.get("phase")) for r in steps}) == len(steps)  # one writer, no repeats

    assert cifar10_search.main(_args(npz_path, tmp_path / "one_process")) == 0
    reference = json.loads((tmp_path / "one_process" / "summary.json").read_text())
    assert summary["genotype"] == reference["genotype"]
    np.testing.assert_allclose(summary["val_loss"], reference["val_loss"], rtol=1e-4)
    np.testing.assert_allclose(summary["test_loss"], reference["test_loss"], rtol=1e-4)
