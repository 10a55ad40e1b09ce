"""The report stage's logic: every figure (paper_figures.py), every table, the claims report
and reports/metrics.json from the training and evaluate stages' outputs; each table and its
accuracy curves also attached in MLflow to the parent runs of the groups it summarises.

For each table section in params.yaml (and the main experiment): <table>.md and <table>.csv
under reports/tables/; reports/claims.md checks each paper's conclusions on the runs
(claims.py). The list of runs comes from params.yaml, so a shrunk grid never leaves stale rows.
One stage for figures and tables (not two): DVC's time per stage it runs is about 1.3 s here,
and the figures are drawn while MLflow opens and finds the parent runs (tracking.open_early).
"""
from __future__ import annotations

from pathlib import Path

import click

from noisylabels import tracking
from noisylabels.engine import results
from noisylabels.cli import stage_errors
from noisylabels.io import atomic_dir, check_writable, dir_digest, write_json, write_text
from noisylabels.report import claims, paper_figures, tables
from noisylabels.resolve import load_params, resolve_group


def build(params_file: str, raw: str, noisy: str, runs_dir: str, metrics_dir: str, out: str, workers: int) -> None:
    out = Path(out)
    with stage_errors():  # every input read and the store checked before anything is written
        params = load_params(params_file)
        runs, per_epoch = tables.collect(params, metrics_dir)
        groups = {g: resolve_group(params, g) for g in runs["group"].unique()}
        for g, group in groups.items():
            results.load_group(f"{runs_dir}/{group.folder}", group.stage)  # checked: a damaged folder stops here
        for target in ("tables", "claims.md", "metrics.json"):
            check_writable(out / target)
        # the store opens in the helper process while this one imports pandas and matplotlib
        # (tracking.open_early); it then finds the parent runs while the figures are drawn
        tracker = tracking.Tracker()
        parents = tracker.find_parents([(group.table, g, dir_digest(f"{runs_dir}/{group.folder}"))
                                        for g, group in groups.items()])
        # the figures first: each table's accuracy curves are attached beside it
        for line in paper_figures.build(params, per_epoch, raw, noisy, runs_dir, out / "figures", workers):
            click.echo(line)
        curves = {t: tables.curves_path(out / "figures", t, params) for t in runs["table"].unique()}
        summary = tables.summarize(runs)
        claims_md, claim_counts = claims.claims_report(runs)
        rendered = {}  # table -> (markdown, csv)
        for table, part in summary.groupby("table", sort=False):
            seeds = sorted(runs.loc[runs["table"] == table, "seed"].unique().tolist())
            notes = tables.shared_phase1([g for g in groups.values() if g.table == table])
            rendered[table] = (tables.table_markdown(tables.title(table, params), part, seeds, notes),
                               tables.table_csv(part).to_csv(index=False, float_format="%.4f"))
        parents = dict(zip(groups, parents()))
    written = {}
    with atomic_dir(out / "tables") as tdir:
        for table, (markdown, csv) in rendered.items():
            write_text(tdir / f"{table}.md", markdown)
            write_text(tdir / f"{table}.csv", csv)
            written[table] = [out / f"tables/{table}.md", out / f"tables/{table}.csv", curves[table]]
    write_text(out / "claims.md", claims_md)
    write_json(out / "metrics.json", {**tables.metrics_summary(summary), "claims": claims.as_metrics(claim_counts)})
    for table, files in written.items():
        for group in runs.loc[runs["table"] == table, "group"].unique():
            if parents[group]:
                tracker.attach(parents[group], files)
            else:
                click.echo(f"report: {group}: no MLflow parent run wrote these outputs (pulled from a DVC remote?); "
                           "its table is not attached in MLflow")
        click.echo(f"report: {table} -> {', '.join(map(str, files[:2]))}")
    click.echo(f"report: claims -> {out / 'claims.md'} ({sum(c['hold'] for c in claim_counts.values())} of "
               f"{sum(c['checked'] for c in claim_counts.values())} hold)")
