"""The pretrain and finetune stages' logic: check a group's inputs, train its runs, log them
to MLflow, save them.

`train_stage` resolves the group, loads its data set, noisy labels and (phase 2) phase 1's
artefacts, checks everything that could fail inside a worker, then starts the worker
processes (workers.py), opens the MLflow parent run of the group (one per stage execution,
in the table's experiment) while they start, logs each trained model as a nested run as it
finishes (params, per-epoch history, and its final metrics, computed by metrics.run_record
as the evaluate stage computes them), puts the seed summary on the parent, and writes the
outputs atomically (results.py) only when every run has finished. The final metrics are
logged here rather than by the evaluate stage because opening MLflow costs a stage about
3 s, and the training stages open it anyway.
"""
from __future__ import annotations

import click

from noisylabels import loop, metrics, noise, results, tracking
from noisylabels.cli import stage_errors, stop_on_signals
from noisylabels.data import store
from noisylabels.errors import ConfigError
from noisylabels.io import check_writable
from noisylabels.resolve import load_params, resolve_group
from noisylabels.workers import Workers


def train_stage(group_name: str, params_file: str, raw: str, noisy: str, out: str | None, workers: int,
                threads: int, phase1_dir: str | None = None) -> None:
    """The pretrain stage (phase1_dir None: a single-phase group, or phase 1 of a two-phase
    one) or the finetune stage (phase 2 of a two-phase group, on phase1_dir's outputs)."""
    with stage_errors():
        if workers < 1 or threads < 1:
            raise ConfigError(f"--workers={workers} --threads={threads}: expected at least 1 each")
        group = resolve_group(load_params(params_file), group_name)
        if phase1_dir and not group.two_phase:
            raise ConfigError(f"group={group_name!r}: not a two-phase group; finetune runs the groups of "
                              "two_phase_groups")
        device = loop.resolve_device(group.train.device)
        dataset = store.load(f"{raw}/{group.dataset.name}")
        labels = noise.load(f"{noisy}/{group_name}", group, len(dataset.train_labels))
        phase1, tags = None, {"phase": "1"} if group.two_phase else {}
        if phase1_dir:
            phase1, phase1_parent = results.load_phase1_group(f"{phase1_dir}/{group_name}", group)
            tags = {"phase": "2", "phase1_parent_run_id": phase1_parent}
        jobs = loop.group_jobs(group, labels, phase1)
        loop.preflight(group, dataset)
        out = out or f"data/{'runs' if phase1_dir or not group.two_phase else 'phase1'}/{group_name}"
        check_writable(out)
    # a diverged run, Ctrl-C, SIGTERM or SIGHUP: one line, the MLflow runs ended, nothing written
    with stage_errors(), stop_on_signals():
        _train_and_log(group, dataset, device, jobs, workers, threads, out, tags)


def _train_and_log(group, dataset, device, jobs: list[loop.Job], workers: int, threads: int, out: str,
                   extra_tags: dict) -> None:
    with Workers(dataset, device, min(workers, len(jobs)), threads, group.train) as pool:
        tracker = tracking.Tracker()  # fails here, before training, if the store is unusable
        tracker.fail_abandoned(group.table, group.name)  # left RUNNING by a killed earlier stage
        parent = tracker.start_run(group.table, group.name, {**tracking.group_tags(group), **extra_tags},
                                   tracking.group_params(group))
        run_ids, records, trained = {}, [], {}
        with tracker.ended_on_error(parent):
            for job, result in zip(jobs, pool.map(jobs)):
                run = job.run
                record = metrics.run_record(vars(result), dataset, job.labels, result.artefacts or job.phase1)
                records.append({"setting": run.setting.name, **record})
                final = {**result.metrics, **metrics.mlflow_metrics(record, dataset.classes)}
                run_ids[run.name] = tracker.log_run(group.table, tracking.run_name(run),
                                                    {**tracking.run_tags(run), **extra_tags}, tracking.run_params(run),
                                                    result.history, final, parent_id=parent)
                trained[run.name] = result
                acc = result.history["test_acc"]
                click.echo(f"{group.name} {run.name}: test acc last {acc[-1]:.4f}, max {max(acc):.4f}")
    with tracker.ended_on_error(parent):
        results.save(out, group, trained, run_ids, parent)
        tracker.log_metrics(parent, metrics.seed_summary(records, [s.name for s in group.settings]))
    tracker.finish(parent)
