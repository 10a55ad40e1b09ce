"""End to end: `dvc repro` on tiny params in a temporary git repository, then `dvc exp run`.

Marked slow (about a minute); CI runs it too.
"""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TINY_PARAMS, pipeline_repo, sh

pytestmark = pytest.mark.slow


def _top_level_runs(repo, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags], runs


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    env, dvc = pipeline_repo(root, TINY_PARAMS)
    first = sh([*dvc, "repro"], root, env)
    return root, env, dvc, first


def test_repro_writes_tables_figures_and_metrics(repo):
    root, _, _, _ = repo
    for f in ("tables/main.md", "tables/sce_table1.md", "tables/sce_table1.csv", "claims.md",
              "figures/sce/sce_table1_test_acc.png", "figures/main/main_test_acc.png", "metrics.json",
              # the paper figures whose runs the tiny grid has (CE and SL, clean and 40%)
              "figures/sce/fig3_classwise_epochs_digits.png", "figures/sce/fig3_classwise_epochs_digits.csv",
              "figures/sce/fig4_6_confidence_digits.png"):
        assert (root / "reports" / f).stat().st_size > 0, f
    assert not (root / "reports/figures/sce/fig1_classwise_curves_digits.png").exists()  # needs LSR: skipped
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert 0 <= metrics["main"]["test_acc_last"] <= 100 and metrics["main"]["n_seeds"] == 2
    assert set(metrics["sce_table1"]["digits"]) == {"ce", "sl", "forward"}
    table = pd.read_csv(root / "reports/tables/sce_table1.csv")
    assert len(table) == 9 and set(table["n_seeds"]) == {2}
    assert (table["published_dataset"] == "mnist").all()  # labelled stand-in, not ours
    assert "In brackets: published, mnist (Wang et al. 2019 (SCE), Table 1, shown for reference" in (
        root / "reports/tables/sce_table1.md").read_text()
    assert metrics["claims"]["sce"] >= 0  # the share of SCE's claims that hold on these runs


def test_two_phase_groups_hand_phase_one_artefacts_to_the_finetune_stage(repo):
    root, _, _, _ = repo
    with np.load(root / "data/phase1/o2u_table-o2u-digits/symmetric-0.4-s0.npz") as phase1:
        keep, score = phase1["keep"], phase1["score"]
    assert keep.mean() == pytest.approx(0.6, abs=0.01) and len(score) == len(keep)
    with np.load(root / "data/phase1/o2u_table-improved-digits/symmetric-0.4-s1.npz") as phase1:
        assert np.allclose(phase1["labels"].sum(axis=1), 1)
    metrics = json.loads((root / "reports/metrics/o2u_table-o2u-digits.json").read_text())
    assert metrics["epoch_offset"] == 3 and 0 <= metrics["runs"][0]["detect_auroc"] <= 1
    md = (root / "reports/tables/o2u_table.md").read_text()
    assert "noise detection precision" in md and "accuracy of the corrected labels" in md
    assert "In brackets: published, cifar4" in md
    parents, runs = _top_level_runs(root, "o2u_table")
    phases = sorted(r.data.tags.get("phase") for r in parents)
    assert phases == ["1", "1", "2", "2"]
    run = next(r for r in runs if r.data.tags.get("phase") == "2" and "mlflow.parentRunId" in r.data.tags
               and r.data.tags["method"] == "improved")
    assert run.data.params["finetune.mixup"] == "2.0"  # the per-setting override
    assert "label_acc_corrected" in run.data.metrics


