"""Stage evaluate@<group>: final metrics of every run, from its saved predictions.

    python stages/evaluate.py --group main              # -> reports/metrics/main.json

Per run: last and 'best' test accuracy (best = the epoch with the top accuracy on the
held-out *noisy* split), class-wise test accuracy, accuracy on the noisy and on the true
training labels, the realized noise rate, and the test accuracy per epoch. The final
metrics are also added to each model run in MLflow, and their mean and std over seeds, per
noise setting, to the group's parent run.
"""
import click

from noisylabels import metrics, noise, results, tracking
from noisylabels.cli import stage_errors
from noisylabels.config import load_params, resolve_group
from noisylabels.data import store
from noisylabels.io import write_json


@click.command()
@click.option("--group", required=True, help="main, or a key of params.yaml `groups`")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True)
@click.option("--noisy", default="data/noisy", show_default=True)
@click.option("--runs", default="data/runs", show_default=True)
@click.option("--out", default=None, help="output file [default: reports/metrics/<group>.json]")
def main(group, params_file, raw, noisy, runs, out):
    with stage_errors():
        g = resolve_group(load_params(params_file), group)
        tracker = tracking.Tracker()
        dataset = store.load(f"{raw}/{g.dataset}")
        labels, holdout, noise_info = noise.load(f"{noisy}/{group}")
    saved = results.load_group(f"{runs}/{group}")
    records = metrics.group_records(saved, lambda name: results.load_run(f"{runs}/{group}", name),
                                    dataset, labels, holdout, noise_info)
    for info, rec in zip(saved["runs"], records):
        tracker.log_metrics(info["mlflow_run_id"], {
            **{k: v for k, v in rec.items() if isinstance(v, (int, float)) and k != "seed"},
            **{f"classwise_test_acc_last/{c}": v for c, v in zip(dataset.classes, rec["classwise_test_acc_last"])},
        })
    tracker.log_metrics(saved["mlflow_parent_run_id"], metrics.seed_summary(records, saved["settings"]))
    write_json(out or f"reports/metrics/{group}.json", {
        "group": g.name, "table": g.table, "paper": g.paper, "method": g.method,
        "dataset": g.dataset, "classes": dataset.classes, "runs": records,
    })
    for rec in records:
        click.echo(f"{group} {rec['run']}: test acc last {rec['test_acc_last']:.4f}, "
                   f"best {rec['test_acc_best']:.4f} (epoch {rec['best_epoch']})")


if __name__ == "__main__":
    main()
