"""Point the pipeline at some paper tables: rewrite params.yaml's run-group lists.

    python -m noisylabels.select sce_table1:cifar10 sce_table2:cifar10   # then: dvc exp run

Each TABLE:DATASET argument adds a group `<table>-<method>-<dataset>` for every method of
the params section `<table>.<dataset>` (to `groups`, or to `two_phase_groups` for a method
with pretrain and finetune sections) and, with single-phase methods, the `train_stages`
entry that trains them. `groups`, `train_stages`, `two_phase_groups` and `download` (the
data sets to download: those of the groups, and the main experiment's) are replaced, one
line per entry; every other line of params.yaml, comments included, stays as it is. The new params are validated before
anything is written. `git checkout params.yaml` goes back to the default (digits) run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from noisylabels.cli import Stage, stage_errors
import yaml

from noisylabels.errors import ConfigError
from noisylabels.resolve import group_names, load_params, resolve_group, train_stages


LISTS = ("download", "groups", "train_stages", "two_phase_groups")


def groups_for(params: dict, selections: list[str]) -> dict:
    """LISTS -> their values for `TABLE:DATASET` selections."""
    groups, stages, two_phase, download = {}, {}, {}, [(params.get("data") or {}).get("name", "digits")]  # main's data set
    for sel in selections:
        table, _, dataset = sel.partition(":")
        section = params.get(table, {}).get(dataset) if isinstance(params.get(table), dict) else None
        if not isinstance(section, dict) or not isinstance(section.get("methods"), dict):
            raise ConfigError(f"selection={sel!r}: params.yaml has no section {table}.{dataset} with methods; "
                              f"expected TABLE:DATASET, e.g. sce_table1:cifar10")
        for method, cfg in section["methods"].items():
            target = two_phase if isinstance(cfg, dict) and "pretrain" in cfg else groups
            target[f"{table}-{method}-{dataset}"] = {"table": table, "dataset": dataset, "method": method}
            if target is groups:
                stages[f"{table}-{dataset}"] = {"table": table, "dataset": dataset}
        download += [dataset] if dataset not in download else []
    return {"download": download, "groups": groups, "train_stages": stages, "two_phase_groups": two_phase}


def _block(name: str, value) -> list[str]:
    """A top-level params key in the file's style: one flow mapping per group."""
    if isinstance(value, list):
        return [f"{name}: [{', '.join(value)}]"]
    if not value:
        return [f"{name}: {{}}"]
    return [f"{name}:"] + [f"  {k}: {{{', '.join(f'{field}: {x}' for field, x in v.items())}}}"
                           for k, v in value.items()]


def rewrite(text: str, blocks: dict[str, list[str]]) -> str:
    """Replace each top-level key's lines (the key line and the indented lines under it) in
    `text`; a comment on the key line stays."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        key = lines[i].split(":", 1)[0]
        if key in blocks:
            comment = lines[i].partition("#")[2].strip()
            first, *rest = blocks[key]
            out += [f"{first:<27} # {comment}" if comment else first, *rest]
            i += 1
            while i < len(lines) and lines[i].startswith(" "):
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out) + "\n"


@click.command(cls=Stage)
@click.argument("selections", nargs=-1, required=True)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
def main(selections, params_file):
    path = Path(params_file)
    with stage_errors():
        params = load_params(path)
        new = {**params, **groups_for(params, list(selections))}
        for name in group_names(new):
            resolve_group(new, name)
        train_stages(new)
    text = path.read_text()
    for key in LISTS:
        if not any(line.startswith(f"{key}:") for line in text.splitlines()):
            text += f"{key}: {{}}\n"
    text = rewrite(text, {k: _block(k, new[k]) for k in LISTS})
    assert yaml.safe_load(text) == new  # only these keys changed
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    click.echo(f"{path}: {len(new['groups'])} groups, {len(new['two_phase_groups'])} two-phase groups; "
               f"download: {', '.join(new['download'])}")


if __name__ == "__main__":
    sys.exit(main())
