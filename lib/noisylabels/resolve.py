"""params.yaml -> a run group of frozen, typed runs; every setting checked before any work.

    group = resolve_group(load_params("params.yaml"), "sce_table1-sl-digits")
    for run in group.runs: run.setting, run.seed, run.method.loss, group.train, ...

A run group is one method on one data set over a grid of noise settings and seeds:
- `main`: the top-level sections `data`, `noise`, `model`, `loss`, `procedure`, `train` (one
  noise setting, several seeds); what `dvc exp run -S loss.alpha=0.1` changes.
- a paper table group, listed in `groups:` as {table, dataset, method}: its settings come
  from `<table>.noise` (the grid) and `<table>.<dataset>` (model, train and
  `methods.<method>`: a loss, optional `procedure` and per-setting `overrides`). The groups
  of one table and data set train in one DVC stage, pretrain@<table>-<dataset>: the keys of
  `train_stages` (Group.unit, train_stages, resolve_unit).
- a two-phase group, listed in `two_phase_groups:` the same way: its method has a
  `pretrain` and a `finetune` section, each with optional `overrides`. It has stages of its
  own (pretrain-two_phase@<group>, finetune@<group>), so that a change to phase 2 does not
  rerun phase 1.
The settings' types, bounds and registries are in spec/; here are only the rules that join
two sections (a loss's start epoch within train.epochs, a matrix of the data set's class
count) and the per-setting overrides. A bad value raises ConfigError with one line.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from noisylabels.errors import ConfigError
from noisylabels.spec.base import check, join
from noisylabels.spec.datasets import DATASETS, Dataset
from noisylabels.spec.groups import Download, GroupEntry, TableDataset, TrainStage
from noisylabels.spec.losses import LossSpec
from noisylabels.spec.methods import SinglePhase, TwoPhase
from noisylabels.spec.models import Model, ModelSpec
from noisylabels.spec.noise import MainNoise, NoiseSetting, TableNoise, check_for_dataset, settings_grid
from noisylabels.spec.train import Train

MAIN = "main"
GROUP_LISTS = ("groups", "two_phase_groups")
Method = SinglePhase | TwoPhase


@dataclass(frozen=True)
class Group:
    """One method on one data set over all its noise settings and seeds."""

    name: str
    table: str  # the table section (or "main"); also the MLflow experiment name
    paper: str
    method: str  # the method's key in the table (the loss name for main)
    dataset: Dataset
    settings: tuple[NoiseSetting, ...]
    seeds: tuple[int, ...]
    draw: str
    val_fraction: float
    model: Model
    train: Train
    written: Method  # the method as written in params.yaml
    per_setting: dict[str, Method]  # setting name -> the method with that setting's overrides applied

    @property
    def two_phase(self) -> bool:
        return isinstance(self.written, TwoPhase)

    @property
    def unit(self) -> str:
        """What its DVC stages are named after: the group, or for a single-phase table group
        its table and data set, whose groups one stage trains (a key of `train_stages`)."""
        if self.name == MAIN or self.two_phase:
            return self.name
        return f"{self.table}-{self.dataset.name}"

    @property
    def folder(self) -> str:
        """Its folder in data/noisy and data/runs: <unit>, or <unit>/<group> in a stage of
        several groups."""
        return self.name if self.unit == self.name else f"{self.unit}/{self.name}"

    @property
    def stage(self) -> str:
        """The DVC stage that writes this group's final runs (data/runs/<folder>)."""
        if self.name == MAIN:
            return "pretrain-main"
        return f"finetune@{self.name}" if self.two_phase else f"pretrain@{self.unit}"

    @property
    def phase1_stage(self) -> str:
        """A two-phase group's phase-1 stage (data/phase1/<group>)."""
        return f"pretrain-two_phase@{self.name}"

    @cached_property
    def runs(self) -> tuple["Run", ...]:
        return tuple(Run(self, s, seed) for s in self.settings for seed in self.seeds)

    def changed_settings(self) -> dict[str, dict]:
        """setting name -> its method's plain values, for the settings that overrides change."""
        return {name: m.model_dump(exclude={"overrides"}) for name, m in self.per_setting.items() if m != self.written}

    def values(self, method: Method | None = None) -> dict:
        """The resolved settings as plain values, keyed as in params.yaml (the method's
        sections at the top: loss and procedure, or pretrain and finetune); `method`: one
        setting's, else the method as written. MLflow params and group.json are these."""
        return {"dataset": self.dataset.name, "method": self.method, "noise": {"draw": self.draw,
                "val_fraction": self.val_fraction}, "model": self.model.model_dump(), "train": self.train.model_dump(),
                **(method or self.written).model_dump(exclude={"overrides"})}


