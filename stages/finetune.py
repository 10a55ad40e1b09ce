"""Stage finetune@<group>: phase 2 of a two-phase group, on phase 1's output.

    python stages/finetune.py --group joint_table-improved-digits   # -> data/runs/<group>/

Reads the pretrain stage's data/phase1/<group>/ (corrected labels, or O2U-Net's kept-sample
mask, and phase 1's weights for `init: phase1`), trains every run's phase 2 (two_phase.py's
Finetune) and writes data/runs/<group>/ in the pretrain stage's format, which the evaluate
stage reads. A change to a `finetune` setting reruns this stage only, not phase 1. MLflow: a
new parent run of the group (tag phase=2), each model nested under it.
"""
import os
import zipfile

import click

from noisylabels import engine, noise, results, runner
from noisylabels.cli import stage_errors
from noisylabels.config import ConfigError, load_params, resolve_group
from noisylabels.data import store
from noisylabels.data.sources import DataError


@click.command()
@click.option("--group", required=True, help="a key of params.yaml `two_phase_groups`")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True)
@click.option("--noisy", default="data/noisy", show_default=True)
@click.option("--phase1", "phase1_dir", default="data/phase1", show_default=True,
              help="folder of the pretrain stage's two-phase outputs")
@click.option("--out", default=None, help="output folder [default: data/runs/<group>]")
@click.option("--workers", default=min(2, os.cpu_count() or 1), show_default="min(2, CPU count)",
              help="processes training the group's runs side by side (results do not depend on it)")
@click.option("--threads", default=1, show_default=True, help="CPU threads for torch per worker")
def main(group, params_file, raw, noisy, phase1_dir, out, workers, threads):
    with stage_errors():
        g = resolve_group(load_params(params_file), group)
        if not g.two_phase:
            raise ConfigError(f"group={group!r}: not a two-phase group; finetune runs the groups of two_phase_groups")
        device = engine.resolve_device(g.train["device"])
        dataset = store.load(f"{raw}/{g.dataset}")
        labels, holdout, noise_info = noise.load(f"{noisy}/{group}")
        path, phase1 = f"{phase1_dir}/{group}", {}
        for run in g.runs:
            weights = g.phase_for(run.setting, "finetune")["init"] == "phase1"
            try:
                phase1[run.name] = results.load_phase1(path, run.name, weights)
            except (OSError, KeyError, ValueError, RuntimeError, zipfile.BadZipFile) as e:
                raise DataError(f"{path}: missing or unreadable phase-1 output of run {run.name!r} "
                                f"({e.__class__.__name__}); run the stage pretrain-two_phase@{group} first")
        parent = results.load_group(path)["mlflow_parent_run_id"]
        jobs = engine.group_jobs(g, labels, holdout, noise.realized_matrices(noise_info), dataset.num_classes, phase1)
    runner.train_and_log(g, dataset, device, jobs, noise.realized_rates(noise_info), workers, threads,
                         out or f"data/runs/{group}", {"phase": "2", "phase1_parent_run_id": parent})


if __name__ == "__main__":
    main()
