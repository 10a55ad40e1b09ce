"""Noise settings: the main experiment's one setting, a table's grid of them, the draw and
the held-out split. The generators are in noisylabels/engine/noise.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from noisylabels.errors import ConfigError
from noisylabels.engine.noise import ASYMMETRIC_DATASETS
from noisylabels.spec.base import Distinct, Fraction, Spec, check

# real: the data set's own noisy labels (CIFAR-N, Clothing1M), listed by label set, not rate
NOISE_TYPES = ("symmetric", "symmetric-all", "asymmetric", "pairflip", "real")
Seeds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1), Distinct]
Rates = Annotated[list[Fraction], Field(min_length=1)]  # a table's rates of one noise type
LabelSets = Annotated[list[str], Field(min_length=1)]  # a data set's real noisy label sets


@dataclass(frozen=True)
class NoiseSetting:
    type: str
    rate: float | str  # a synthetic noise rate, or the label set of `real` noise (e.g. worst)

    @property
    def level(self) -> str:
        return f"{self.rate:g}" if isinstance(self.rate, float) else self.rate

    @property
    def name(self) -> str:
        return f"{self.type}-{self.level}"


class _Noise(Spec):
    draw: Literal["exact", "per-sample"]
    # held out from the noisy training set to choose the 'best' epoch (never the test set)
    val_fraction: Annotated[float, Field(gt=0, le=0.5)]
    seeds: Seeds


class MainNoise(_Noise):
    """The main experiment: one synthetic setting."""

    type: Literal[NOISE_TYPES[:-1]]
    rate: Fraction


class TableNoise(_Noise):
    """A table's grid: {noise type: [rates, or label sets for real]}, checked per data set."""

    settings: dict[str, list]


def check_for_dataset(key: str, setting: NoiseSetting, dataset) -> None:
    """Whether `dataset` (a spec.datasets.Dataset) can carry `setting`."""
    if dataset.name == "clothing1m" and setting.type != "real":  # its true training labels are mostly unknown
        raise ConfigError(f"{key}={setting.type!r}: data set 'clothing1m' has only its own noisy labels; "
                          "expected real: [noisy]")
    if setting.type == "asymmetric" and dataset.name not in ASYMMETRIC_DATASETS:
        raise ConfigError(f"{key}={setting.type!r}: data set {dataset.name!r} has no asymmetric class map "
                          f"(maps exist for: {', '.join(ASYMMETRIC_DATASETS)})")


def settings_grid(key: str, grid: dict, dataset) -> tuple[NoiseSetting, ...]:
    """`{type: [rates]}` -> NoiseSettings in the order written."""
    if not grid:
        raise ConfigError(f"{key}={grid!r}: expected a mapping from noise type ({', '.join(NOISE_TYPES)}) "
                          "to a list of rates")
    settings = []
    for ntype, rates in grid.items():
        check(Literal[NOISE_TYPES], f"{key}.{ntype}", ntype)
        if ntype == "real":  # a data set's own noisy labels, by label set
            sets = dataset.real_label_sets
            allowed = (f"expected a label set of {dataset.name!r}: {', '.join(sets)}" if sets else
                       f"data set {dataset.name!r} has no real noisy labels")
            check(LabelSets, f"{key}.real", rates)
            for i, r in enumerate(rates):
                if r not in sets:
                    raise ConfigError(f"{key}.real[{i}]={r!r}: {allowed}")
            settings += [NoiseSetting(ntype, r) for r in rates]
            continue
        for r in check(Rates, f"{key}.{ntype}", rates):
            setting = NoiseSetting(ntype, r)
            check_for_dataset(f"{key}.{ntype}", setting, dataset)
            settings.append(setting)
    return tuple(settings)
