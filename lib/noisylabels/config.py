"""The params schema: every setting a stage uses is checked here before any work starts.

A stage calls `load_params(path)` and then `resolve_group(params, name)` (or
`dataset_options(params, name)`); both return plain values or raise `ConfigError` whose
message is one line naming the key, the value and what is allowed.

Run groups share one resolved form, `Group`:
- `main`: the top-level sections `data`, `noise`, `model`, `loss`, `training`, `train`
  (one noise setting, several seeds); what `dvc exp run -S loss.alpha=0.1` changes.
- a paper table group, listed in `groups:` as {table, dataset, method}; its settings come
  from the table's section: `<table>.noise` (the grid of noise settings and seeds) and
  `<table>.<dataset>` (model, train and `methods.<method>`: its loss, optional per-setting
  loss `overrides` and optional `training` method).
- a two-phase group, listed in `two_phase_groups:` the same way; its method section has a
  `pretrain` (phase 1: label correction or sample selection, two_phase.py) and a `finetune`
  section (phase 2), each with optional per-setting `overrides` of its values.
Pure Python on purpose: the light stages import it without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from noisylabels.data.sources import CIFAR10_CLASSES, DATASETS, REAL_LABEL_SETS

MAIN = "main"


class ConfigError(ValueError):
    """A bad setting; str(error) is the one line shown to the user."""


# --- value checks: each takes (key, value) and returns the value or raises ConfigError ---


def _fail(key, value, allowed):
    raise ConfigError(f"{key}={value!r}: {allowed}")


def _number(lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    kind = "an integer" if integer else "a number"
    lo_txt = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
    hi_txt = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
    allowed = f"expected {kind} " + " and ".join(t for t in (lo_txt, hi_txt) if t)

    def check(key, value):
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            _fail(key, value, allowed)
        if lo is not None and (value < lo or (lo_open and value == lo)):
            _fail(key, value, allowed)
        if hi is not None and (value > hi or (hi_open and value == hi)):
            _fail(key, value, allowed)
        return value

    return check


def _one_of(*choices):
    def check(key, value):
        if value not in choices:
            _fail(key, value, f"expected one of {', '.join(map(str, choices))}")
        return value

    return check


def _int_list(lo=0, min_len=0):
    def check(key, value):
        if not isinstance(value, list) or len(value) < min_len:
            _fail(key, value, f"expected a list of at least {min_len} integers >= {lo}")
        for i, v in enumerate(value):
            _number(lo=lo, integer=True)(f"{key}[{i}]", v)
        if len(set(value)) != len(value):
            _fail(key, value, "expected distinct values")
        return list(value)

    return check


def _name_list(choices, min_len):
    def check(key, value):
        if not isinstance(value, list) or len(value) < min_len or len(set(value)) != len(value):
            _fail(key, value, f"expected a list of at least {min_len} distinct names")
        for i, v in enumerate(value):
            _one_of(*choices)(f"{key}[{i}]", v)
        return list(value)

    return check


def _bool(key, value):
    if not isinstance(value, bool):
        _fail(key, value, "expected true or false")
    return value


_rate = _number(0, 1, hi_open=True)  # a noise rate of 1 would leave no clean label
_positive = _number(0, lo_open=True)
_nonneg = _number(0)

# --- the schema -------------------------------------------------------------------------

# real: the data set's own noisy labels (CIFAR-N, Clothing1M), listed by label set, not rate
NOISE_TYPES = ("symmetric", "symmetric-all", "asymmetric", "pairflip", "real")
NOISE_DRAWS = ("exact", "per-sample")
# Data sets with a published class-dependent map (noise.py holds the maps).
ASYMMETRIC_DATASETS = ("digits", "mnist", "cifar10", "cifar100")

def _matrix(key, value):
    """Where Forward/Backward get T: the noise stage's realized matrix, Patrini et al.'s
    anchor-point estimate, the identity (SCE's published run, which makes them plain CE),
    or a literal K x K list whose rows each sum to 1."""
    if value in MATRIX_SOURCES:
        return value
    allowed = f"expected one of {', '.join(MATRIX_SOURCES)} or a square list of rows, each summing to 1"
    if not isinstance(value, list) or not value or any(not isinstance(r, list) or len(r) != len(value) for r in value):
        _fail(key, value, allowed)
    for i, row in enumerate(value):
        for j, v in enumerate(row):
            _number(0, 1)(f"{key}[{i}][{j}]", v)
        if abs(sum(row) - 1) > 1e-6:
            _fail(f"{key}[{i}]", row, f"row sums to {sum(row):g}; {allowed}")
    return value


MATRIX_SOURCES = ("realized", "estimated", "identity")
_A = _number(hi=0, hi_open=True)  # log 0 := A in RCE; A < 0
_q = _number(0, 1, lo_open=True)
_weight = _nonneg  # alpha, beta: the weights of a loss's two terms

# Loss name -> its hyper-parameters; losses.py implements exactly these (a test checks it).
# The formulas are in losses.py's docstring.
LOSSES = {
    "ce": {},
    "scaled_ce": {"scale": _positive},
    "rce": {"A": _A},
    "sl": {"alpha": _weight, "beta": _weight, "A": _A},
    "lsr": {"epsilon": _number(0, 1, hi_open=True)},
    "lsr_sl": {"epsilon": _number(0, 1, lo_open=True, hi_open=True), "alpha": _weight, "beta": _weight},
    "bootstrap": {"beta": _number(0, 1), "mode": _one_of("soft", "hard")},
    "forward": {"matrix": _matrix, "anchor_percentile": _number(0, 100, lo_open=True)},
    "backward": {"matrix": _matrix, "anchor_percentile": _number(0, 100, lo_open=True)},
    "forward_sl": {"matrix": _matrix, "anchor_percentile": _number(0, 100, lo_open=True),
                   "beta": _weight, "A": _A},
    "mae": {},
    "gce": {"q": _q},
    # weights w = 1[p_y > k] recomputed at start_epoch and every `interval` epochs after it
    "truncated_lq": {"q": _q, "k": _number(0, 1, lo_open=True, hi_open=True),
                     "start_epoch": _number(1, integer=True), "interval": _number(1, integer=True)},
    "nce": {},
    "nfl": {"gamma": _nonneg},
    "ngce": {"q": _q},
    "nce_rce": {"alpha": _weight, "beta": _weight, "A": _A},
    "nce_mae": {"alpha": _weight, "beta": _weight},
    "nfl_rce": {"alpha": _weight, "beta": _weight, "gamma": _nonneg, "A": _A},
    "nfl_mae": {"alpha": _weight, "beta": _weight, "gamma": _nonneg},
}

# How a method trains; "standard" minimises its loss. D2L (Ma et al. 2018) trains with its
# loss until the LID of the penultimate features turns up, then bootstraps (methods.py).
TRAININGS = {
    "standard": {},
    "d2l": {
        "lid_k": _number(1, integer=True),          # neighbours in the LID estimate (paper: 20)
        "lid_samples": _number(2, integer=True),    # random training samples per epoch (1280)
        "lid_batch": _number(2, integer=True),      # LID is averaged over batches of this size (128)
        "window": _number(2, integer=True),         # epochs in the turning-point window (5)
        "init_epoch": _number(1, integer=True),     # no turning point before this epoch
    },
}

# Model name -> its options; models.py builds exactly these (a test checks it).
MODELS = {
    "digits_mlp": {"hidden": _number(1, integer=True), "depth": _number(1, integer=True)},
    "sce_mnist_cnn": {},
    "sce_cifar10_cnn": {},
    "sce_resnet44": {},
    "gce_resnet34": {},
    "preact_resnet32": {},
    "coteaching_cnn": {},
    "resnet50": {"pretrained": _bool},  # torchvision's; ImageNet weights (Clothing1M) or none
}

# Phase 1 of a two-phase method (formulas in two_phase.py): name -> its options.
_epochs = _number(1, integer=True)


def _forget_rate(key, value):
    """O2U-Net's share of samples to remove: a number, the setting's noise rate, or gmm."""
    if value in ("noise_rate", "gmm"):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        _fail(key, value, "expected a number in [0, 1), noise_rate (the setting's rate) or gmm (no known rate)")
    return value


PRETRAINS = {
    "joint": {"alpha": _weight, "beta": _weight, "labels": _one_of("soft", "hard"),
              "start_epoch": _epochs, "window": _epochs, "epochs": _epochs, "lr": _positive},
    "pencil": {"alpha": _weight, "beta": _weight, "label_lr": _positive, "init_scale": _positive,
               "stage1_epochs": _epochs, "epochs": _epochs, "lr": _positive},
    "o2u": {"epochs": _epochs, "lr": _positive, "cyclic_epochs": _epochs, "cycle": _epochs,
            "r1": _positive, "r2": _positive, "cyclic_batch_size": _number(2, integer=True),
            "forget_rate": _forget_rate},
}
# Phase 2: `loss` is kl or reverse_kl after a label correction (soft labels), otherwise a
# loss of LOSSES on the kept samples (not those that need a transition matrix or a schedule).
SOFT_LOSSES = {"kl": {}, "reverse_kl": {}}
HARD_FINETUNE_LOSSES = {k: v for k, v in LOSSES.items()
                        if k not in ("forward", "backward", "forward_sl", "truncated_lq")}
FINETUNE = {
    "loss": None,
    "mixup": _nonneg,                    # Beta(a, a) of mixup; 0 = no mixup
    "init": _one_of("scratch", "phase1"),  # a new network, or phase 1's
    "epochs": _epochs,
    "lr": _positive,
    "milestones": _int_list(lo=1),
    "gamma": _number(0, 1, lo_open=True),
}

def _l2(key, value):
    """Keras-style L2 per layer: {parameter-name prefix or all: coefficient} (augment.py, engine.SGD)."""
    if not isinstance(value, dict) or any(not isinstance(k, str) or not k for k in value):
        _fail(key, value, 'expected a mapping from a layer name (a parameter-name prefix, or all) to a number >= 0')
    return {k: _nonneg(f"{key}.{k}", v) for k, v in value.items()}


_size = _number(1, integer=True)
# Augmentation of a training batch on the device (augment.py has each one's definition).
AUGMENTS = {
    "none": {},
    "shift": {"shift": _number(0, 1, hi_open=True), "rotation": _number(0, 180), "flip": _bool},  # Keras (SCE)
    "crop": {"size": _size, "padding": _number(0, integer=True), "flip": _bool},  # torchvision
    "center_crop": {"size": _size},  # SCE's Clothing1M
}
NORMALIZATIONS = ("channel", "pixel_mean", "imagenet")

TRAIN = {
    "epochs": _number(1, integer=True),
    "batch_size": _number(2, integer=True),  # >= 2: batch norm needs two samples
    "lr": _positive,
    "momentum": _number(0, 1, hi_open=True),
    "weight_decay": _nonneg,  # L2 decay in the gradient (torch's weight_decay), every parameter
    "milestones": _int_list(lo=1),
    "gamma": _number(0, 1, lo_open=True),
    "device": _one_of("auto", "cpu", "cuda"),
    # Keras SGD's `decay` (SCE's code): the lr of iteration i is the epoch's lr / (1 + lr_decay * i)
    "lr_decay": _nonneg,
    "l2": _l2,  # Keras kernel_regularizer l2(c): c * sum(w^2) added to the loss, per layer
    "normalize": _one_of(*NORMALIZATIONS),
    "augment": lambda key, value: _named(key, value, AUGMENTS),
}
# Optional keys and their values when left out: the plain setting of the default run.
TRAIN_DEFAULTS = {"lr_decay": 0.0, "l2": {}, "normalize": "channel", "augment": {"name": "none"}}

NOISE_COMMON = {
    "draw": _one_of(*NOISE_DRAWS),
    # held out from the noisy training set to choose the 'best' epoch (never the test set)
    "val_fraction": _number(0, 0.5, lo_open=True),
    "seeds": _int_list(lo=0, min_len=1),
}
NOISE_MAIN = {"type": _one_of(*NOISE_TYPES[:-1]), "rate": _rate, **NOISE_COMMON}  # synthetic noise
NOISE_TABLE = {"settings": None, **NOISE_COMMON}  # settings: checked by _noise_settings

def _max_n(key, value):
    """A subset size (to smoke-test a full-scale setting on a CPU), or null for all samples."""
    return None if value is None else _number(2, integer=True)(key, value)


DATASET_OPTIONS = {
    "digits": {"test_fraction": _number(0, 0.5, lo_open=True), "split_seed": _number(0, integer=True)},
    "mnist": {},
    "fashion-mnist": {},
    "cifar10": {},
    "cifar100": {},
    # CIFAR-4 of seed 004: CIFAR-10 restricted to these classes, relabelled 0..K-1 in order
    "cifar4": {"classes": _name_list(CIFAR10_CLASSES, 2)},
    "cifar10n": {},
    "cifar100n": {},
    "clothing1m": {"image_size": _number(8, integer=True)},  # stored side (the papers: 256)
}
# Every data set may keep a seeded subset of its training / test samples (sources._subset).
DATASET_DEFAULTS = {"max_train": None, "max_test": None}


def _section(key, value, schema):
    """Check that `value` is a mapping with exactly the schema's keys; return checked copy."""
    if not isinstance(value, dict):
        _fail(key, value, f"expected a mapping with keys {', '.join(schema)}")
    unknown = sorted(set(value) - set(schema))
    if unknown:
        k = unknown[0]
        _fail(f"{key}.{k}", value[k], f"unknown key; allowed keys: {', '.join(schema) or '(none)'}")
    out = {}
    for k, check in schema.items():
        if k not in value:
            raise ConfigError(f"{key}.{k}: missing")
        out[k] = check(f"{key}.{k}", value[k]) if check else value[k]
    return out


def _named(key, value, registry):
    """A section with a `name` picking an entry of `registry` plus that entry's options."""
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"{key}.name: missing; expected one of {', '.join(registry)}")
    name = _one_of(*registry)(f"{key}.name", value["name"])
    options = _section(key, {k: v for k, v in value.items() if k != "name"}, registry[name])
    return {"name": name, **options}


