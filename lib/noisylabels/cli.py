"""What the stage scripts share.

Stages wrap their checks in `stage_errors()`; a ConfigError (bad params), DataError (missing
or corrupt data), DivergenceError (a run's loss is no longer finite) or TrackingError
(unusable MLflow store; errors.py has them all) prints
`error: <one line>` to stderr and exits with status 2 before anything is written (outputs
are written atomically). `groups_from_params` is the all-groups stages' prelude.
The all-groups stages (noise, evaluate) use `write_per_group`.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from noisylabels.errors import ConfigError, DataError, DivergenceError, TrackingError
from noisylabels.io import atomic_dir
from noisylabels.resolve import group_names, load_params, resolve_group


def groups_from_params(params_file: str, group: str | None) -> list:
    """The one group named, or every group of params.yaml, resolved (all checked first)."""
    params = load_params(params_file)
    return [resolve_group(params, name) for name in ([group] if group else group_names(params))]


def write_per_group(groups: list, one: bool, out, root: str, name, write) -> None:
    """Call write(group, path) for the one group (path: `out`, or <root>/<name(group)>), or for
    every group into a fresh `root` folder that replaces the old one at the end, so a group
    no longer in params leaves nothing behind and a failure leaves the old folder whole."""
    if one:
        write(groups[0], out or f"{root}/{name(groups[0])}")
        return
    with atomic_dir(out or root) as tmp:
        for g in groups:
            write(g, tmp / name(g))


@contextmanager
def stage_errors():
    try:
        yield
    except (ConfigError, DataError, DivergenceError, TrackingError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
