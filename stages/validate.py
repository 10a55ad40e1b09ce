"""Stage validate: every setting of params.yaml checked before any stage deletes its outputs.

    python stages/validate.py                           # -> data/validated.txt

DVC removes a stage's outputs just before it runs it. The download and noise stages depend
on this stage's output, so everything after them runs after it: a bad value (`dvc exp run
-S train.lr=-1`) stops here with one line, and every earlier output stays in place. The
output's text never changes, so a valid change reruns nothing else on its account.
"""
import click

from noisylabels.cli import Stage, stage_errors
from noisylabels.io import write_text
from noisylabels.resolve import dataset_spec, group_names, load_params, resolve_group, train_stages


@click.command(cls=Stage)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--out", default="data/validated.txt", show_default=True)
def main(params_file, out):
    with stage_errors():
        params = load_params(params_file)
        groups = [resolve_group(params, name) for name in group_names(params)]
        train_stages(params)  # dvc.yaml's pretrain@<table>-<dataset> stages cover every group
        for name in params.get("download") or []:
            dataset_spec(params, name, "download")
    write_text(out, "params.yaml: every run group and data set is valid\n")
    click.echo(f"params.yaml: {len(groups)} run groups valid")


if __name__ == "__main__":
    main()
