"""The evaluate stage's logic: final metrics of every run of a group, from its saved
predictions (numpy only, no torch, no MLflow).

Per run (metrics.run_record): last and 'best' test accuracy, class-wise test accuracy,
accuracy on the noisy and on the true training labels, the realized noise rate, the test
accuracy per epoch, and for a two-phase group phase 1's label-correction or noise-detection
metrics. `made_from`: the key of a group's metrics (memo.py), so that the stage keeps the
file of a group whose inputs did not change.
"""
from __future__ import annotations

from noisylabels import memo
from noisylabels.engine import metrics, results
from noisylabels.io import dir_digest


def group_metrics(group, dataset, labels, runs_dir: str, phase1_dir: str) -> dict:
    """reports/metrics/<group>.json: the group's identity and one record per run.

    labels: the group's noise.NoisyLabels; runs_dir, phase1_dir: the training stages'
    folders of this group."""
    records = []
    for run in group.runs:
        phase1 = results.load_phase1(phase1_dir, run.name, group.phase1_stage) if group.two_phase else None
        arrays = results.load_run(runs_dir, run.name, group.stage)
        record = metrics.run_record(arrays, dataset, labels.for_run(run), phase1)
        records.append({"run": run.name, "setting": run.setting.name, "seed": run.seed, **record})
    return {
        "group": group.name, "table": group.table, "paper": group.paper, "method": group.method,
        "dataset": group.dataset.name, "classes": dataset.classes,
        # phase 2's epochs follow phase 1's: figures place its curve after them
        "epoch_offset": group.written.pretrain.total_epochs if group.two_phase else 0,
        "runs": records,
    }


def made_from(group, dataset, noisy: str, runs: str, phase1: str) -> str:
    """memo.key of the group's metrics: its settings, its data set (store.Dataset.digest, from
    the checksums in meta.json, and its class names) and every other file group_metrics reads
    (the group's labels, runs and phase-1 artefacts), under the stages' folders."""
    folders = [f"{noisy}/{group.folder}", f"{runs}/{group.folder}"]
    if group.two_phase:
        folders.append(f"{phase1}/{group.name}")
    return memo.key(repr(group), dataset.digest, dataset.classes, [dir_digest(f) for f in folders])