@dataclass(frozen=True)
class Run:
    """One training of one model: a noise setting and a seed within a group."""

    group: Group
    setting: NoiseSetting
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting.name}-s{self.seed}"

    @property
    def key(self) -> str:
        """The run among all runs of a stage, which may train several groups."""
        return f"{self.group.name} {self.name}"

    @property
    def method(self) -> Method:
        return self.group.per_setting[self.setting.name]

    @property
    def index(self) -> tuple[int, int]:
        """(setting, seed) position in the noise stage's settings x seeds arrays."""
        return self.group.settings.index(self.setting), self.group.seeds.index(self.seed)


class _UniqueKeyLoader(yaml.CSafeLoader):
    """YAML's safe loader, except that a key written twice in one mapping is an error (plain
    YAML keeps the last one silently: a group listed twice would run once, with one entry).
    libyaml's parser (CSafeLoader, the same values): params.yaml in 0.02 s instead of 0.16 s,
    in every stage."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_params(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r}: not found")
    try:
        params = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)  # where the parser gave up: the line to look at
        problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(f"params file {str(path)!r}: not valid YAML ({where}{problem})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"params file {str(path)!r}: expected a mapping at the top level")
    return params


def group_names(params: dict) -> list[str]:
    """Every run group the pipeline trains: main first, then `groups`, then `two_phase_groups`."""
    lists = {kind: check(dict, kind, params.get(kind) or {}) for kind in GROUP_LISTS}
    both = sorted(set(lists["groups"]) & set(lists["two_phase_groups"]))
    if both or MAIN in lists["groups"] or MAIN in lists["two_phase_groups"]:
        name = both[0] if both else MAIN
        raise ConfigError(f"group={name!r}: listed twice (main, groups, two_phase_groups); expected one entry")
    return [MAIN, *lists["groups"], *lists["two_phase_groups"]]


def train_stages(params: dict) -> dict[str, list[str]]:
    """`train_stages` key -> the `groups` that the DVC stage pretrain@<key> trains: those with
    the entry's table and data set. Every group's table and data set has an entry, and every
    entry a group (dvc.yaml's foreach makes a stage of each)."""
    stages = check(dict[str, TrainStage], "train_stages", params.get("train_stages") or {})
    groups = check(dict, "groups", params.get("groups") or {})
    units = {}
    for name, entry in groups.items():
        entry = check(GroupEntry, f"groups.{name}", entry)
        units.setdefault(f"{entry.table}-{entry.dataset}", []).append(name)
    names = group_names(params)
    for key, entry in stages.items():
        if key != f"{entry.table}-{entry.dataset}":
            raise ConfigError(f"train_stages.{key}: expected the key {entry.table}-{entry.dataset} (<table>-<dataset>)")
        if key not in units:
            raise ConfigError(f"train_stages.{key}: no group of `groups` has table {entry.table} and data set "
                              f"{entry.dataset}; expected the entry removed")
        if key in names:
            raise ConfigError(f"train_stages.{key}: also the name of a group; expected group names "
                              "<table>-<method>-<dataset>")
    missing = sorted(set(units) - set(stages))
    if missing:
        raise ConfigError(f"train_stages: no entry {missing[0]} for the groups {', '.join(units[missing[0]])}; "
                          "expected one entry per table and data set of `groups`")
    return units


def _require(params: dict, key: str):
    if key not in params:
        raise ConfigError(f"{key}: missing section in params.yaml")
    return params[key]


def dataset_spec(params: dict, name: str, key: str = "dataset") -> Dataset:
    """The settings of data set `name` (params section `datasets.<name>`; `key`: where the
    name was written)."""
    if name not in DATASETS:
        raise ConfigError(f"{key}={name!r}: expected one of {', '.join(DATASETS)}")
    datasets = _require(params, "datasets")
    if name not in datasets:
        raise ConfigError(f"datasets.{name}: missing; every data set used needs an entry in `datasets`")
    return check(DATASETS[name], f"datasets.{name}", datasets[name] or {})


def _deep_merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for k, v in changes.items():
        out[k] = _deep_merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _overrides(key: str, overrides, base: dict, settings) -> dict[str, tuple[str, dict]]:
    """`<key>.overrides` ({noise type or setting name: changed values of `base`}) -> setting
    name -> (params key of the change, `base` with the change merged). A noise-type entry
    applies to all its rates; a setting entry wins."""
    overrides = check(dict[str, dict], join(key, "overrides"), overrides)
    names = {s.name for s in settings} | {s.type for s in settings}
    for k, v in overrides.items():
        if k not in names:
            raise ConfigError(f"{join(key, 'overrides')}.{k}={v!r}: expected a noise type or setting of the grid: "
                              f"{', '.join(sorted(names))}")
        if "name" in v:
            raise ConfigError(f"{join(key, 'overrides')}.{k}={v!r}: expected changed values (not a new name)")
    out = {}
    for s in settings:
        changes = _deep_merge(overrides.get(s.type, {}), overrides.get(s.name, {}))
        if changes:
            out[s.name] = (f"{join(key, 'overrides')}.{s.name if s.name in overrides else s.type}",
                           _deep_merge(base, changes))
    return out


def _check_loss(key: str, loss, train: Train, dataset: Dataset) -> None:
    """A loss against the schedule and the data set's class count."""
    if loss.name == "truncated_lq" and loss.start_epoch > train.epochs:
        raise ConfigError(f"{key}.start_epoch={loss.start_epoch}: expected an epoch <= train.epochs={train.epochs}")
    matrix = getattr(loss, "matrix", None)
    if isinstance(matrix, list) and len(matrix) != dataset.num_classes:
        K = dataset.num_classes
        raise ConfigError(f"{key}.matrix='{len(matrix)}x{len(matrix)}': expected a {K}x{K} matrix "
                          f"(the data set has {K} classes)")


def _single_phase(key: str, raw: dict, train: Train, dataset: Dataset, settings) -> tuple[Method, dict]:
    """A loss, a training procedure, and per-setting changes of the loss."""
    written = check(SinglePhase, key, raw)
    _check_loss(join(key, "loss"), written.loss, train, dataset)
    procedure = written.procedure
    if procedure.name == "d2l" and procedure.init_epoch >= train.epochs:
        raise ConfigError(f"{join(key, 'procedure')}.init_epoch={procedure.init_epoch}: expected an epoch < "
                          f"train.epochs={train.epochs}")
    per_setting = {}
    for setting, (where, merged) in _overrides(key, raw.get("overrides", {}), raw["loss"], settings).items():
        loss = check(LossSpec, where, merged)
        _check_loss(where, loss, train, dataset)
        per_setting[setting] = written.model_copy(update={"loss": loss, "overrides": {}})
    return written, per_setting


def _two_phase(key: str, raw: dict, train: Train, dataset: Dataset, settings) -> tuple[Method, dict]:
    """A phase 1 and a phase 2, each section with its own per-setting changes (so a finetune
    change never touches the pretrain stage's params)."""
    sections = {k: check(dict, join(key, k), v) if k in ("pretrain", "finetune") else v for k, v in raw.items()}
    written = check(TwoPhase, key, {k: {o: v for o, v in s.items() if o != "overrides"} if isinstance(s, dict) else s
                                    for k, s in sections.items()})
    if written.pretrain.name == "o2u" and written.pretrain.forget_rate == "realized_noise_rate" and any(
            s.type == "real" for s in settings):
        raise ConfigError(f"{key}.pretrain.forget_rate='realized_noise_rate': real noisy labels have no known noise "
                          "rate; expected a number in [0, 1) or gmm")
    changed: dict[str, dict] = {}
    for phase in ("pretrain", "finetune"):
        base = {k: v for k, v in sections[phase].items() if k != "overrides"}
        for setting, change in _overrides(join(key, phase), sections[phase].get("overrides", {}), base,
                                          settings).items():
            changed.setdefault(setting, {})[phase] = change
    per_setting = {}
    for setting, phases in changed.items():
        values = {"pretrain": written.pretrain, "finetune": written.finetune}
        for phase, (where, merged) in phases.items():
            values[phase] = check(TwoPhase.model_fields[phase].annotation, where, merged)
        per_setting[setting] = check(TwoPhase, key, values)
    return written, per_setting


def resolve_group(params: dict, name: str) -> Group:
    """Check and resolve the settings of run group `name` ("main" or a key of a group list)."""
    names = group_names(params)  # each group listed once
    if name == MAIN:
        data = check(dict, "data", _require(params, "data"))
        dataset = dataset_spec(params, check(str, "data.name", data.get("name")), "data.name")
        noise = check(MainNoise, "noise", _require(params, "noise"))
        setting = NoiseSetting(noise.type, noise.rate)
        check_for_dataset("noise.type", setting, dataset)
        train = check(Train, "train", _require(params, "train"))
        raw = {"loss": _require(params, "loss"), "procedure": _require(params, "procedure")}
        written, per_setting = _single_phase("", raw, train, dataset, (setting,))  # top-level sections
        group = dict(name=MAIN, table=MAIN, paper=MAIN, method=written.loss.name, dataset=dataset,
                     settings=(setting,), seeds=tuple(noise.seeds), draw=noise.draw, val_fraction=noise.val_fraction,
                     model=check(ModelSpec, "model", _require(params, "model")), train=train)
    else:
        kind = next((k for k in GROUP_LISTS if name in (params.get(k) or {})), None)
        if kind is None:
            raise ConfigError(f"group={name!r}: expected main or one of: {', '.join(names[1:])}")
        entry = check(GroupEntry, f"{kind}.{name}", params[kind][name])
        tkey, ds, mname = entry.table, entry.dataset, entry.method
        if not isinstance(params.get(tkey), dict):
            raise ConfigError(f"{kind}.{name}.table={tkey!r}: expected the name of a table section in params.yaml")
        table = params[tkey]
        dataset = dataset_spec(params, ds, f"{kind}.{name}.dataset")
        noise = check(TableNoise, f"{tkey}.noise", table.get("noise"))
        dkey = f"{tkey}.{ds}"
        if ds not in table:
            raise ConfigError(f"{kind}.{name}.dataset={ds!r}: table {tkey!r} has no section {dkey}")
        section = check(TableDataset, dkey, table[ds])
        methods = section.methods
        if mname not in methods:
            raise ConfigError(f"{kind}.{name}.method={mname!r}: expected one of {dkey}.methods: {', '.join(methods)}")
        mkey, raw = f"{dkey}.methods.{mname}", methods[mname]
        if ("pretrain" in raw) != (kind == "two_phase_groups"):
            raise ConfigError(f"{kind}.{name}.method={mname!r}: a method with pretrain and finetune sections "
                              "belongs under two_phase_groups, a method with a loss under groups")
        train = check(Train, f"{dkey}.train", section.train)
        settings = settings_grid(f"{tkey}.noise.settings", noise.settings, dataset)
        resolve_method = _two_phase if kind == "two_phase_groups" else _single_phase
        written, per_setting = resolve_method(mkey, raw, train, dataset, settings)
        group = dict(name=name, table=tkey, paper=str(table.get("paper", tkey)), method=mname, dataset=dataset,
                     settings=settings, seeds=tuple(noise.seeds), draw=noise.draw, val_fraction=noise.val_fraction,
                     model=check(ModelSpec, f"{dkey}.model", section.model), train=train)
    if "download" in params:  # dvc.yaml downloads these: the group's data set must be one
        download = check(Download, "download", params["download"])
        if dataset.name not in download:
            raise ConfigError(f"download={download!r}: expected it to list {dataset.name!r}, the data set of "
                              f"group {name!r}")
    settings = group["settings"]
    return Group(**group, written=written, per_setting={s.name: per_setting.get(s.name, written) for s in settings})


def resolve_unit(params: dict, name: str) -> list[Group]:
    """What a training stage's `--group NAME` trains: that group ("main" or a key of a group
    list), or every group of `train_stages.<NAME>`."""
    if name == MAIN or name in group_names(params):
        return [resolve_group(params, name)]
    stages = train_stages(params) if name in (params.get("train_stages") or {}) else {}
    if name not in stages:
        raise ConfigError(f"group={name!r}: expected main, a key of train_stages, groups or two_phase_groups: "
                          f"{', '.join([*(params.get('train_stages') or {}), *group_names(params)[1:]])}")
    return [resolve_group(params, g) for g in stages[name]]