def _check_milestones(key, cfg):
    if cfg["milestones"] != sorted(cfg["milestones"]) or any(m >= cfg["epochs"] for m in cfg["milestones"]):
        _fail(f"{key}.milestones", cfg["milestones"], f"expected increasing epochs below {key}.epochs={cfg['epochs']}")


def _train(key, value):
    train = _section(key, {**TRAIN_DEFAULTS, **value} if isinstance(value, dict) else value, TRAIN)
    _check_milestones(key, train)
    return train


def _pretrain(key, value):
    cfg = _named(key, value, PRETRAINS)
    name = cfg["name"]
    if name == "joint" and cfg["start_epoch"] > cfg["epochs"]:
        _fail(f"{key}.start_epoch", cfg["start_epoch"], f"expected an epoch <= {key}.epochs={cfg['epochs']}")
    if name == "pencil" and cfg["stage1_epochs"] >= cfg["epochs"]:
        _fail(f"{key}.stage1_epochs", cfg["stage1_epochs"], f"expected an epoch < {key}.epochs={cfg['epochs']}")
    if name == "o2u" and cfg["cycle"] > cfg["cyclic_epochs"]:
        _fail(f"{key}.cycle", cfg["cycle"], f"expected at most {key}.cyclic_epochs={cfg['cyclic_epochs']} epochs")
    return cfg


