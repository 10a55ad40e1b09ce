"""Stage noise: draw the noisy training labels of every run of every group.

    python stages/noise.py                              # every group -> data/noisy/<folder>/
    python stages/noise.py --group sce_table1-ce-digits --out /tmp/noisy   # one group

Per group: noisy.npy (settings x seeds x N), val.npy (seeds x N: the held-out noisy
split) and noise.json (the realized transition matrix and noise rate of every setting and
seed). The labels depend only on (data set, setting, seed), so every method sees the same
ones. One stage for all groups: DVC's cost grows with the number of stages, and drawing
every group's labels takes about a second; each training stage depends on its own groups'
folder only (data/noisy/<table>-<dataset> or data/noisy/<group>), so it reruns only when
their labels change. DVC runs this stage only when a group's recipe changes (noise.Recipe:
the validate stage writes them all to data/noise_recipes.json), not for any params change.
"""
import click

from noisylabels.engine import noise
from noisylabels.cli import Stage, groups_from_params, stage_errors, write_per_group
from noisylabels.data import store


@click.command(cls=Stage)
@click.option("--group", default=None, help="only this group (main, or a key of `groups` / `two_phase_groups`)")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--raw", default="data/raw", show_default=True, help="folder of the download stage's outputs")
@click.option("--out", default=None,
              help="output folder [default: data/noisy, one subfolder per group (<table>-<dataset>/<group> for "
                   "`groups`, <group> for main and two_phase_groups); with --group: that subfolder]")
def main(group, params_file, raw, out):
    with stage_errors():  # every group and data set is checked before any label is drawn
        groups = groups_from_params(params_file, group)
        datasets = {name: store.load(f"{raw}/{name}") for name in dict.fromkeys(g.dataset.name for g in groups)}

    def draw(g, folder):
        r = noise.Recipe.of(g)  # all that is read of the group: dvc.yaml's noise stage depends on it
        noisy, val, records = noise.generate(datasets[r.dataset], r.settings, r.seeds, r.draw, r.val_fraction)
        noise.save(folder, r, noisy, val, records)
        rates = ", ".join(f"{x['setting']}/s{x['seed']} {x['realized_noise_rate']:.3f}" for x in records)
        click.echo(f"{r.group}: realized noise rates {rates}")

    write_per_group(groups, bool(group), out, "data/noisy", lambda g: g.folder, draw)


if __name__ == "__main__":
    main()