def test_runs_are_in_mlflow(repo):
    root, _, _, _ = repo
    parents, runs = _top_level_runs(root, "main")
    assert len(parents) == 1 and len(runs) == 3  # a parent and one run per seed
    parent = parents[0]
    assert parent.info.run_name == "main" and parent.data.tags["dvc_stage"] == "pretrain-main"
    # MLflow's own columns, and the experiment opening on its training runs in MLflow 3's UI
    assert parent.data.tags["mlflow.source.name"].endswith("stages/pretrain.py") and parent.data.tags["mlflow.user"]
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_experiment_by_name("main")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # the data set as a dataset input; a model run spans its training, not just its logging
    (dataset,) = MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_run(parent.info.run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "digits" and len(dataset.dataset.digest) == 16
    child_run = next(r for r in runs if r.info.run_id != parent.info.run_id)
    assert child_run.info.start_time < child_run.info.end_time
    assert "test_acc_last/symmetric-0.4" in parent.data.metrics
    child = next(r for r in runs if r.info.run_id != parent.info.run_id)
    assert child.data.tags["seed"] in ("0", "1") and child.data.params["loss.alpha"] == "0.01"
    assert len(child.data.metrics) > 5
    assert (root / "mlartifacts").is_dir()  # the report's table and figure, attached to parents
    # one stage trained sce_table1's three groups: a parent run each, its own runs under it
    parents, runs = _top_level_runs(root, "sce_table1")
    assert sorted(p.data.tags["group"] for p in parents) == [
        "sce_table1-ce-digits", "sce_table1-forward-digits", "sce_table1-sl-digits"]
    assert {p.data.tags["dvc_stage"] for p in parents} == {"pretrain@sce_table1-digits"}
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 6 and {r.data.tags["group"] for r in children} == {parent.data.tags["group"]}
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_forward_used_the_realized_matrix_of_its_labels(repo):
    root, _, _, _ = repo
    noise_info = json.loads((root / "data/noisy/sce_table1-digits/sce_table1-forward-digits/noise.json").read_text())
    realized = {(r["setting"], r["seed"]): r["realized_matrix"] for r in noise_info["runs"]}
    with np.load(root / "data/runs/sce_table1-digits/sce_table1-forward-digits/asymmetric-0.3-s1.npz") as run:
        assert np.array_equal(run["transition_matrix"], np.array(realized[("asymmetric-0.3", 1)]))


def test_figures_are_the_same_bytes_drawn_by_one_process_or_two(repo, tmp_path):
    root, env, _, _ = repo
    drawn = {}
    for workers in (1, 2):
        out = tmp_path / f"workers{workers}"
        sh([sys.executable, "stages/report.py", "--workers", str(workers), "--out", str(out)], root, env)
        drawn[workers] = {p.relative_to(out): p.read_bytes() for p in sorted((out / "figures").rglob("*")) if p.is_file()}
    assert any(p.suffix == ".png" for p in drawn[1]) and drawn[1] == drawn[2]


def test_second_repro_runs_nothing(repo):
    root, env, dvc, _ = repo
    out = sh([*dvc, "repro"], root, env)
    assert "Running stage" not in out and "up to date" in out


def test_a_replaced_archive_in_downloads_reruns_the_download_stage(repo):
    root, env, dvc, _ = repo
    archive = root / "data/downloads/archive.tar.gz"
    archive.write_bytes(b"a local archive")
    try:
        assert "modified:           data/downloads" in sh([*dvc, "status", "download@digits"], root, env)
    finally:
        archive.unlink()
    assert "up to date" in sh([*dvc, "status", "download@digits"], root, env)


def test_a_forced_rerun_changes_no_tracked_file_and_leaves_no_stale_lock_entry(repo):
    """Outputs hold no MLflow run id, time or path: retraining every stage gives the same bytes,
    so dvc.lock and the committed reports stay as they were (a fresh clone's `dvc repro`
    leaves `git status` clean)."""
    root, env, dvc, _ = repo
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "first repro"], root, env)
    out = sh([*dvc, "repro", "-f"], root, env)
    assert "Running stage 'pretrain-main'" in out
    assert sh(["git", "status", "--porcelain"], root, env) == ""
    stages = set(sh([*dvc, "stage", "list", "--name-only"], root, env).split())
    assert set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) == stages
    # the report found the new parent runs by their outputs' digest: two parents now carry it
    parents, _ = _top_level_runs(root, "main")
    assert len(parents) == 2 and parents[0].data.tags["outputs"] == parents[1].data.tags["outputs"]


