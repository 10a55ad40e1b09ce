"""What the pretrain and finetune stages share: train a group's jobs, log them, save them.

`train_and_log` starts the worker processes, opens the MLflow parent run of the group (one
per stage execution, in the table's experiment) while they start, logs each trained model
as a nested run as it finishes (params, per-epoch history, and its final metrics, computed
by metrics.run_record as the evaluate stage computes them), puts the seed summary on the
parent, and writes the outputs atomically (results.py) only when every run has finished.
The final metrics are logged here rather than by the evaluate stage because opening MLflow
costs a stage about 3 s, and the training stages open it anyway.
"""
from __future__ import annotations

import click

from noisylabels import engine, metrics, results, tracking
from noisylabels.cli import stage_errors


def train_and_log(group, dataset, device, jobs: list[dict], realized_rates: dict, workers: int, threads: int,
                  out: str, extra_tags: dict | None = None) -> None:
    """realized_rates: (setting name, seed) -> realized noise rate (noise.json)."""
    extra_tags = extra_tags or {}
    with stage_errors():
        engine.preflight(group, dataset)
    with engine.Workers(dataset, device, min(workers, len(jobs)), threads, group.train) as pool:
        with stage_errors():
            tracker = tracking.Tracker()  # fails here, before training, if the store is unusable
        parent = tracker.start_run(group.table, group.name, {**tracking.group_tags(group), **extra_tags},
                                   tracking.group_params(group))
        run_ids, records = {}, []

        def log(run, job, result):
            record = metrics.run_record(vars(result), dataset, job["noisy"], job["holdout"],
                                        realized_rates[(run.setting.name, run.seed)],
                                        result.artefacts or job.get("phase1"))
            records.append({"setting": run.setting.name, **record})
            final = {**result.metrics, **metrics.mlflow_metrics(record, dataset.classes)}
            run_id = tracker.log_run(group.table, tracking.run_name(group, run),
                                     {**tracking.run_tags(group, run), **extra_tags}, tracking.run_params(group, run),
                                     result.history, final, parent_id=parent)
            run_ids[run.name] = run_id
            h = result.history
            click.echo(f"{group.name} {run.name}: test acc last {h['test_acc'][-1]:.4f}, max {max(h['test_acc']):.4f}")

        try:
            runs = engine.train_group(group, jobs, pool, on_run_done=log)
        except BaseException:
            tracker.finish(parent, "FAILED")
            raise
    results.save(out, group, runs, run_ids, parent)
    tracker.log_metrics(parent, metrics.seed_summary(records, [s.name for s in group.settings]))
    tracker.finish(parent)
