"""The errors a stage turns into one line on stderr and exit code 2 (cli.stage_errors).

Each message names the key or file, the value and what is allowed or what to run.
"""


class ConfigError(ValueError):
    """A bad setting in params.yaml or a stage option."""


class DataError(RuntimeError):
    """A data set or intermediate file that cannot be had or read."""


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used."""


class DivergenceError(RuntimeError):
    """A run whose training loss stopped being a finite number."""


class ExecutorError(RuntimeError):
    """The Ray cluster of `--executor ray` cannot be used."""