def _finetune(key, value, pretrain):
    cfg = _section(key, value, FINETUNE)
    _check_milestones(key, cfg)
    corrects = pretrain["name"] in ("joint", "pencil")  # soft labels; o2u keeps hard labels
    cfg["loss"] = _named(f"{key}.loss", cfg["loss"], SOFT_LOSSES if corrects else HARD_FINETUNE_LOSSES)
    return cfg


def _deep_merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for k, v in changes.items():
        out[k] = _deep_merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


# --- resolved settings ------------------------------------------------------------------


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


@dataclass(frozen=True)
class Run:
    """One training of one model: a noise setting and a seed within a group."""

    setting: NoiseSetting
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting.name}-s{self.seed}"


@dataclass(frozen=True)
class Group:
    """One method on one data set over all its noise settings and seeds."""

    name: str
    table: str  # the table section (or "main"); also the MLflow experiment name
    paper: str
    method: str
    dataset: str
    settings: tuple[NoiseSetting, ...]
    seeds: tuple[int, ...]
    draw: str
    val_fraction: float
    model: dict
    loss: dict  # the method's loss as written; loss_for(setting) applies its overrides
    train: dict
    training: dict  # {"name": "standard"} or {"name": "d2l", ...}: see TRAININGS
    overrides: dict  # setting name -> that setting's resolved loss (or, two-phase, phases), where it differs
    pretrain: dict | None = None  # two-phase methods: phase 1 (PRETRAINS) ...
    finetune: dict | None = None  # ... and phase 2 (FINETUNE); then loss is finetune's loss

    @property
    def runs(self) -> list[Run]:
        return [Run(s, seed) for s in self.settings for seed in self.seeds]

    @property
    def two_phase(self) -> bool:
        return self.pretrain is not None

    def loss_for(self, setting: NoiseSetting) -> dict:
        if self.two_phase:
            return self.phase_for(setting, "finetune")["loss"]
        return self.overrides.get(setting.name, self.loss)

    def phase_for(self, setting: NoiseSetting, phase: str) -> dict:
        """A two-phase method's `pretrain` or `finetune` section for this setting."""
        return self.overrides.get(setting.name, {}).get(phase, getattr(self, phase))


