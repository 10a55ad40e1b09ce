"""The run-group lists and the table sections they point into (their shape only: the
sections inside are checked by their own settings classes, with their own keys)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from noisylabels.spec.base import Distinct, Spec
from noisylabels.spec.datasets import DATASETS

DatasetName = Literal[tuple(DATASETS)]
# `download`: dvc.yaml makes a download stage per entry
Download = Annotated[list[DatasetName], Field(min_length=1), Distinct]


class GroupEntry(Spec):
    """An entry of `groups` or `two_phase_groups`: one method of a table on one data set."""

    table: str
    dataset: DatasetName
    method: str


class TrainStage(Spec):
    """An entry of `train_stages` (key <table>-<dataset>): dvc.yaml's stage
    pretrain@<key> trains every group of `groups` with this table and data set."""

    table: str
    dataset: DatasetName


class TableDataset(Spec):
    """`<table>.<dataset>`: the network, the schedule and the methods (name -> section)."""

    model: dict
    train: dict
    methods: dict[str, dict]
