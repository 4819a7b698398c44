"""The benchmark's output folder (issue 23 items 6-9, issue 24's bench CLI): one benchmark at a time, runs
reused only with the same settings, stored runs checked, one line on Ctrl-C, flags that --quick fills."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import benchmark
from agents.benchmark import run_benchmark, train_run
from agents.protocol import QUICK, Run
from textrl.cli import main
from textrl.runs import FolderBusyError, RunLock

QUICK_RUN = dict(tiers=["mixed"], eval_interval=2, validation_episodes=4, test_episodes=4, progress=False)


def test_quick_fills_only_the_flags_left_out_even_abbreviated(monkeypatch, tmp_path) -> None:
    seen = {}
    monkeypatch.setattr(benchmark, "run_benchmark", lambda **kwargs: seen.update(kwargs) or [])
    (tmp_path / "table.md").write_text("| table |\n")  # what a bench leaves for the command to print
    assert main(["bench", "--step", "10", "--quick", "--out", str(tmp_path)]) == 0
    assert seen["total_steps"] == 10 and list(seen["tasks"]) == list(QUICK["tasks"]) and seen["seeds"] == QUICK["seeds"]
    assert main(["bench", "--quick", "--seeds", "2", "--tasks", "maze", "--out", str(tmp_path)]) == 0
    assert seen["total_steps"] == QUICK["steps"] and seen["seeds"] == 2 and seen["tasks"] == ["maze"]
    assert main(["bench", "--out", str(tmp_path)]) == 0
    assert seen["total_steps"] is None and seen["seeds"] == 4 and seen["tiers"] is None


def test_a_second_bench_into_one_out_is_refused_naming_the_first(tmp_path) -> None:
    (tmp_path / "runs").mkdir()
    holder = RunLock(tmp_path)
    holder.acquire()  # what a running `textrl bench --out tmp_path` holds
    try:
        with pytest.raises(RuntimeError, match=rf"another textrl bench \(pid {os.getpid()}\) is writing into"):
            run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, total_steps=2, **QUICK_RUN)
    finally:
        holder.release()
    assert not list((tmp_path / "runs").iterdir()) and not (tmp_path / "work").exists()


def test_a_run_folder_another_process_holds_is_never_deleted(tmp_path) -> None:
    plan = benchmark.make_plan(["bc"], ["randomwalks"], 1, ["mixed"], 2, 2, 4, 4)
    run_dir = tmp_path / "work" / benchmark.spec_key(plan, ("randomwalks", "mixed", "bc", 0, 0))
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    holder = RunLock(run_dir)
    holder.acquire()  # a live run without a checkpoint yet
    try:
        with pytest.raises(FolderBusyError, match=rf"pid {os.getpid()}"):
            train_run(plan, "randomwalks", "mixed", "bc", 0, 0, tmp_path / "work")
        assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n' and holder.path.exists()
    finally:
        holder.release()


def test_runs_are_reused_only_with_the_same_settings_and_the_count_is_said(tmp_path, capsys) -> None:
    (first,) = run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, total_steps=4, **QUICK_RUN)
    assert first.curve_steps == [2, 4] and "0 of 1 runs reused" in capsys.readouterr().err
    (other,) = run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, total_steps=2, **QUICK_RUN)
    assert other.curve_steps == [2]  # not the 4-step run's table
    assert "0 of 1 runs reused" in (err := capsys.readouterr().err) and "1 stored runs made with other settings" in err
    (again,) = run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, total_steps=4, **QUICK_RUN)
    assert again.test_final.tolist() == first.test_final.tolist() and "1 of 1 runs reused" in capsys.readouterr().err


def _valid_run() -> dict:
    return json.loads(Run("maze", "mixed", "bc", 0, 0, [2, 4], {(None, 0.0): [1.0, 2.0]}, [3.0, 4.0], [], 1.5,
                          [0.0, 0.0], "abc").to_json())


@pytest.mark.parametrize("content,problem", [
    ('{"task": "ma', "Unterminated string"),
    (json.dumps({**_valid_run(), "extra": 1}), "its keys are"),
    (json.dumps({**_valid_run(), "test": ["NaN", 4.0]}), "test is not a list of finite numbers"),
    (json.dumps(_valid_run()).replace("3.0", "NaN"), "it holds NaN, not a number"),
])
def test_a_damaged_stored_run_is_named_with_what_is_wrong(tmp_path, content, problem) -> None:
    (tmp_path / "runs").mkdir()
    path = tmp_path / "runs" / "maze-mixed__bc__k0__s0__abc.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"{path.name} is not a finished run of this benchmark \({problem}.*"
                                         "delete it and run the same command again to rerun that run"):
        run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, total_steps=2, **QUICK_RUN)
    assert Run.read(_write(tmp_path / "ok.json", json.dumps(_valid_run()))).val == {(None, 0.0): [1.0, 2.0]}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _subprocess_env() -> dict:
    """This environment, with the repository and this interpreter's paths importable in a child process."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}


_KILLED_MAIN = """
import multiprocessing, os, time
from agents.benchmark import _worker_init
if __name__ == "__main__":
    pool = multiprocessing.get_context("spawn").Pool(1, initializer=_worker_init, initargs=(1,))
    worker = pool.apply(os.getpid)
    pool.apply_async(time.sleep, (600,))  # a run that would outlive the test
    print(worker, flush=True)
    time.sleep(600)
"""


def test_a_bench_worker_stops_when_its_main_process_is_killed(tmp_path) -> None:
    import psutil

    script = tmp_path / "main.py"
    script.write_text(_KILLED_MAIN)
    env = _subprocess_env()
    main_process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env)
    line = main_process.stdout.readline()
    assert line.strip().isdigit(), main_process.communicate()
    worker = psutil.Process(int(line))
    assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    main_process.kill()  # SIGKILL: the pool is never told to stop
    main_process.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.2)
    stopped = not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    if not stopped:
        worker.kill()
    assert stopped, "the orphaned worker was still running 60 s after its main process was killed"


def test_ctrl_c_on_a_bench_with_two_workers_prints_one_line_the_command_that_resumes(tmp_path) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "--agents", "bc", "--tasks", "randomwalks", "--tiers", "mixed", "--seeds", "2", "--steps",
            "100000", "--jobs", "2", "--no-progress", "--out", str(out)]
    env = _subprocess_env()
    # A shell that runs pytest in the background starts it with SIGINT ignored, and its children inherit that
    # (Python then never raises KeyboardInterrupt): the bench gets the default, as from a terminal.
    proc = subprocess.Popen([sys.executable, "-m", "textrl.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(out.glob("work/*/metrics.jsonl"))) < 2 and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group gets it
        _, err = proc.communicate(timeout=120)
    finally:  # a bench that did not stop would train its 100,000 steps on after the test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130
    assert len(lines) == 1 and "textrl bench: interrupted" in lines[0] and "resume_from_checkpoint" not in err, err
    assert lines[0].endswith("textrl " + " ".join(argv))