def test_a_local_remote_round_trip_needs_no_rerun(repo, tmp_path_factory):
    """README's remote recipe with a folder as the remote: push, clone, pull, and `dvc repro`
    in the clone runs nothing and its reports are the same bytes."""
    root, env, dvc, _ = repo
    remote = tmp_path_factory.mktemp("remote")
    sh([*dvc, "remote", "add", "-d", "shared", str(remote)], root, env)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "a DVC remote"], root, env)
    sh([*dvc, "push"], root, env)
    clone = tmp_path_factory.mktemp("clone") / "repo"
    sh(["git", "clone", "-q", str(root), str(clone)], root, env)
    sh([*dvc, "pull"], clone, env)
    out = sh([*dvc, "repro"], clone, env)
    assert "Running stage" not in out, out
    for f in (root / "reports").rglob("*"):
        if f.is_file():
            assert (clone / f.relative_to(root)).read_bytes() == f.read_bytes(), f
    assert (clone / "data/runs/main/symmetric-0.4-s0.npz").read_bytes() == \
        (root / "data/runs/main/symmetric-0.4-s0.npz").read_bytes()


def test_exp_run_reruns_only_what_depends_on_the_changed_value(repo, tmp_path):
    root, env, dvc, _ = repo
    out = sh([*dvc, "exp", "run", "-S", "loss.alpha=0.1"], root, env)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    # no label reads loss.alpha: the noise recipes (validate's output) are the same bytes, so
    # noise does not rerun, nor does any other group's training
    assert ran == {"validate", "pretrain-main", "evaluate", "report"}
    # evaluate and report make main's metrics and accuracy curves again and keep the rest
    # (memo.py); a fresh folder made from scratch has the same bytes, _made_from.json included
    n_groups = len(list((root / "reports/metrics").glob("*-digits.json"))) + 1
    assert "main: test acc last" in out and "sce_table1-ce-digits: test acc last" not in out
    assert f"evaluate: kept the file of {n_groups - 1} of {n_groups} groups" in out
    assert "figures: reports/figures/main/main_test_acc.png" in out and "fig3_classwise_epochs" not in out
    assert "figures: kept " in out
    sh([sys.executable, "stages/evaluate.py", "--out", str(tmp_path / "metrics")], root, env)
    sh([sys.executable, "stages/report.py", "--out", str(tmp_path)], root, env)
    for folder in ("metrics", "figures"):
        fresh, kept = tmp_path / folder, root / "reports" / folder
        assert sorted(p.relative_to(kept) for p in kept.rglob("*")) == sorted(p.relative_to(fresh) for p in fresh.rglob("*"))
        for f in fresh.rglob("*"):
            assert f.is_dir() or (kept / f.relative_to(fresh)).read_bytes() == f.read_bytes(), f
    parents, _ = _top_level_runs(root, "main")
    assert len(parents) == 3  # one new row in the MLflow UI
    assert parents[0].data.params["loss.alpha"] == "0.1" and parents[0].data.tags["dvc_exp_name"]
    assert parents[0].info.run_name == f"main ({parents[0].data.tags['dvc_exp_name']})"  # told apart from "main"
    shown = sh([*dvc, "exp", "show", "--json"], root, env)
    assert "test_acc_last" in shown


def test_a_finetune_change_reruns_phase_two_only(repo):
    root, env, dvc, _ = repo
    out = sh([*dvc, "exp", "run", "-S", "o2u_table.digits.methods.o2u.finetune.lr=0.05"], root, env)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"validate", "finetune@o2u_table-o2u-digits", "evaluate", "report"}


def test_a_noise_change_reruns_the_noise_stage_and_the_training_whose_labels_changed(repo):
    root, env, dvc, _ = repo
    out = sh([*dvc, "exp", "run", "-S", "noise.seeds=[0,2]"], root, env)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"validate", "noise", "pretrain-main", "evaluate", "report"}
    assert json.loads((root / "data/noisy/main/noise.json").read_text())["seeds"] == [0, 2]


def test_a_bad_value_stops_before_any_output_is_removed(repo):
    root, env, dvc, _ = repo
    params = root / "params.yaml"
    good = params.read_text()
    before = {f: f.read_bytes() for f in (root / "data/noisy/main").iterdir()}
    params.write_text(good.replace("lr: 0.1", "lr: -1.0", 1))
    try:
        r = subprocess.run([*dvc, "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode != 0
        assert "error: train.lr=-1.0: expected a number > 0" in r.stdout + r.stderr
        assert "Running stage 'noise'" not in r.stdout + r.stderr
        assert {f: f.read_bytes() for f in (root / "data/noisy/main").iterdir()} == before
    finally:
        params.write_text(good)
    assert "Running stage" not in sh([*dvc, "repro"], root, env).replace("Running stage 'validate'", "")
