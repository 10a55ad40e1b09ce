"""Stage download@<dataset>: fetch a data set and store it in the one on-disk format.

    python stages/download.py --dataset digits          # -> data/raw/digits/

Options come from params.yaml `datasets.<dataset>`. The archives of the papers' data sets
are downloaded into --downloads (or found there when you put them by hand).
"""
import click

from noisylabels.cli import Stage, stage_errors
from noisylabels.data import sources, store
from noisylabels.resolve import dataset_spec, load_params


@click.command(cls=Stage)
@click.option("--dataset", required=True, help="a key of params.yaml `datasets`")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--downloads", default="data/downloads", show_default=True,
              help="where archives are downloaded to, or looked for when offline")
@click.option("--out", default=None, help="output folder [default: data/raw/<dataset>]")
def main(dataset, params_file, downloads, out):
    with stage_errors():
        spec = dataset_spec(load_params(params_file), dataset)
        arrays = sources.fetch(dataset, spec.model_dump(), downloads)
        store.save(out or f"data/raw/{dataset}", dataset, arrays)
    for note in arrays.notes:  # e.g. local files smaller than the published data set; meta.json keeps them
        click.echo(f"note: {note}")
    click.echo(f"{dataset}: {len(arrays.train_labels)} train, {len(arrays.test_labels)} test, "
               f"{len(arrays.classes)} classes, images {arrays.train_images.shape[1:]}")


if __name__ == "__main__":
    main()
