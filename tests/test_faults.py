"""Fault injection on a real pretrain stage: SIGTERM and SIGKILL mid-group.

Each test starts `stages/pretrain.py` on the main group of the tiny params (long enough to
be killed while training), waits until its MLflow parent run exists, and signals it.
Marked slow (about a minute in all); CI runs them too.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def _client(tmp_path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")


def _runs(tmp_path):
    client = _client(tmp_path)
    exp = client.get_experiment_by_name("main")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _processes_of(tmp_path) -> list[int]:
    """Live processes whose command line names this test's folder (the stage and the processes it forked)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if str(tmp_path).encode() in cmdline and "State:\tZ" not in status:
            pids.append(int(proc.name))
    return pids


def _start_training(tmp_path, params, prepared):
    params["train"].update(epochs=2000, milestones=[1000])  # ~50 s per run on digits: time to kill it
    args = prepared(params)
    # the store exists before the stage starts: polling it must not race the stage creating it
    _client(tmp_path).search_experiments()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    env.pop("DVC_ROOT", None)
    stage = subprocess.Popen([sys.executable, str(REPO / "stages/pretrain.py"), *map(str, args), "--out",
                              str(tmp_path / "runs")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(r.info.status == "RUNNING" for r in _runs(tmp_path)):  # the parent run: training has begun
        assert stage.poll() is None and time.monotonic() < deadline, stage.communicate()
        time.sleep(0.5)
    time.sleep(1.0)
    return stage, args


def test_sigterm_ends_every_run_killed_and_leaves_no_process_or_folder(tmp_path, params, prepared):
    stage, _ = _start_training(tmp_path, params, prepared)
    assert len(_processes_of(tmp_path)) == 4  # the stage, its MLflow client's helper and its two workers
    stage.send_signal(signal.SIGTERM)
    _, stderr = stage.communicate(timeout=60)
    assert stage.returncode == 128 + signal.SIGTERM
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "stopped by SIGTERM" in errors[0], stderr
    runs = _runs(tmp_path)  # the parent and the model runs that had started: none finished
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) == 3
    assert _processes_of(tmp_path) == []
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob(".runs.*"))  # no output, no temp folder


def test_workers_die_with_a_sigkilled_stage_and_its_run_is_failed_on_the_next_run(tmp_path, params, prepared):
    stage, args = _start_training(tmp_path, params, prepared)
    stage.kill()
    stage.wait(timeout=60)  # not communicate(): orphaned workers would hold its pipes open
    deadline = time.monotonic() + 3  # at once: each worker still has seconds of its run to train
    while _processes_of(tmp_path):  # the kernel kills the orphaned workers and helper (PR_SET_PDEATHSIG)
        assert time.monotonic() < deadline, _processes_of(tmp_path)
        time.sleep(0.2)
    abandoned = _runs(tmp_path)  # the parent and the two model runs in training
    assert len(abandoned) == 3 and {r.info.status for r in abandoned} == {"RUNNING"}  # nothing could end them
    params["train"].update(epochs=2, milestones=[1])
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    rerun = subprocess.run([sys.executable, str(REPO / "stages/pretrain.py"), *map(str, prepared(params)), "--out",
                            str(tmp_path / "runs")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    statuses = {r.info.run_id: r.info.status for r in _runs(tmp_path)}
    assert all(statuses[r.info.run_id] == "FAILED" for r in abandoned)
    assert "RUNNING" not in statuses.values()


def _outputs(folder: Path) -> dict:
    """Every array of a training stage's output (npz contents, weights), by file and key."""
    import numpy as np
    import torch

    out = {}
    for f in sorted(folder.glob("*.npz")):
        with np.load(f) as arrays:
            out.update({(f.name, k): arrays[k] for k in arrays})
    for f in sorted(folder.glob("*.pt")):
        out.update({(f.name, k): v.numpy() for k, v in torch.load(f, weights_only=True).items()})
    return out


def _stack_saved_at_one_epoch(folder: Path) -> bool:
    """Both runs' checkpoints in `folder`, saved at one epoch (checkpoint.py's format)."""
    import torch

    files = list(folder.glob("*-s?.pt"))
    return len(files) == 2 and len({torch.load(f, weights_only=True)["payload"]["epoch"] for f in files}) == 1


@pytest.mark.parametrize("stacked", [False, True], ids=["run-by-run", "stacked"])
def test_a_sigkilled_group_resumes_from_its_checkpoints_and_equals_an_uninterrupted_one(tmp_path, params, prepared,
                                                                                       stacked):
    import numpy as np

    # ~7 s per run; run by run, the two runs train in turn; stacked, together (stack.py)
    params["train"].update(epochs=300, milestones=[150], stack="auto" if stacked else "off")
    args = [*map(str, prepared(params)), "--checkpoint-every", "10epochs", "--workers", "1"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    env.pop("DVC_ROOT", None)
    stage = [sys.executable, str(REPO / "stages/pretrain.py"), *args]
    whole = subprocess.run([*stage, "--out", str(tmp_path / "whole"), "--checkpoints", str(tmp_path / "ck_whole")],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    killed = subprocess.Popen([*stage, "--out", str(tmp_path / "resumed"), "--checkpoints", str(tmp_path / "ck")],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # wait: run by run, run 1 done and run 2 under way; stacked, both under way and saved at
    # one epoch, checked while the stage is stopped (SIGSTOP), so that it saves nothing in
    # between. (Killed between two runs' saves, the runs resume one by one, equal to the
    # stack only up to rounding: test_stack.py's resume test.)
    under_way = _stack_saved_at_one_epoch if stacked else \
        (lambda ck: list(ck.glob("*.done.pt")) and list(ck.glob("*-s1.pt")))
    while True:
        assert killed.poll() is None and time.monotonic() < deadline
        killed.send_signal(signal.SIGSTOP)
        if under_way(tmp_path / "ck"):
            break
        killed.send_signal(signal.SIGCONT)
        time.sleep(0.1)
    killed.kill()
    killed.wait(timeout=60)
    saved = {f.name: f.stat().st_size for f in (tmp_path / "ck").glob("*.pt")}
    assert saved and not (tmp_path / "resumed").exists()
    resumed = subprocess.run([*stage, "--out", str(tmp_path / "resumed"), "--checkpoints", str(tmp_path / "ck")],
                             cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    if not stacked:
        assert "main: 1 of 2 runs finished before; training the others" in resumed.stdout  # not retrained
    a, b = _outputs(tmp_path / "whole"), _outputs(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) > 10
    assert all(np.array_equal(a[k], b[k], equal_nan=True) and a[k].dtype == b[k].dtype for k in a), \
        [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]
    # and byte for byte: the outputs hold no MLflow run id (tracking.py's `outputs` tag)
    from noisylabels.io import dir_digest

    assert dir_digest(tmp_path / "whole") == dir_digest(tmp_path / "resumed")
    assert not (tmp_path / "ck").exists()  # removed once the group was saved
