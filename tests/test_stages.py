"""Stage scripts on bad input that needs the earlier stages' outputs (data, noisy labels, an
MLflow store): one line, exit code 2, nothing written; and what the download stage records
of local files. Bad params and options alone are in test_bad_inputs.py."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_stage


def _fails_cleanly(result, expect, out):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], result.stderr
    assert not out.exists()


def test_noise_stage_needs_the_downloaded_data(tmp_path, params, write_params):
    out = tmp_path / "out"
    r = run_stage("noise.py", "--group", "main", "--params", write_params(params), "--raw", tmp_path / "raw",
                  "--out", out, cwd=tmp_path)
    _fails_cleanly(r, "meta.json: missing", out)


def test_pretrain_stops_before_training_when_tracking_server_is_down(tmp_path, params, prepared):
    with socket.socket() as s:  # a free loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    r = run_stage("pretrain.py", *prepared(params), "--out", out, cwd=tmp_path,
                  env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    _fails_cleanly(r, "tracking server unreachable", out)


def test_pretrain_refuses_backward_with_a_singular_matrix_before_any_work(tmp_path, params, prepared):
    # every row uniform: rows sum to 1 (a valid transition matrix) but T has no inverse
    params["loss"] = {"name": "backward", "matrix": [[0.1] * 10] * 10, "anchor_percentile": 97.0}
    out = tmp_path / "runs"
    r = run_stage("pretrain.py", *prepared(params), "--out", out, cwd=tmp_path,
                  env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    _fails_cleanly(r, "backward needs an invertible transition matrix", out)
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run was started either


def test_finetune_needs_phase_one_output(tmp_path, params, prepared, write_params):
    args = prepared(params)  # raw data and params; a two-phase group's noisy labels next
    group = "o2u_table-o2u-digits"
    path = write_params(params)
    assert run_stage("noise.py", "--group", group, "--params", path, "--raw", tmp_path / "raw",
                     "--out", tmp_path / "noisy" / group, cwd=tmp_path).returncode == 0
    out = tmp_path / "runs"
    r = run_stage("finetune.py", "--group", group, *args[2:], "--phase1", tmp_path / "phase1", "--out", out,
                  cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    _fails_cleanly(r, "symmetric-0.4-s0.npz: missing; regenerate it with `dvc repro -f pretrain-two_phase@o2u_table-o2u-digits`", out)
    r = run_stage("finetune.py", *args, "--out", out, cwd=tmp_path)
    _fails_cleanly(r, "group='main': not a two-phase group", out)


def test_pretrain_refuses_a_forget_rate_of_one_before_any_work(tmp_path, params, prepared):
    params["o2u_table"]["digits"]["methods"]["o2u"]["pretrain"]["forget_rate"] = 1.0
    args = prepared(params)
    out = tmp_path / "phase1"
    r = run_stage("pretrain.py", "--group", "o2u_table-o2u-digits", *args[2:], "--out", out, cwd=tmp_path,
                  env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    _fails_cleanly(r, "o2u_table.digits.methods.o2u.pretrain.forget_rate=1.0: expected a number in [0, 1)", out)
    assert not (tmp_path / "mlflow.db").exists()  # nothing started, not even a tracking store


def test_a_diverging_run_stops_the_stage_with_one_line_and_a_failed_mlflow_run(tmp_path, params, prepared):
    from mlflow.tracking import MlflowClient

    params["train"]["lr"] = 1e20  # finite, valid, and far too large: the loss turns NaN
    out = tmp_path / "runs"
    db = f"sqlite:///{tmp_path}/mlflow.db"
    r = run_stage("pretrain.py", *prepared(params), "--out", out, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": db})
    assert r.returncode == 2 and not out.exists(), r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]  # beside MLflow's own log
    assert errors == [r.stderr.strip().splitlines()[-1]]
    assert "main symmetric-0.4-s0: diverged in epoch 1: train_loss=nan at lr=1e+20" in errors[0]
    client = MlflowClient(db)
    runs = client.search_runs([client.get_experiment_by_name("main").experiment_id])
    # the group's parent, and any model run that had started: none finished
    assert {run.info.status for run in runs} == {"FAILED"}
    assert len([run for run in runs if "mlflow.parentRunId" not in run.data.tags]) == 1


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "stages").glob("*.py")))
def test_help_answers_without_torch_mlflow_or_matplotlib(script):
    """Each takes seconds to import: a stage imports them when it runs, not for --help."""
    probe = ("import runpy, sys\n"
             "sys.argv = [sys.argv[1], '--help']\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print([m for m in ('torch', 'mlflow', 'matplotlib') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", probe, str(REPO / "stages" / script)], capture_output=True, text=True)
    assert "Usage:" in r.stdout and r.stdout.rstrip().endswith("[]"), r.stdout + r.stderr


def test_validate_checks_every_group_and_writes_the_noise_recipes(tmp_path, params, write_params):
    from noisylabels.engine.noise import Recipe
    from noisylabels.resolve import group_names, resolve_group

    out, recipes = tmp_path / "validated.txt", tmp_path / "noise_recipes.json"

    def validate():
        r = run_stage("validate.py", "--params", write_params(params), "--out", out, "--recipes", recipes, cwd=tmp_path)
        return r, out.read_text(), recipes.read_bytes()

    params["o2u_table"]["digits"]["methods"]["o2u"]["finetune"]["lr"] = float("nan")
    r = run_stage("validate.py", "--params", write_params(params), "--out", out, "--recipes", recipes, cwd=tmp_path)
    _fails_cleanly(r, "o2u_table.digits.methods.o2u.finetune.lr=nan: expected a finite number", out)
    assert not recipes.exists()
    params["o2u_table"]["digits"]["methods"]["o2u"]["finetune"]["lr"] = 0.1
    r, text, before = validate()
    assert r.returncode == 0, r.stderr
    found = json.loads(before)
    groups = [resolve_group(params, name) for name in group_names(params)]
    assert list(found) == [g.folder for g in groups]
    main = Recipe.of(groups[0])
    assert found["main"] == {"group": "main", "dataset": "digits", "settings": [{"type": main.settings[0].type,
                             "rate": main.settings[0].rate}], "seeds": list(main.seeds), "draw": main.draw,
                             "val_fraction": main.val_fraction}
    params["loss"]["alpha"] = 0.5  # a valid value no label reads: the same bytes, so the noise stage does not rerun
    params["train"]["lr"] = 0.05
    assert validate()[1:] == (text, before)
    params["noise"]["seeds"] = [*params["noise"]["seeds"], 7]  # main's labels change: so does its recipe only
    r, after_text, after = validate()
    assert after_text == text  # the download stages' input: unchanged
    changed = {k for k, v in json.loads(after).items() if found[k] != v}
    assert changed == {"main"} and json.loads(after)["main"]["seeds"][-1] == 7


def test_download_stage_records_local_files_and_reports_a_smaller_data_set(tmp_path, params, write_params):
    from test_data import write_mnist_fixture

    params["datasets"]["mnist"] = {}
    write_mnist_fixture(tmp_path / "downloads", "MNIST")
    r = run_stage("download.py", "--dataset", "mnist", "--params", write_params(params),
                  "--downloads", tmp_path / "downloads", "--out", tmp_path / "raw", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    note = "mnist: the local files hold 12 training and 5 test images; the published data set has 60000 and 10000"
    assert r.stdout.splitlines()[0] == f"note: {note}"
    meta = json.loads((tmp_path / "raw" / "meta.json").read_text())
    raw = tmp_path / "downloads" / "MNIST" / "raw"
    assert meta["notes"] == [note] and meta["source"] == f"MNIST from the files in {raw}/"
    assert [f["path"] for f in meta["files"]] == [str(raw / f) for f in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_model_runs_show_their_epochs_in_mlflow_while_they_train(tmp_path, params, prepared, executor, request):
    """A model run is created when its training starts and its per-epoch metrics arrive while
    it trains (every tracking.LIVE_EVERY_S seconds); when it ends, every epoch is there once."""
    from mlflow.tracking import MlflowClient

    epochs = 3000  # ~15 s of training for the two runs, which stack: longer than MLflow takes to open
    params["train"].update(epochs=epochs, milestones=[epochs // 2])
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "NOISYLABELS_EXECUTOR": executor}
    if executor == "ray":
        env["RAY_ADDRESS"] = request.getfixturevalue("ray_address")
    env.pop("DVC_ROOT", None)
    args = prepared(params)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    client.search_experiments()  # the store exists before the stage starts polling it
    stage = subprocess.Popen([sys.executable, str(REPO / "stages/pretrain.py"), *map(str, args), "--out",
                              str(tmp_path / "runs")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    seen_live, deadline = None, time.monotonic() + 240
    while stage.poll() is None and seen_live is None:
        assert time.monotonic() < deadline
        exp = client.get_experiment_by_name("main")
        for run in client.search_runs([exp.experiment_id]) if exp else []:
            steps = len(client.get_metric_history(run.info.run_id, "test_acc"))
            if "mlflow.parentRunId" in run.data.tags and run.info.status == "RUNNING" and 0 < steps < epochs:
                seen_live = steps
        time.sleep(0.5)
    out, err = stage.communicate(timeout=300)
    assert stage.returncode == 0, err
    assert seen_live, "no model run showed part of its curve while it trained"
    runs = client.search_runs([client.get_experiment_by_name("main").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in children:
        history = client.get_metric_history(run.info.run_id, "test_acc")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))  # every epoch, once
        assert "test_acc_last" in run.data.metrics and run.data.params["loss.name"] == "sl"
