"""Stage pretrain@<table>-<dataset>: train every run of a table's groups on a data set and
log them to MLflow.

    python stages/pretrain.py --group main              # -> data/runs/main/
    python stages/pretrain.py --group sce_table1-digits   # its groups -> data/runs/sce_table1-digits/<group>/
    python stages/pretrain.py --group sce_table1-sl-digits   # one of them -> data/runs/sce_table1-digits/<group>/
    python stages/pretrain.py --group joint_table-tanaka-digits   # two-phase: -> data/phase1/<group>/

A single-phase group is trained here in full; its predictions and weights go to
data/runs/<table>-<dataset>/<group>/ for the evaluate stage. The groups of a key of
params `train_stages` train in one process, and runs of different groups share a stack
where they can (stack.py): starting torch, the workers and MLflow costs a stage about
8 s, once per table rather than once per method. A two-phase group (params `two_phase_groups`)
runs its phase 1 here: label correction (joint optimisation, PENCIL) or O2U-Net's ranking,
whose corrected labels or kept-sample masks go to data/phase1/<group>/ for the finetune
stage. The group becomes one MLflow parent run in its table's experiment, each trained
model a run nested under it (lib/noisylabels/engine/runner.py).
"""
import click

from noisylabels import tracking
from noisylabels.cli import Stage, training_options


@click.command(cls=Stage)
@click.option("--group", required=True,
              help="main, a key of params.yaml `train_stages` (all its groups), `groups` or `two_phase_groups`")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True)
@click.option("--noisy", default="data/noisy", show_default=True)
@click.option("--out", default=None,
              help="output folder [default: data/runs/<train_stages key>, with a folder per group; "
                   "data/runs/<key>/<group> for one group of it; data/phase1/<group> for a two-phase group]")
@training_options
def main(group, params_file, raw, noisy, out, **how):
    tracking.open_early()  # MLflow's imports beside torch's and the training
    from noisylabels.engine import runner  # here, not at the top: --help answers without torch and the engine (2 s)
    runner.train_stage(group, params_file, raw, noisy, out, **how)


if __name__ == "__main__":
    main()
