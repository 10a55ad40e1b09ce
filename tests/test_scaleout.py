"""Beyond one process: a real Ray cluster and a real MLflow tracking server, started here.

- A Ray head on 127.0.0.1 with 2 CPUs (`ray start --head`, stopped afterwards) trains a
  group through `--executor ray`: the same output files, byte for byte, as the local
  executor. A missing or unreachable cluster stops the stage before training, in one line.
- An `mlflow server` on 127.0.0.1 (SQLite backend, artifacts proxied to a folder) receives
  the tiny pipeline's runs and the report's artifacts through MLFLOW_TRACKING_URI; nothing
  is written to the repository's own store.

Marked slow (about two minutes); CI runs them too.
"""
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, TINY_PARAMS, free_port, pipeline_repo, run_stage, sh
from noisylabels.io import dir_digest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent  # the mlflow command of this environment


def _train(prepared_args, group, out, tmp_path, **env):
    args = ["--group", group, *prepared_args[2:], "--out", out, "--checkpoint-every", "1epoch"]
    return run_stage("pretrain.py", *args, cwd=tmp_path,
                     env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", **env})


def test_a_group_trained_by_ray_tasks_equals_the_local_executor(tmp_path, params, prepared, write_params,
                                                                ray_address):
    args = prepared(params)
    group = "sce_table1-forward-digits"  # 6 runs; the realized matrix travels with each job
    assert run_stage("noise.py", "--group", group, "--params", write_params(params), "--raw", tmp_path / "raw",
                     "--out", tmp_path / "noisy" / "sce_table1-digits" / group, cwd=tmp_path).returncode == 0
    local = _train(args, group, tmp_path / "local", tmp_path, NOISYLABELS_EXECUTOR="local")
    assert local.returncode == 0, local.stderr
    ray = _train(args, group, tmp_path / "ray", tmp_path, NOISYLABELS_EXECUTOR="ray", RAY_ADDRESS=ray_address)
    assert ray.returncode == 0, ray.stderr
    assert len(list((tmp_path / "ray").glob("*.npz"))) == 6
    assert dir_digest(tmp_path / "ray") == dir_digest(tmp_path / "local")  # every file, byte for byte
    assert not any((tmp_path / ".checkpoints").rglob("*.pt"))  # the tasks' checkpoints, removed when saved


def _ray_task_pids() -> list[int]:
    """Ray worker processes running a run now (Ray titles them after the task)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "cmdline").read_bytes().startswith(b"ray::train_job"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_a_ray_task_killed_mid_run_is_retried_and_resumes_from_its_checkpoint(tmp_path, params, prepared,
                                                                               ray_address):
    params["train"].update(epochs=300, milestones=[150])  # ~7 s per run
    args = prepared(params)
    whole = _train(args, "main", tmp_path / "whole", tmp_path)
    assert whole.returncode == 0, whole.stderr
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "NOISYLABELS_EXECUTOR": "ray",
           "RAY_ADDRESS": ray_address, "NOISYLABELS_CHECKPOINT_EVERY": "10epochs"}
    env.pop("DVC_ROOT", None)
    folder = tmp_path / "ck"
    stage = subprocess.Popen([sys.executable, str(REPO / "stages/pretrain.py"), *map(str, args), "--out",
                              str(tmp_path / "resumed"), "--checkpoints", str(folder)],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _saved_epoch(folder / "symmetric-0.4-s0.pt") < 150:  # half of run s0 is in its checkpoint
        assert stage.poll() is None and time.monotonic() < deadline, stage.communicate()
        time.sleep(0.1)
    for pid in _ray_task_pids():  # as if their node went away: no cleanup, no exception in the task
        os.kill(pid, 9)
    out, err = stage.communicate(timeout=300)
    assert stage.returncode == 0, err
    assert dir_digest(tmp_path / "resumed") == dir_digest(tmp_path / "whole")  # as if never killed
    assert not folder.exists()
    # MLflow shows the lost attempt FAILED, and the retried task's run, which trained the
    # epochs after its checkpoint, not all 300: about half as long as the uninterrupted run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    whole_run, lost, retried = client.search_runs([client.get_experiment_by_name("main").experiment_id],
                                                  "attributes.run_name = 'sl-digits-symmetric-0.4-s0'",
                                                  order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in (whole_run, lost, retried)] == ["FINISHED", "FAILED", "FINISHED"]
    took = [(r.info.end_time - r.info.start_time) / 1000 for r in (whole_run, retried)]
    assert took[1] < 0.8 * took[0], took
    steps = sorted(m.step for m in client.get_metric_history(retried.info.run_id, "test_acc"))
    assert steps == list(range(1, 301))  # every epoch once, those before the checkpoint included


def _saved_epoch(path: Path) -> int:
    import torch

    try:
        return torch.load(path, weights_only=True)["payload"]["epoch"]
    except (OSError, EOFError, RuntimeError):  # not written yet
        return 0


def _one_error_line(r, expect):
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]  # beside MLflow's own log
    assert errors == [r.stderr.strip().splitlines()[-1]] and expect in errors[0], r.stderr


def test_a_missing_or_unreachable_ray_cluster_stops_before_training(tmp_path, params, prepared):
    args = prepared(params)
    out = tmp_path / "runs"
    for env, expect in [({}, "--executor ray: RAY_ADDRESS is not set"),
                        ({"RAY_ADDRESS": f"127.0.0.1:{free_port()}"}, "no Ray cluster reachable there")]:
        started = time.monotonic()
        r = _train(args, "main", out, tmp_path, NOISYLABELS_EXECUTOR="ray", **env)
        assert time.monotonic() - started < 60  # not Ray's minutes of retrying
        _one_error_line(r, expect)
        assert len(r.stderr.strip().splitlines()) == 1
        assert not out.exists() and not (tmp_path / "mlflow.db").exists()  # no output, no run


def test_a_run_failing_in_a_ray_task_stops_the_stage_as_a_local_one_does(tmp_path, params, prepared, ray_address):
    params["train"]["lr"] = 1e20  # the loss turns NaN in epoch 1
    out = tmp_path / "runs"
    r = _train(prepared(params), "main", out, tmp_path, NOISYLABELS_EXECUTOR="ray", RAY_ADDRESS=ray_address)
    _one_error_line(r, "main symmetric-0.4-s0: diverged in epoch 1: train_loss=nan at lr=1e+20")
    assert not out.exists()


@pytest.fixture
def tracking_server(tmp_path):
    """`mlflow server` on a free loopback port: SQLite backend, artifacts proxied into a folder."""
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store}/mlflow.db", "--artifacts-destination", str(store / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
    yield url, store
    os.killpg(server.pid, 15)  # the server and its gunicorn/uvicorn workers
    server.wait(timeout=60)


def test_the_pipeline_logs_runs_and_artifacts_to_a_tracking_server(tmp_path, tracking_server):
    from mlflow.tracking import MlflowClient

    url, store = tracking_server
    root = tmp_path / "repo"
    root.mkdir()
    env, dvc = pipeline_repo(root, TINY_PARAMS, {"MLFLOW_TRACKING_URI": url})
    sh([*dvc, "repro"], root, env)
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists()  # all went to the server
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("sce_table1")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server's proxy, not a local folder
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 3 and len(runs) == 3 + 3 * 6  # a parent per group, a run per model
    assert {r.info.status for r in runs} == {"FINISHED"}
    # the report's table went through the proxy into the server's artifact folder
    listed = {f.path for f in client.list_artifacts(parents[0].info.run_id)}
    assert any(p.endswith(".md") for p in listed), listed
    stored = {p.name for p in (store / "artifacts").rglob("*") if p.is_file()}
    assert "sce_table1.md" in stored and "sce_table1.csv" in stored, stored
