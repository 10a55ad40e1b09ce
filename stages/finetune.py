"""Stage finetune@<group>: phase 2 of a two-phase group, on phase 1's output.

    python stages/finetune.py --group joint_table-improved-digits   # -> data/runs/<group>/

Reads the pretrain stage's data/phase1/<group>/ (corrected labels, or O2U-Net's kept-sample
mask, and phase 1's weights for `init: phase1`), trains every run's phase 2 (two_phase.py's
Finetune) and writes data/runs/<group>/ in the pretrain stage's format, which the evaluate
stage reads. A change to a `finetune` setting reruns this stage only, not phase 1. MLflow: a
new parent run of the group (tag phase=2), each model nested under it.
"""
import click

from noisylabels import tracking
from noisylabels.cli import Stage, training_options


@click.command(cls=Stage)
@click.option("--group", required=True, help="a key of params.yaml `two_phase_groups`")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True)
@click.option("--noisy", default="data/noisy", show_default=True)
@click.option("--phase1", "phase1_dir", default="data/phase1", show_default=True,
              help="folder of the pretrain stage's two-phase outputs")
@click.option("--out", default=None, help="output folder [default: data/runs/<group>]")
@training_options
def main(group, params_file, raw, noisy, phase1_dir, out, **how):
    tracking.open_early()  # MLflow's imports beside torch's and the training
    from noisylabels.engine import runner  # here, not at the top: --help answers without torch and the engine (2 s)
    runner.train_stage(group, params_file, raw, noisy, out, phase1_dir=phase1_dir, **how)


if __name__ == "__main__":
    main()
