"""Stage pretrain@<group>: train every run of a group (single-phase methods) and log to MLflow.

    python stages/pretrain.py --group main              # -> data/runs/main/
    python stages/pretrain.py --group sce_table1-sl-digits

The group becomes one MLflow parent run in its table's experiment, each trained model a run
nested under it (params, tags, per-epoch metrics); predictions and weights go to
data/runs/<group>/ for the evaluate stage.
"""
import os

import click

from noisylabels import engine, noise, results, tracking
from noisylabels.cli import stage_errors
from noisylabels.config import load_params, resolve_group
from noisylabels.data import store


@click.command()
@click.option("--group", required=True, help="main, or a key of params.yaml `groups`")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True)
@click.option("--noisy", default="data/noisy", show_default=True)
@click.option("--out", default=None, help="output folder [default: data/runs/<group>]")
@click.option("--workers", default=min(2, os.cpu_count() or 1), show_default="min(2, CPU count)",
              help="processes training the group's runs side by side (results do not depend on it)")
@click.option("--threads", default=1, show_default=True,
              help="CPU threads for torch per worker. One thread keeps CPU results identical "
                   "whatever the machine's core count (the thread count changes float summation "
                   "order); speed comes from separate processes (benchmarks/threads.py)")
def main(group, params_file, raw, noisy, out, workers, threads):
    with stage_errors():
        g = resolve_group(load_params(params_file), group)
        device = engine.resolve_device(g.train["device"])
        dataset = store.load(f"{raw}/{g.dataset}")
        labels, holdout, noise_info = noise.load(f"{noisy}/{group}")
        jobs = engine.group_jobs(g, labels, holdout, noise.realized_matrices(noise_info), dataset.num_classes)
    with engine.Workers(dataset, device, min(workers, len(jobs)), threads) as pool:
        with stage_errors():
            tracker = tracking.Tracker()  # fails here, before training, if the store is unusable
        parent = tracker.start_run(g.table, g.name, tracking.group_tags(g), tracking.group_params(g))
        run_ids = {}

        def log(run, result):
            run_id = tracker.start_run(g.table, tracking.run_name(g, run), tracking.run_tags(g, run),
                                       tracking.run_params(g, run), parent_id=parent)
            tracker.log_history(run_id, result.history)
            if result.metrics:
                tracker.log_metrics(run_id, result.metrics)
            tracker.finish(run_id)
            run_ids[run.name] = run_id
            h = result.history
            click.echo(f"{group} {run.name}: test acc last {h['test_acc'][-1]:.4f}, max {max(h['test_acc']):.4f}")

        try:
            runs = engine.train_group(g, jobs, pool, on_run_done=log)
        except BaseException:
            tracker.finish(parent, "FAILED")
            raise
    results.save(out or f"data/runs/{group}", g, runs, run_ids, parent)
    tracker.finish(parent)


if __name__ == "__main__":
    main()
