"""Stage report: every table, figure and reports/metrics.json, from the evaluate outputs.

    python stages/report.py                             # -> reports/tables, reports/figures

What is built, and how, is in lib/noisylabels/report/ (build.py, tables.py, figures.py).
"""
import click

from noisylabels.cli import Stage
from noisylabels.report.build import build


@click.command(cls=Stage)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--metrics", "metrics_dir", default="reports/metrics", show_default=True,
              help="folder of the evaluate stage's outputs")
@click.option("--runs", "runs_dir", default="data/runs", show_default=True,
              help="folder of the pretrain stage's outputs (for the MLflow parent run ids)")
@click.option("--out", default="reports", show_default=True)
def main(params_file, metrics_dir, runs_dir, out):
    build(params_file, metrics_dir, runs_dir, out)


if __name__ == "__main__":
    main()