def load_params(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r}: not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"params file {str(path)!r}: not valid YAML ({str(e).splitlines()[0]})")
    if not isinstance(params, dict):
        raise ConfigError(f"params file {str(path)!r}: expected a mapping at the top level")
    return params


def _require(params, key):
    if key not in params:
        raise ConfigError(f"{key}: missing section in params.yaml")
    return params[key]


def _check_noise_for_dataset(key, setting: NoiseSetting, dataset):
    if dataset == "clothing1m" and setting.type != "real":  # its true training labels are mostly unknown
        _fail(key, setting.type, "data set 'clothing1m' has only its own noisy labels; expected real: [noisy]")
    if setting.type == "asymmetric" and dataset not in ASYMMETRIC_DATASETS:
        _fail(key, setting.type,
              f"data set {dataset!r} has no asymmetric class map "
              f"(maps exist for: {', '.join(ASYMMETRIC_DATASETS)})")


def _noise_settings(key, value, dataset):
    """`{type: [rates]}` -> a tuple of NoiseSetting, in the order written."""
    if not isinstance(value, dict) or not value:
        _fail(key, value, f"expected a mapping from noise type ({', '.join(NOISE_TYPES)}) to a list of rates")
    settings = []
    for ntype, rates in value.items():
        _one_of(*NOISE_TYPES)(f"{key}.{ntype}", ntype)
        if not isinstance(rates, list) or not rates:
            _fail(f"{key}.{ntype}", rates, "expected a non-empty list of rates in [0, 1)")
        for i, r in enumerate(rates):
            if ntype == "real":  # a data set's own noisy labels, by label set
                sets = REAL_LABEL_SETS.get(dataset, {})
                if r not in sets:
                    _fail(f"{key}.real[{i}]", r, f"expected a label set of {dataset!r}: {', '.join(sets)}"
                          if sets else f"data set {dataset!r} has no real noisy labels "
                          f"(they exist for: {', '.join(REAL_LABEL_SETS)})")
                settings.append(NoiseSetting(ntype, r))
                continue
            s = NoiseSetting(ntype, float(_rate(f"{key}.{ntype}[{i}]", r)))
            _check_noise_for_dataset(f"{key}.{ntype}", s, dataset)
            settings.append(s)
    return tuple(settings)


