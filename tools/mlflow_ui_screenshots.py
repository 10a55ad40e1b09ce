"""Look at the MLflow UI as a user does: start `mlflow ui` on the repository's store, open it
in headless Chromium and save screenshots of the experiment list, one experiment's runs and
one model run's metric curves.

    python tools/mlflow_ui_screenshots.py --experiment main --out /tmp/mlflow-ui

Needs a `dvc repro`'s mlflow.db and Chromium (`apt-get install chromium`). The server is
stopped at the end, also on failure.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click
from mlflow.tracking import MlflowClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise click.ClickException(f"{url}: the MLflow server did not answer within {seconds:.0f} s")


def _screenshot(chromium: str, url: str, path: Path) -> None:
    # the UI is a single-page app: give its scripts virtual time to fetch and draw
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1600,1000", "--virtual-time-budget=30000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)
    click.echo(f"{path}: {url}")


@click.command()
@click.option("--store", default="sqlite:///mlflow.db", show_default=True, help="the tracking store to show")
@click.option("--experiment", default="main", show_default=True)
@click.option("--out", default="mlflow-ui", show_default=True, help="folder of the screenshots")
def main(store, experiment, out):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise click.ClickException("no chromium on PATH; install it (apt-get install chromium)")
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise click.ClickException(f"experiment={experiment!r}: not in {store}; run `dvc repro` first")
    runs = client.search_runs([exp.experiment_id], "tags.`mlflow.parentRunId` != ''", max_results=1)
    port, out = _free_port(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(f"{base}/health")
        # a new browser opens MLflow 3 in its GenAI mode; the link says "model training"
        # (opened from the list, an experiment tagged custom_model_development switches itself)
        mode = "?workflowType=machine_learning"
        _screenshot(chromium, f"{base}/#/experiments{mode}", out / "1_experiments.png")
        _screenshot(chromium, f"{base}/#/experiments/{exp.experiment_id}/runs{mode}", out / "2_runs.png")
        if runs:
            run = runs[0].info
            _screenshot(chromium, f"{base}/#/experiments/{exp.experiment_id}/runs/{run.run_id}/model-metrics{mode}",
                        out / "3_run_curves.png")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
