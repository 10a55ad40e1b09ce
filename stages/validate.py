"""Stage validate: every setting of params.yaml checked before any stage deletes its outputs.

    python stages/validate.py          # -> data/validated.txt, data/noise_recipes.json

DVC removes a stage's outputs just before it runs it. The download and noise stages depend
on this stage's outputs, so everything after them runs after it: a bad value (`dvc exp run
-S train.lr=-1`) stops here with one line, and every earlier output stays in place.
data/validated.txt's text never changes, so a valid change reruns no download on its account.
data/noise_recipes.json holds what every group's labels are drawn from (engine/noise.py's
Recipe, keyed by the group's folder under data/noisy): the noise stage depends on it instead
of params.yaml, so only a change to some group's labels reruns it.
"""
from dataclasses import asdict

import click

from noisylabels.cli import Stage, stage_errors
from noisylabels.engine.noise import Recipe
from noisylabels.io import write_json, write_text
from noisylabels.resolve import dataset_spec, group_names, load_params, resolve_group, train_stages


@click.command(cls=Stage)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--out", default="data/validated.txt", show_default=True)
@click.option("--recipes", default="data/noise_recipes.json", show_default=True)
def main(params_file, out, recipes):
    with stage_errors():
        params = load_params(params_file)
        groups = [resolve_group(params, name) for name in group_names(params)]
        train_stages(params)  # dvc.yaml's pretrain@<table>-<dataset> stages cover every group
        for name in params.get("download") or []:
            dataset_spec(params, name, "download")
    write_json(recipes, {g.folder: asdict(Recipe.of(g)) for g in groups})
    write_text(out, "params.yaml: every run group and data set is valid\n")
    click.echo(f"params.yaml: {len(groups)} run groups valid")


if __name__ == "__main__":
    main()
