"""Stage figures: every figure, from the training and evaluate stages' outputs.

    python stages/figures.py                            # -> reports/figures/<paper>/

Per table section, its test accuracy per epoch (<table>_test_acc.png); and the papers' own
figures (class-wise accuracy, t-SNE, confidences, parameter analysis, ablation, learning
curves), each with its data as CSV beside it. What each shows, and which runs it reads, is
in lib/noisylabels/report/paper_figures.py. A figure whose inputs did not change is kept
(lib/noisylabels/memo.py; delete reports/figures to draw every figure again).
"""
import click

from noisylabels.cli import Stage, stage_errors, workers_option


@click.command(cls=Stage)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True)
@click.option("--noisy", default="data/noisy", show_default=True)
@click.option("--runs", default="data/runs", show_default=True)
@click.option("--metrics", "metrics_dir", default="reports/metrics", show_default=True,
              help="folder of the evaluate stage's outputs")
@click.option("--out", default="reports/figures", show_default=True)
@workers_option("processes drawing the figures side by side (the figures do not depend on it)")
def main(params_file, raw, noisy, runs, metrics_dir, out, workers):
    # imported here, not at the top: --help answers without torch, pandas and matplotlib (3 s)
    from noisylabels.report import paper_figures
    with stage_errors():
        for line in paper_figures.build(params_file, raw, noisy, runs, metrics_dir, out, workers):
            click.echo(line)


if __name__ == "__main__":
    main()
