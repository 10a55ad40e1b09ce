"""Stage evaluate: final metrics of every run of every group, from the saved predictions.

    python stages/evaluate.py                           # every group -> reports/metrics/<group>.json
    python stages/evaluate.py --group main --out /tmp/main.json   # one group

Per run: last and 'best' test accuracy (best = the epoch with the top accuracy on the
held-out *noisy* split), class-wise test accuracy, accuracy on the noisy and on the true
training labels, the realized noise rate, and the test accuracy per epoch. For a two-phase
group (its final runs come from the finetune stage), also phase 1's label-correction or
noise-detection metrics, from data/phase1/<group>/ (metrics.py lists them). The training
stages log the same final metrics (metrics.run_record) to each model run in MLflow as it
finishes, and their mean and std over seeds to the group's parent run; this stage does not
open MLflow (about 3 s). One stage for all groups (about 0.1 s each): DVC's cost grows
with the number of stages.
"""
import click

from noisylabels import metrics, noise, results
from noisylabels.cli import stage_errors, write_per_group
from noisylabels.config import group_names, load_params, resolve_group
from noisylabels.data import store
from noisylabels.io import write_json


@click.command()
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
    with stage_errors():  # every group's inputs are checked before any file is written
        params = load_params(params_file)
        groups = [resolve_group(params, name) for name in ([group] if group else group_names(params))]
        datasets = {name: store.load(f"{raw}/{name}") for name in dict.fromkeys(g.dataset for g in groups)}
        inputs = {g.name: noise.load(f"{noisy}/{g.name}") for g in groups}
        saved = {g.name: results.load_group(f"{runs}/{g.name}") for g in groups}

    def evaluate(g, path):
        dataset, (labels, holdout, noise_info) = datasets[g.dataset], inputs[g.name]
        load_phase1 = (lambda name: results.load_phase1(f"{phase1_dir}/{g.name}", name)) if g.two_phase else None
        records = metrics.group_records(saved[g.name], lambda name: results.load_run(f"{runs}/{g.name}", name),
                                        dataset, labels, holdout, noise.realized_rates(noise_info), load_phase1)
        write_json(path, {
            "group": g.name, "table": g.table, "paper": g.paper, "method": g.method,
            "dataset": g.dataset, "classes": dataset.classes,
            # phase 2's epochs follow phase 1's: figures place its curve after them
            "epoch_offset": g.pretrain["epochs"] + g.pretrain.get("cyclic_epochs", 0) if g.two_phase else 0,
            "runs": records,
        })
        last = ", ".join(f"{r['run']} {r['test_acc_last']:.4f}" for r in records)
        click.echo(f"{g.name}: test acc last {last}")

    write_per_group(groups, bool(group), out, "reports/metrics", lambda g: f"{g.name}.json", evaluate)


if __name__ == "__main__":
    main()