def num_classes(params: dict, dataset: str) -> int:
    """The class count of a data set, known before it is downloaded."""
    if dataset == "cifar4":
        return len(dataset_options(params, dataset)["classes"])
    return {"cifar100": 100, "cifar100n": 100, "clothing1m": 14}.get(dataset, 10)


def _loss(key, value, train, classes):
    """A loss section, checked against the schedule and the class count."""
    loss = _named(key, value, LOSSES)
    if loss["name"] == "truncated_lq" and loss["start_epoch"] > train["epochs"]:
        _fail(f"{key}.start_epoch", loss["start_epoch"], f"expected an epoch <= train.epochs={train['epochs']}")
    if isinstance(loss.get("matrix"), list) and len(loss["matrix"]) != classes:
        _fail(f"{key}.matrix", f"{len(loss['matrix'])}x{len(loss['matrix'])}",
              f"expected a {classes}x{classes} matrix (the data set has {classes} classes)")
    return loss


def _training(key, value, train):
    training = _named(key, value, TRAININGS)
    if training["name"] == "d2l" and training["init_epoch"] >= train["epochs"]:
        _fail(f"{key}.init_epoch", training["init_epoch"], f"expected an epoch < train.epochs={train['epochs']}")
    return training


def _override_changes(key, value, settings, allowed: str):
    """Check `{noise type or setting name: {...}}`; return setting name -> (where, changes).

    Papers change a hyper-parameter for some settings (SCE: beta 5.0 on CIFAR-10 at
    asymmetric 40%; seed 002: alpha, beta and mixup per noise rate); a noise-type entry
    applies to all its rates, a setting entry wins.
    """
    if not isinstance(value, dict):
        _fail(key, value, f"expected a mapping from a noise type or setting name to {allowed}")
    names = {s.name for s in settings} | {s.type for s in settings}
    for k in value:
        if k not in names:
            _fail(f"{key}.{k}", value[k], f"expected a noise type or setting of the grid: {', '.join(sorted(names))}")
        if not isinstance(value[k], dict):
            _fail(f"{key}.{k}", value[k], f"expected a mapping of {allowed}")
    out = {}
    for s in settings:
        changes = _deep_merge(value.get(s.type, {}), value.get(s.name, {}))
        if changes:
            out[s.name] = (f"{key}.{s.name if s.name in value else s.type}", changes)
    return out


