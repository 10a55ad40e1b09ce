"""The pretrain and finetune stages' logic: check a group's inputs, train its runs, log them
to MLflow, save them.

`train_stage` resolves the group (or the groups of a `train_stages` entry, which train
together), loads its data set, noisy labels and (phase 2) phase 1's artefacts, checks
everything that could fail inside a worker, then starts the workers (processes here, or a
Ray cluster's tasks: workers.py) on the runs, opens MLflow and the parent run of each
group (one per stage execution, in the table's experiment) while they train, logs each
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

from noisylabels import checkpoint, tracking
from noisylabels.engine import loop, metrics, noise, results
from noisylabels.engine.workers import start_workers
from noisylabels.cli import stage_errors, stop_on_signals
from noisylabels.data import store
from noisylabels.errors import ConfigError
from noisylabels.io import check_writable, dir_digest
from noisylabels.resolve import load_params, resolve_unit


def train_stage(name: str, params_file: str, raw: str, noisy: str, out: str | None, phase1_dir: str | None = None,
                workers: int = 1, threads: int = 1, executor: str = "local", gpus_per_run: float = 1.0,
                checkpoints: str | None = None, checkpoint_every: str = "5min") -> None:
    """The pretrain stage (phase1_dir None: single-phase groups, or phase 1 of a two-phase
    one) or the finetune stage (phase 2 of a two-phase group, on phase1_dir's outputs).
    name: a group, or a key of train_stages, whose groups train together (one set of
    workers, one MLflow store opened; runs of several groups may share a stack) and are
    written to <out>/<group>. The rest are cli.training_options: how the runs train
    (workers.py), where and how often they save checkpoints (default
    .checkpoints/<DVC stage>[/<group>]; e.g. 5min or 2epochs)."""
    with stage_errors():
        every_epochs, every_minutes = checkpoint.parse_every(checkpoint_every)
        groups = resolve_unit(load_params(params_file), name)
        first, several = groups[0], name != groups[0].name
        if phase1_dir and not first.two_phase:
            raise ConfigError(f"group={name!r}: not a two-phase group; finetune runs the groups of "
                              "two_phase_groups")
        # Ray tasks pick their device where they run; the local executor's is checked here
        device = loop.resolve_device(first.train.device) if executor == "local" else first.train.device
        dataset = store.load(f"{raw}/{first.dataset.name}")  # one table and data set: one data set and schedule
        phase1_only = first.two_phase and not phase1_dir
        out = out or f"data/{'phase1' if phase1_only else 'runs'}/{name if several else first.folder}"
        outs, jobs, tags = {}, [], {}
        for group in groups:
            labels = noise.load(f"{noisy}/{group.folder}", group, len(dataset.train_labels))
            phase1, tags[group.name] = None, {"phase": "1"} if group.two_phase else {}
            if phase1_dir:
                phase1 = results.load_phase1_group(f"{phase1_dir}/{group.name}", group)
                # phase 1's parent run is the one whose `outputs` tag is this digest
                tags[group.name] = {"phase": "2", "phase1_outputs": dir_digest(f"{phase1_dir}/{group.name}")}
            loop.preflight(group, dataset)
            outs[group.name] = f"{out}/{group.name}" if several else out
            # absolute: a Ray task does not run in this folder
            folder = Path(checkpoints or f".checkpoints/{group.phase1_stage if phase1_only else group.stage}")
            folder = (folder / group.name if group.folder != group.name else folder).resolve()
            check_writable(outs[group.name])
            check_writable(folder / "run.pt")
            jobs += [replace(job, checkpoint=_plan(job, folder, every_epochs, every_minutes))
                     for job in loop.group_jobs(group, labels, phase1)]
    # a diverged run, Ctrl-C, SIGTERM or SIGHUP: one line, the MLflow runs ended, nothing written
    with stage_errors(), stop_on_signals():
        how = {"executor": executor, "processes": workers, "threads": threads, "gpus_per_run": gpus_per_run}
        _train_and_log(groups, dataset, device, jobs, how, outs, tags)


def _plan(job: loop.Job, folder: Path, every_epochs, every_minutes) -> checkpoint.Plan:
    inputs = [job.labels.noisy, job.labels.val, *[(job.phase1 or {}).get(k) for k in results.ARTEFACTS]]
    key = checkpoint.fingerprint(tracking.run_params(job.run), job.kind, [a for a in inputs if a is not None])
    return checkpoint.Plan(folder, job.run.name, key, every_epochs, every_minutes)


def _train_and_log(groups, dataset, device, jobs: list[loop.Job], how: dict, outs: dict, extra_tags: dict) -> None:
    """Train the jobs not finished by an earlier, killed execution (checkpoint.py) as `how`
    says (start_workers), log every run while it trains and when it ends (tracking.LiveRuns),
    each group's under its own parent run, save each group to outs[group], and drop the
    checkpoints."""
    finished = {job.run.key: job.checkpoint.load_result() for job in jobs}
    todo = [job for job in jobs if finished[job.run.key] is None]
    if len(todo) < len(jobs):
        click.echo(f"{', '.join(g.name for g in groups)}: {len(jobs) - len(todo)} of {len(jobs)} runs finished "
                   "before; training the others")
    tracking.check_store()  # an unreachable server or a garbled store stops here, before any training
    with start_workers(dataset, device, groups[0].train, len(todo), **how) as pool:
        live, early = None, []

        def report(events):  # the workers' progress; what comes before MLflow is open waits in `early`
            if live:
                live.add(events)
            else:
                early.extend(events)

        # the workers start training now, while this process opens MLflow: about 5 s of
        # imports and SQLAlchemy, most of a digits stage's training time
        trained_now = pool.map(todo, report)
        tracker = tracking.Tracker()
        parents = {}
        with tracker.ended_on_error(parents):
            for g in groups:
                tracker.fail_abandoned(g.table, g.name)  # left RUNNING by a killed earlier stage
                parents[g.name] = tracker.start_run(g.table, tracking.parent_name(g),
                                                    {**tracking.group_tags(g), **extra_tags[g.name]},
                                                    tracking.group_params(g))
                tracker.log_dataset(parents[g.name], dataset.name, dataset.digest, f"data/raw/{dataset.name}")
            records = {g.name: [] for g in groups}
            trained = {g.name: {} for g in groups}
            live = tracking.LiveRuns(tracker, groups[0].table, {
                job.run.key: (tracking.run_name(job.run), {**tracking.run_tags(job.run), **extra_tags[g]},
                              tracking.run_params(job.run), parents[g])
                for job in jobs for g in [job.run.group.name]})
            live.add(early)  # the runs started so far appear in MLflow, with their real start times
            with live.ended_on_error():
                for job in jobs:
                    run, saved = job.run, finished[job.run.key]
                    result = loop.RunResult(**saved) if saved else next(trained_now)
                    if not saved:
                        job.checkpoint.save_result(result)
                    record = metrics.run_record(vars(result), dataset, job.labels, result.artefacts or job.phase1)
                    records[run.group.name].append({"setting": run.setting.name, **record})
                    final = {**result.metrics, **metrics.mlflow_metrics(record, dataset.classes)}
                    live.finish(run.key, result.history, final, (result.started_ms, result.ended_ms))
                    trained[run.group.name][run.name] = result
                    acc = result.history["test_acc"]
                    click.echo(f"{run.key}: test acc last {acc[-1]:.4f}, max {max(acc):.4f}")
            for g in groups:
                results.save(outs[g.name], g, trained[g.name])
                summary = metrics.seed_summary(records[g.name], [s.name for s in g.settings])
                tracker.log_metrics(parents[g.name], summary)
                tracker.set_tags(parents[g.name], {"outputs": dir_digest(outs[g.name])})  # how the report finds it
    for parent in parents.values():
        tracker.finish(parent)
    for folder in dict.fromkeys(job.checkpoint.folder for job in jobs):
        checkpoint.remove(folder)
