"""The MLflow conventions of tracking.py on a real SQLite store: a repository moved with its
store logs its artifacts under its new folder, and the runs logged before still find theirs."""
import shutil

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
    assert tracker.client.get_experiment_by_name("main").artifact_location == (new / "mlartifacts/main").as_uri()
    # the run logged before the move finds its artifact at the new place too
    assert [f.path for f in tracker.client.list_artifacts(before)] == ["before.md"]
    assert tracker.client.get_run(before).info.artifact_uri == (new / f"mlartifacts/main/{before}/artifacts").as_uri()


def test_a_store_in_place_is_left_as_it_is(tmp_path, monkeypatch):
    tracker = _tracker(tmp_path, monkeypatch)
    _logged_artifact(tracker, tmp_path, "run")
    assert tracking.relocate_artifacts(tmp_path / "mlflow.db", tmp_path) == []