def _overrides(key, value, base, settings, train, classes) -> dict:
    """A single-phase method's `overrides` -> {setting name: resolved loss}."""
    out = {}
    for setting, (where, changes) in _override_changes(key, value, settings, "loss values").items():
        if "name" in changes:
            _fail(where, changes, "expected a mapping of the loss's hyper-parameters (not its name)")
        out[setting] = _loss(where, {**base, **changes}, train, classes)
    return out


def _phase_overrides(key, method: dict, settings, pretrain: dict) -> dict:
    """A two-phase method's per-setting changes -> {setting name: {"pretrain": ..., "finetune": ...}}.

    Each phase section carries its own `overrides` (so a finetune change never touches the
    pretrain stage's params); a phase without a change for a setting keeps its section.
    """
    changed = {}
    for phase in ("pretrain", "finetune"):
        raw = {k: v for k, v in method[phase].items() if k != "overrides"}
        for setting, (where, changes) in _override_changes(
                f"{key}.{phase}.overrides", method[phase].get("overrides", {}), settings, f"{phase} values").items():
            if "name" in changes:
                _fail(where, changes, f"expected a mapping of the {phase} section's values (not its name)")
            merged = _deep_merge(raw, changes)
            changed.setdefault(setting, {})[phase] = (
                _pretrain(where, merged) if phase == "pretrain" else _finetune(where, merged, pretrain))
    return changed


def dataset_options(params: dict, name: str) -> dict:
    """The download settings of data set `name` (params section `datasets.<name>`)."""
    _one_of(*DATASETS)("dataset", name)
    datasets = _require(params, "datasets")
    if name not in datasets:
        raise ConfigError(f"datasets.{name}: missing; every data set used needs an entry in `datasets`")
    return _section(f"datasets.{name}", {**DATASET_DEFAULTS, **(datasets[name] or {})},
                    {**DATASET_OPTIONS[name], "max_train": _max_n, "max_test": _max_n})


