"""Stage noise@<group>: draw the noisy training labels of every run of a group.

    python stages/noise.py --group main                 # -> data/noisy/main/
    python stages/noise.py --group sce_table1-ce-digits

Writes labels.npz (noisy: settings x seeds x N, holdout: seeds x N) and noise.json (the
realized transition matrix and noise rate of every setting and seed). The labels depend only
on (data set, setting, seed), so every method sees the same ones.
"""
import click

from noisylabels import noise
from noisylabels.cli import stage_errors
from noisylabels.config import load_params, resolve_group
from noisylabels.data import store


@click.command()
@click.option("--group", required=True, help="main, or a key of params.yaml `groups`")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True, help="folder of the download stage's outputs")
@click.option("--out", default=None, help="output folder [default: data/noisy/<group>]")
def main(group, params_file, raw, out):
    with stage_errors():
        g = resolve_group(load_params(params_file), group)
        dataset = store.load(f"{raw}/{g.dataset}")
    noisy, holdout, records = noise.generate(dataset, g.settings, g.seeds, g.draw, g.val_fraction)
    noise.save(out or f"data/noisy/{group}", g, noisy, holdout, records)
    for r in records:
        click.echo(f"{group} {r['setting']} seed {r['seed']}: realized noise rate {r['realized_rate']:.4f}")


if __name__ == "__main__":
    main()
