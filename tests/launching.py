"""Launching a test script on 2 processes through `accelerate launch`.

`accelerate launch --cpu --num_processes 2` starts ONE process on a machine without a GPU (accelerate's
CPU launcher spreads over processes only with MPI); `--multi_gpu` starts 2 through torchrun, and on a
machine without a GPU they run on the CPU and talk over gloo. `--main_process_port 0` gives each launch a
free port of its own, so launches that overlap (in one test, or in two test runs on one machine) never
meet on torchrun's default port 29500.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = str(Path(__file__).parent / "scripts" / "train_tiny.py")
LAUNCH_TWO = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no"]

needs_launcher = pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not installed")


def train_tiny(env: dict, out: str, *args: str, processes: int = 1, **popen) -> subprocess.Popen:
    """Start tests/scripts/train_tiny.py OUT ARGS on 1 or 2 processes; its stderr goes to OUT.log (a file,
    not a pipe: a pipe nobody reads would stall the run once full)."""
    command = [sys.executable, SCRIPT, out, *args] if processes == 1 else [*LAUNCH_TWO, SCRIPT, out, *args]
    with open(f"{out}.log", "ab") as log:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, **popen)


def finish(process: subprocess.Popen, timeout: float = 600) -> None:
    """Wait for a process from `train_tiny`; fail with the end of its log if it failed."""
    process.wait(timeout=timeout)
    if process.returncode != 0:
        out = process.args[process.args.index(SCRIPT) + 1]
        pytest.fail(f"{' '.join(process.args)} failed ({process.returncode}):\n"
                    f"{Path(f'{out}.log').read_text(errors='replace')[-3000:]}")
