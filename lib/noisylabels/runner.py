"""The pretrain and finetune stages' logic: check a group's inputs, train its runs, log them
to MLflow, save them.

`train_stage` resolves the group, loads its data set, noisy labels and (phase 2) phase 1's
artefacts, checks everything that could fail inside a worker, then starts the workers
(processes here, or a Ray cluster's tasks: workers.py), opens the MLflow parent run of the
group (one per stage execution, in the table's experiment) while they start, logs each
trained model as a nested run from its start (params, per-epoch history as it trains) to
its end (its final metrics, computed by metrics.run_record as the evaluate stage computes
them: tracking.LiveRuns), puts the seed summary on the parent, and writes the
outputs atomically (results.py) only when every run has finished. The final metrics are
logged here rather than by the evaluate stage because opening MLflow costs a stage about
3 s, and the training stages open it anyway. Runs save checkpoints (checkpoint.py): a rerun
after a kill resumes the unfinished runs and does not retrain the finished ones.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from noisylabels import checkpoint, loop, metrics, noise, results, tracking
from noisylabels.workers import start_workers
from noisylabels.cli import stage_errors, stop_on_signals
from noisylabels.data import store
from noisylabels.errors import ConfigError
from noisylabels.io import check_writable, dir_digest
from noisylabels.resolve import load_params, resolve_group


def train_stage(group_name: str, params_file: str, raw: str, noisy: str, out: str | None, phase1_dir: str | None = None,
                workers: int = 1, threads: int = 1, executor: str = "local", gpus_per_run: float = 1.0,
                checkpoints: str | None = None, checkpoint_every: str = "5min") -> None:
    """The pretrain stage (phase1_dir None: a single-phase group, or phase 1 of a two-phase
    one) or the finetune stage (phase 2 of a two-phase group, on phase1_dir's outputs).
    The rest are cli.training_options: how the runs train (workers.py), where and how often
    they save checkpoints (default .checkpoints/<DVC stage>; e.g. 5min or 2epochs)."""
    with stage_errors():
        every_epochs, every_minutes = checkpoint.parse_every(checkpoint_every)
        group = resolve_group(load_params(params_file), group_name)
        if phase1_dir and not group.two_phase:
            raise ConfigError(f"group={group_name!r}: not a two-phase group; finetune runs the groups of "
                              "two_phase_groups")
        # Ray tasks pick their device where they run; the local executor's is checked here
        device = loop.resolve_device(group.train.device) if executor == "local" else group.train.device
        dataset = store.load(f"{raw}/{group.dataset.name}")
        labels = noise.load(f"{noisy}/{group_name}", group, len(dataset.train_labels))
        phase1, tags = None, {"phase": "1"} if group.two_phase else {}
        if phase1_dir:
            phase1 = results.load_phase1_group(f"{phase1_dir}/{group_name}", group)
            # phase 1's parent run is the one whose `outputs` tag is this digest
            tags = {"phase": "2", "phase1_outputs": dir_digest(f"{phase1_dir}/{group_name}")}
        jobs = loop.group_jobs(group, labels, phase1)
        loop.preflight(group, dataset)
        phase1_only = group.two_phase and not phase1_dir
        out = out or f"data/{'phase1' if phase1_only else 'runs'}/{group_name}"
        # absolute: a Ray task does not run in this folder
        folder = Path(checkpoints or f".checkpoints/{group.phase1_stage if phase1_only else group.stage}").resolve()
        check_writable(out)
        check_writable(folder / "run.pt")
        jobs = [replace(job, checkpoint=_plan(job, folder, every_epochs, every_minutes)) for job in jobs]
    # a diverged run, Ctrl-C, SIGTERM or SIGHUP: one line, the MLflow runs ended, nothing written
    with stage_errors(), stop_on_signals():
        how = {"executor": executor, "processes": workers, "threads": threads, "gpus_per_run": gpus_per_run}
        _train_and_log(group, dataset, device, jobs, how, out, tags)


def _plan(job: loop.Job, folder: Path, every_epochs, every_minutes) -> checkpoint.Plan:
    inputs = [job.labels.noisy, job.labels.val, *[(job.phase1 or {}).get(k) for k in results.ARTEFACTS]]
    key = checkpoint.fingerprint(tracking.run_params(job.run), job.kind, [a for a in inputs if a is not None])
    return checkpoint.Plan(folder, job.run.name, key, every_epochs, every_minutes)


def _train_and_log(group, dataset, device, jobs: list[loop.Job], how: dict, out: str, extra_tags: dict) -> None:
    """Train the jobs not finished by an earlier, killed execution (checkpoint.py) as `how`
    says (start_workers), log every run while it trains and when it ends (tracking.LiveRuns),
    save the group, and drop its checkpoints."""
    finished = {job.run.name: job.checkpoint.load_result() for job in jobs}
    todo = [job for job in jobs if finished[job.run.name] is None]
    if len(todo) < len(jobs):
        click.echo(f"{group.name}: {len(jobs) - len(todo)} of {len(jobs)} runs finished before; training the others")
    with start_workers(dataset, device, group.train, len(todo), **how) as pool:
        tracker = tracking.Tracker()  # fails here, before training, if the store is unusable
        tracker.fail_abandoned(group.table, group.name)  # left RUNNING by a killed earlier stage
        parent = tracker.start_run(group.table, tracking.parent_name(group),
                                   {**tracking.group_tags(group), **extra_tags}, tracking.group_params(group))
        tracker.log_dataset(parent, dataset.name, dataset.digest, f"data/raw/{dataset.name}")
        records, trained = [], {}
        live = tracking.LiveRuns(tracker, group.table, parent, {
            job.run.name: (tracking.run_name(job.run), {**tracking.run_tags(job.run), **extra_tags},
                           tracking.run_params(job.run)) for job in jobs})
        with tracker.ended_on_error(parent), live.ended_on_error():
            trained_now = pool.map(todo, live.add)  # the runs appear in MLflow as they start
            for job in jobs:
                run, saved = job.run, finished[job.run.name]
                result = loop.RunResult(**saved) if saved else next(trained_now)
                if not saved:
                    job.checkpoint.save_result(result)
                record = metrics.run_record(vars(result), dataset, job.labels, result.artefacts or job.phase1)
                records.append({"setting": run.setting.name, **record})
                final = {**result.metrics, **metrics.mlflow_metrics(record, dataset.classes)}
                live.finish(run.name, result.history, final, (result.started_ms, result.ended_ms))
                trained[run.name] = result
                acc = result.history["test_acc"]
                click.echo(f"{group.name} {run.name}: test acc last {acc[-1]:.4f}, max {max(acc):.4f}")
    with tracker.ended_on_error(parent):
        results.save(out, group, trained)
        tracker.log_metrics(parent, metrics.seed_summary(records, [s.name for s in group.settings]))
        tracker.set_tags(parent, {"outputs": dir_digest(out)})  # how the report finds this run
    tracker.finish(parent)
    checkpoint.remove(jobs[0].checkpoint.folder)
