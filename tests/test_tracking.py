"""The MLflow conventions of tracking.py on a real SQLite store: a repository moved with its
store logs its artifacts under its new folder, and the runs logged before still find theirs;
the report attaches a table once; a stage's client in the helper process (open_early)."""
import os
import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from noisylabels import tracking


def _tracker(root, monkeypatch) -> tracking.Tracker:
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tracking.Tracker()


def _logged_artifact(tracker, root, name: str) -> str:
    """A finished run of experiment `main` with one artifact file; its id."""
    run_id = tracker.start_run("main", name, {}, {})
    table = root / f"{name}.md"
    table.write_text(f"table of {name}\n")
    tracker.log_artifacts(run_id, [table])
    tracker.finish(run_id)
    return run_id


def test_a_moved_repository_logs_its_artifacts_under_its_new_folder(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "moved" / "repo"
    old.mkdir()
    before = _logged_artifact(_tracker(old, monkeypatch), old, "before")
    assert (old / f"mlartifacts/main/{before}/artifacts/before.md").is_file()

    new.parent.mkdir()
    shutil.move(old, new)  # the repository, its mlflow.db and mlartifacts/ together
    tracker = _tracker(new, monkeypatch)
    after = _logged_artifact(tracker, new, "after")

    assert not old.exists()  # nothing was written to the old place
    assert (new / f"mlartifacts/main/{after}/artifacts/after.md").read_text() == "table of after\n"
    client = MlflowClient(tracker.uri)
    assert client.get_experiment_by_name("main").artifact_location == (new / "mlartifacts/main").as_uri()
    # the run logged before the move finds its artifact at the new place too
    assert [f.path for f in client.list_artifacts(before)] == ["before.md"]
    assert client.get_run(before).info.artifact_uri == (new / f"mlartifacts/main/{before}/artifacts").as_uri()


def test_a_store_in_place_is_left_as_it_is(tmp_path, monkeypatch):
    tracker = _tracker(tmp_path, monkeypatch)
    _logged_artifact(tracker, tmp_path, "run")
    assert tracking.relocate_artifacts(tmp_path / "mlflow.db", tmp_path) == []


def test_attach_logs_a_table_once_and_again_when_it_changes(tmp_path, monkeypatch):
    tracker = _tracker(tmp_path, monkeypatch)
    run_id = tracker.start_run("main", "parent", {"group": "main"}, {})
    tracker.set_tags(run_id, {"outputs": "abc"})
    tracker.finish(run_id)
    table = tmp_path / "main.md"
    artifact = tmp_path / f"mlartifacts/main/{run_id}/artifacts/main.md"

    def attach() -> bool:  # as a report does: its own Tracker, the run as found, then its table
        report = tracking.Tracker()
        return report.attach(report.find_parents([("main", "main", "abc")])()[0], [table])

    table.write_text("first\n")
    assert attach() and artifact.read_text() == "first\n"
    artifact.write_text("not rewritten\n")  # marks whether the next call logs it again
    assert not attach() and artifact.read_text() == "not rewritten\n"
    table.write_text("second\n")
    assert attach() and artifact.read_text() == "second\n"
    later = tracker.start_run("main", "parent", {"group": "main", "outputs": "abc"}, {})  # a rerun's, the same outputs
    running = tracker.start_run("main", "parent", {"group": "main", "outputs": "abc"}, {})
    tracker.finish(later)
    found = tracker.find_parents([("main", "main", "abc"), ("main", "main", "other digest"),
                                  ("no such experiment", "main", "abc"), ("main", "other group", "abc")])()
    assert [f and f[0] for f in found] == [later, None, None, None]  # the latest FINISHED one
    tracker.finish(running)


def test_a_stage_logging_through_the_helper_process_never_imports_mlflow(tmp_path):
    """open_early's helper holds MLflow's client: the stage process logs a run, finds it
    and attaches a table to it without importing mlflow, gets MLflow's errors as MLflow
    raised them, and ends (the helper with it) as a stage does."""
    (tmp_path / "table.md").write_text("a table\n")
    script = """
import sys

import pytest
from pathlib import Path
from noisylabels import tracking
tracking.open_early()
tracker = tracking.Tracker()
run_id = tracker.start_run("main", "parent", {"group": "main", "outputs": "abc"}, {"lr": "0.1"})
tracker.log_metrics(run_id, {"test_acc": 0.5})
tracker.finish(run_id)
assert tracker.attach(tracker.find_parents([("main", "main", "abc")])()[0], [Path("table.md")])
assert "mlflow" not in sys.modules, "the stage imported mlflow"
try:
    tracker.finish("no-such-run")
except Exception as e:  # MLflow's own exception (its class: the stage imports mlflow now)
    print("error:", type(e).__name__)
print(run_id)
"""
    env = {**os.environ, "DVC_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    error, run_id = out.stdout.split("\n")[:2]
    assert error == "error: MlflowException"
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"test_acc": 0.5} and run.data.params == {"lr": "0.1"}
    assert (tmp_path / f"mlartifacts/main/{run_id}/artifacts/table.md").read_text() == "a table\n"


def test_an_answer_left_by_an_interrupted_call_is_not_taken_for_the_next_one(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "_helper", None)
    tracking.open_early()
    helper = tracking._helper
    monkeypatch.setattr(tracking, "_helper", None)  # the next test opens its own
    tracker = _tracker(tmp_path, monkeypatch)
    tracker.client = helper
    helper.open(tracker.uri)
    run_id = tracker.start_run("main", "run", {}, {})
    helper.submit("experiment", ("no such experiment",))  # a call whose answer a signal kept this process from reading
    assert helper.experiment("main")[0] == tracker.experiment_id("main")
    tracker.finish(run_id)
    helper.conn.close()  # the helper ends


@pytest.mark.parametrize("wait", [0, 1], ids=["before the answer is sent", "after it is sent"])
def test_a_stage_that_stops_before_reading_an_answer_ends_with_its_helper_quietly(tmp_path, wait):
    """The report asks for the parent runs, then draws: a stage stopped meanwhile (a bad
    figure input, Ctrl-C) never reads the answer, and the helper ends without a traceback,
    whether it answers into a closed pipe or finds the pipe reset by an unread answer."""
    script = f"""
import time
from noisylabels import tracking
tracking.open_early()
tracker = tracking.Tracker()
tracker.find_parents([("main", "main", "abc")])
time.sleep({wait})
raise SystemExit(3)
"""
    env = {**os.environ, "DVC_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 3 and "Traceback" not in out.stderr and "Error" not in out.stderr, out.stderr
