"""Stage evaluate: final metrics of every run of every group, from the saved predictions.

    python stages/evaluate.py                           # every group -> reports/metrics/<group>.json
    python stages/evaluate.py --group main --out /tmp/main.json   # one group

What is computed is in lib/noisylabels/evaluate.py. 'best' is the epoch with the top
accuracy on the held-out *noisy* split. The training stages log the same final metrics to
MLflow as each model finishes; this stage does not open MLflow (about 3 s). One stage for
all groups (about 0.1 s each): DVC's cost grows with the number of stages. A group whose
inputs (its runs, labels, data set, settings) and code are unchanged keeps its file
(lib/noisylabels/memo.py; delete reports/metrics to compute every group again).
"""
import click

from noisylabels import evaluate, memo
from noisylabels.engine import noise
from noisylabels.cli import Stage, groups_from_params, stage_errors, write_per_group
from noisylabels.data import store
from noisylabels.io import write_json


@click.command(cls=Stage)
@click.option("--group", default=None, help="only this group (main, or a key of `groups` / `two_phase_groups`)")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True)
@click.option("--noisy", default="data/noisy", show_default=True)
@click.option("--runs", default="data/runs", show_default=True)
@click.option("--phase1", "phase1_dir", default="data/phase1", show_default=True,
              help="folder of the pretrain stage's two-phase outputs")
@click.option("--out", default=None,
              help="output [default: the folder reports/metrics, one <group>.json per group; "
                   "with --group: the file reports/metrics/<group>.json]")
def main(group, params_file, raw, noisy, runs, phase1_dir, out):
    with stage_errors():  # a missing input stops before the output folder is replaced
        groups = groups_from_params(params_file, group)
        datasets = {name: store.load(f"{raw}/{name}") for name in dict.fromkeys(g.dataset.name for g in groups)}

        def write(g, path):
            dataset = datasets[g.dataset.name]
            m = evaluate.group_metrics(g, dataset, noise.load(f"{noisy}/{g.folder}", g, len(dataset.train_labels)),
                                       f"{runs}/{g.folder}", f"{phase1_dir}/{g.name}")
            write_json(path, m)
            last = ", ".join(f"{r['run']} {r['test_acc_last']:.4f}" for r in m["runs"])
            click.echo(f"{g.name}: test acc last {last}")

        kept = write_per_group(groups, bool(group), out, "reports/metrics", lambda g: f"{g.name}.json", write,
                               lambda g: evaluate.made_from(g, datasets[g.dataset.name], noisy, runs, phase1_dir))
        if kept:
            click.echo(f"evaluate: kept the file of {len(kept)} of {len(groups)} groups, their inputs unchanged "
                       f"({memo.MANIFEST})")


if __name__ == "__main__":
    main()
