"""What every stage script shares: turning a known bad-input error into one line and exit 2.

Stages wrap their body in `stage_errors()`; a ConfigError (bad params), DataError (missing
or corrupt data) or TrackingError (unusable MLflow store) prints `error: <one line>` to stderr
and exits with status 2 before anything is written (outputs are written atomically).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from noisylabels.config import ConfigError
from noisylabels.data.sources import DataError
from noisylabels.tracking import TrackingError


@contextmanager
def stage_errors():
    try:
        yield
    except (ConfigError, DataError, TrackingError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
