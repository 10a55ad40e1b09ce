"""Stage report: every figure and table, the claims report and reports/metrics.json, from the
training and evaluate stages' outputs; each table and its accuracy curves also attached in
MLflow to the parent runs of the groups it summarises.

    python stages/report.py                 # -> reports/figures, reports/tables, reports/claims.md, reports/metrics.json
    python stages/report.py --out /tmp/r    # the same into another folder (MLflow: attached only if changed)

What is drawn and built, and how, is in lib/noisylabels/report/ (paper_figures.py, build.py,
tables.py, claims.py). A figure whose inputs did not change is kept (lib/noisylabels/memo.py;
delete reports/figures to draw every figure again).
"""
import click

from noisylabels import tracking
from noisylabels.cli import Stage, workers_option


@click.command(cls=Stage)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True)
@click.option("--noisy", default="data/noisy", show_default=True)
@click.option("--runs", "runs_dir", default="data/runs", show_default=True,
              help="folder of the pretrain and finetune stages' outputs")
@click.option("--metrics", "metrics_dir", default="reports/metrics", show_default=True,
              help="folder of the evaluate stage's outputs")
@click.option("--out", default="reports", show_default=True,
              help="folder of figures/, tables/, claims.md and metrics.json")
@workers_option("processes drawing the figures side by side (the figures do not depend on it)")
def main(params_file, raw, noisy, runs_dir, metrics_dir, out, workers):
    tracking.open_early()  # MLflow's imports beside pandas', matplotlib's, the figures and the tables
    # imported here, not at the top: --help answers without pandas and matplotlib (2 s)
    from noisylabels.report.build import build
    build(params_file, raw, noisy, runs_dir, metrics_dir, out, workers)


if __name__ == "__main__":
    main()
