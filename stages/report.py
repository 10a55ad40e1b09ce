"""Stage report: every table, the claims report and reports/metrics.json, from the evaluate
outputs (and the figures stage's accuracy curves, attached in MLflow beside the tables).

    python stages/report.py                 # -> reports/tables, reports/claims.md, reports/metrics.json

What is built, and how, is in lib/noisylabels/report/ (build.py, tables.py, claims.py).
"""
import click

from noisylabels import tracking
from noisylabels.cli import Stage


@click.command(cls=Stage)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--metrics", "metrics_dir", default="reports/metrics", show_default=True,
              help="folder of the evaluate stage's outputs")
@click.option("--runs", "runs_dir", default="data/runs", show_default=True,
              help="folder of the pretrain stage's outputs (for the MLflow parent run ids)")
@click.option("--figures", "figures_dir", default="reports/figures", show_default=True,
              help="folder of the figures stage's outputs")
@click.option("--out", default="reports", show_default=True)
def main(params_file, metrics_dir, runs_dir, figures_dir, out):
    tracking.open_early()  # MLflow's imports beside pandas' and the tables
    # imported here, not at the top: --help answers without pandas (1 s)
    from noisylabels.report.build import build
    build(params_file, metrics_dir, runs_dir, figures_dir, out)


if __name__ == "__main__":
    main()
