"""The report stage's logic: every table, figure and reports/metrics.json from the evaluate
stage's outputs, each table and figure also attached in MLflow to the parent runs of the
groups it summarises.

For each table section in params.yaml (and the main experiment): <table>.md and <table>.csv
under reports/tables/, <table>_test_acc.png under reports/figures/. The list of runs comes
from params.yaml, so a shrunk grid never leaves stale rows.
"""
from __future__ import annotations

from pathlib import Path

import click

from noisylabels import results, tracking
from noisylabels.cli import stage_errors
from noisylabels.io import atomic_dir, check_writable, write_json, write_text
from noisylabels.report import figures, tables
from noisylabels.resolve import MAIN, load_params, resolve_group


def build(params_file: str, metrics_dir: str, runs_dir: str, out: str) -> None:
    out = Path(out)
    with stage_errors():  # every input read and the store opened before anything is written
        params = load_params(params_file)
        runs, curves = tables.collect(params, metrics_dir)
        parents = {g: results.load_group(f"{runs_dir}/{g}", resolve_group(params, g).stage)["mlflow_parent_run_id"]
                   for g in runs["group"].unique()}
        for folder in ("tables", "figures", "metrics.json"):
            check_writable(out / folder)
        tracker = tracking.Tracker()
    summary = tables.summarize(runs)
    written = {}
    with atomic_dir(out / "tables") as tdir, atomic_dir(out / "figures") as fdir:
        for table, part in summary.groupby("table", sort=False):
            title = "Main experiment" if table == MAIN else params[table].get("title", table)
            seeds = sorted(runs.loc[runs["table"] == table, "seed"].unique().tolist())
            write_text(tdir / f"{table}.md", tables.table_markdown(title, part, seeds))
            tables.table_csv(part).to_csv(tdir / f"{table}.csv", index=False, float_format="%.4f")
            figures.test_accuracy_curves(curves[curves["table"] == table], fdir / f"{table}_test_acc.png",
                                         f"{title}: test accuracy per epoch (mean ± sd over seeds)")
            written[table] = [f"tables/{table}.md", f"tables/{table}.csv", f"figures/{table}_test_acc.png"]
    write_json(out / "metrics.json", tables.metrics_summary(summary))
    for table, files in written.items():
        for group in runs.loc[runs["table"] == table, "group"].unique():
            tracker.log_artifacts(parents[group], [out / f for f in files])
        click.echo(f"report: {table} -> {', '.join(str(out / f) for f in files)}")
