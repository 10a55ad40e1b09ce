"""Stage finetune@<group>: phase 2 of a two-phase group, on phase 1's output.

    python stages/finetune.py --group joint_table-improved-digits   # -> data/runs/<group>/

Reads the pretrain stage's data/phase1/<group>/ (corrected labels, or O2U-Net's kept-sample
mask, and phase 1's weights for `init: phase1`), trains every run's phase 2 (two_phase.py's
Finetune) and writes data/runs/<group>/ in the pretrain stage's format, which the evaluate
stage reads. A change to a `finetune` setting reruns this stage only, not phase 1. MLflow: a
new parent run of the group (tag phase=2), each model nested under it.
"""
import os

import click

from noisylabels import runner
from noisylabels.cli import Stage


@click.command(cls=Stage)
@click.option("--group", required=True, help="a key of params.yaml `two_phase_groups`")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True)
@click.option("--noisy", default="data/noisy", show_default=True)
@click.option("--phase1", "phase1_dir", default="data/phase1", show_default=True,
              help="folder of the pretrain stage's two-phase outputs")
@click.option("--out", default=None, help="output folder [default: data/runs/<group>]")
@click.option("--workers", default=min(2, os.cpu_count() or 1), type=click.IntRange(min=1),
              show_default="min(2, CPU count)",
              help="processes training the group's runs side by side (results do not depend on it)")
@click.option("--checkpoints", default=None, show_default=".checkpoints/<DVC stage>",
              help="folder of the runs' checkpoints, kept across a kill, removed when the group is saved")
@click.option("--checkpoint-every", default="5min", show_default=True,
              help="how often an unfinished run saves its state: minutes (5min) or epochs (2epochs)")
@click.option("--threads", default=1, type=click.IntRange(min=1), show_default=True,
              help="CPU threads for torch per worker")
def main(group, params_file, raw, noisy, phase1_dir, out, workers, checkpoints, checkpoint_every, threads):
    runner.train_stage(group, params_file, raw, noisy, out, workers, threads, checkpoints, checkpoint_every,
                       phase1_dir=phase1_dir)


if __name__ == "__main__":
    main()
