"""Point the pipeline at some paper tables: rewrite params.yaml's run-group lists.

    python -m noisylabels.select sce_table1:cifar10 sce_table2:cifar10   # then: dvc exp run

Each TABLE:DATASET argument adds a group `<table>-<method>-<dataset>` for every method of
the params section `<table>.<dataset>` (to `groups`, or to `two_phase_groups` for a method
with pretrain and finetune sections). `groups`, `two_phase_groups` and `download` (the data
sets to download: those of the groups, and the main experiment's) are replaced, one line
per group; every other line of params.yaml, comments included, stays as it is. The new params are validated before
anything is written. `git checkout params.yaml` goes back to the default (digits) run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from noisylabels.cli import Stage, stage_errors
import yaml

from noisylabels.errors import ConfigError
from noisylabels.resolve import group_names, load_params, resolve_group


def groups_for(params: dict, selections: list[str]) -> tuple[dict, dict, list[str]]:
    """(groups, two_phase_groups, download) for `TABLE:DATASET` selections."""
    groups, two_phase, download = {}, {}, [(params.get("data") or {}).get("name", "digits")]  # main's data set
    for sel in selections:
        table, _, dataset = sel.partition(":")
        section = params.get(table, {}).get(dataset) if isinstance(params.get(table), dict) else None
        if not isinstance(section, dict) or not isinstance(section.get("methods"), dict):
            raise ConfigError(f"selection={sel!r}: params.yaml has no section {table}.{dataset} with methods; "
                              f"expected TABLE:DATASET, e.g. sce_table1:cifar10")
        for method, cfg in section["methods"].items():
            target = two_phase if isinstance(cfg, dict) and "pretrain" in cfg else groups
            target[f"{table}-{method}-{dataset}"] = {"table": table, "dataset": dataset, "method": method}
        download += [dataset] if dataset not in download else []
    return groups, two_phase, download


def _block(name: str, value) -> list[str]:
    """A top-level params key in the file's style: one flow mapping per group."""
    if isinstance(value, list):
        return [f"{name}: [{', '.join(value)}]"]
    if not value:
        return [f"{name}: {{}}"]
    return [f"{name}:"] + [f"  {k}: {{table: {v['table']}, dataset: {v['dataset']}, method: {v['method']}}}"
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
        groups, two_phase, download = groups_for(params, list(selections))
        new = {**params, "groups": groups, "two_phase_groups": two_phase, "download": download}
        for name in group_names(new):
            resolve_group(new, name)
    text = path.read_text()
    for key in ("download", "groups", "two_phase_groups"):
        if not any(line.startswith(f"{key}:") for line in text.splitlines()):
            text += f"{key}: {{}}\n"
    text = rewrite(text, {k: _block(k, new[k]) for k in ("download", "groups", "two_phase_groups")})
    assert yaml.safe_load(text) == new  # only these three keys changed
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    click.echo(f"{path}: {len(groups)} groups, {len(two_phase)} two-phase groups; download: {', '.join(download)}")


if __name__ == "__main__":
    sys.exit(main())