def resolve_group(params: dict, name: str) -> Group:
    """Check and resolve the settings of run group `name` ("main" or a key of `groups`)."""
    if name == MAIN:
        data = _section("data", _require(params, "data"), {"name": _one_of(*DATASETS)})
        noise = _section("noise", _require(params, "noise"), NOISE_MAIN)
        setting = NoiseSetting(noise["type"], float(noise["rate"]))
        _check_noise_for_dataset("noise.type", setting, data["name"])
        train = _train("train", _require(params, "train"))
        classes = num_classes(params, data["name"])
        loss = _loss("loss", _require(params, "loss"), train, classes)
        group = Group(
            name=MAIN, table=MAIN, paper=MAIN, method=loss["name"], dataset=data["name"],
            settings=(setting,), seeds=tuple(noise["seeds"]), draw=noise["draw"],
            val_fraction=noise["val_fraction"],
            model=_named("model", _require(params, "model"), MODELS),
            loss=loss, train=train, training=_training("training", _require(params, "training"), train),
            overrides={},
        )
    else:
        kind = next((k for k in GROUP_LISTS if name in (params.get(k) or {})), None)
        if kind is None:
            _fail("group", name, f"expected main or one of: {', '.join(group_names(params)[1:])}")
        g = _section(f"{kind}.{name}", params[kind][name],
                     {"table": None, "dataset": _one_of(*DATASETS), "method": None})
        if not isinstance(params.get(g["table"]), dict):
            _fail(f"{kind}.{name}.table", g["table"], "expected the name of a table section in params.yaml")
        table, tkey, dkey = params[g["table"]], g["table"], f"{g['table']}.{g['dataset']}"
        noise = _section(f"{tkey}.noise", table.get("noise"), NOISE_TABLE)
        if g["dataset"] not in table:
            _fail(f"{kind}.{name}.dataset", g["dataset"], f"table {tkey!r} has no section {dkey}")
        ds = _section(dkey, table[g["dataset"]], {"model": None, "train": None, "methods": None})
        methods = ds["methods"] if isinstance(ds["methods"], dict) else {}
        if g["method"] not in methods:
            _fail(f"{kind}.{name}.method", g["method"], f"expected one of {dkey}.methods: {', '.join(methods)}")
        mkey, raw = f"{dkey}.methods.{g['method']}", methods[g["method"]]
        two_phase = isinstance(raw, dict) and "pretrain" in raw
        if two_phase != (kind == "two_phase_groups"):
            _fail(f"{kind}.{name}.method", g["method"],
                  "a method with pretrain and finetune sections belongs under two_phase_groups, "
                  "a method with a loss under groups")
        train = _train(f"{dkey}.train", ds["train"])
        classes = num_classes(params, g["dataset"])
        settings = _noise_settings(f"{tkey}.noise.settings", noise["settings"], g["dataset"])
        common = dict(name=name, table=tkey, paper=str(table.get("paper", tkey)), method=g["method"],
                      dataset=g["dataset"], settings=settings, seeds=tuple(noise["seeds"]), draw=noise["draw"],
                      val_fraction=noise["val_fraction"], model=_named(f"{dkey}.model", ds["model"], MODELS),
                      train=train)
        if two_phase:
            method = _section(mkey, raw, {"pretrain": None, "finetune": None})
            for phase in ("pretrain", "finetune"):
                if not isinstance(method[phase], dict):
                    _fail(f"{mkey}.{phase}", method[phase], f"expected a mapping (the {phase} section)")
            pretrain = _pretrain(f"{mkey}.pretrain", {k: v for k, v in method["pretrain"].items() if k != "overrides"})
            finetune = _finetune(f"{mkey}.finetune", {k: v for k, v in method["finetune"].items() if k != "overrides"},
                                 pretrain)
            if pretrain.get("forget_rate") == "noise_rate" and any(st.type == "real" for st in settings):
                _fail(f"{mkey}.pretrain.forget_rate", "noise_rate",
                      "real noisy labels have no known noise rate; expected a number in [0, 1) or gmm")
            group = Group(**common, loss=finetune["loss"], training={"name": "standard"},
                          overrides=_phase_overrides(mkey, method, settings, pretrain),
                          pretrain=pretrain, finetune=finetune)
        else:
            # a method is its loss, optionally per-setting loss overrides and a training method
            method = _section(mkey, {"overrides": {}, "training": {"name": "standard"}, **raw},
                              {"loss": None, "overrides": None, "training": None})
            loss = _loss(f"{mkey}.loss", method["loss"], train, classes)
            group = Group(**common, loss=loss, training=_training(f"{mkey}.training", method["training"], train),
                          overrides=_overrides(f"{mkey}.overrides", method["overrides"], loss, settings, train, classes))
    dataset_options(params, group.dataset)  # the data set must be downloadable too
    if "download" in params:  # ... and downloaded: dvc.yaml makes a download stage per entry
        download = _name_list(DATASETS, 1)("download", params["download"])
        if group.dataset not in download:
            _fail("download", download, f"expected it to list {group.dataset!r}, the data set of group {name!r}")
    return group


GROUP_LISTS = ("groups", "two_phase_groups")


def group_names(params: dict) -> list[str]:
    """Every run group the pipeline trains: main first, then `groups`, then `two_phase_groups`."""
    return [MAIN, *(params.get("groups") or {}), *(params.get("two_phase_groups") or {})]
