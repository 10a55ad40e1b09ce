"""params.yaml -> typed runs; bad params stop with one line naming the key, the value and
what is allowed."""
import copy

import pytest

from noisylabels.errors import ConfigError
from noisylabels.resolve import resolve_group


def _error(params, group="main"):
    with pytest.raises(ConfigError) as e:
        resolve_group(params, group)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_tiny_params_resolve(params):
    g = resolve_group(params, "main")
    assert (g.method, g.dataset.name, len(g.runs)) == ("sl", "digits", 2)
    t = resolve_group(params, "sce_table1-ce-digits")
    assert [s.name for s in t.settings] == ["symmetric-0", "symmetric-0.4", "asymmetric-0.3"]
    assert [r.name for r in t.runs][:2] == ["symmetric-0-s0", "symmetric-0-s1"]
    assert (t.table, t.paper, t.written.loss.name) == ("sce_table1", "sce", "ce")
    assert [r.method for r in t.runs] == [t.written] * len(t.runs)


@pytest.mark.parametrize("section,key,value,expect", [
    ("data", "name", "imagenet", "data.name='imagenet'"),
    ("noise", "type", "gaussian", "noise.type='gaussian'"),
    ("noise", "rate", 1.0, "noise.rate=1.0"),
    ("noise", "rate", -0.1, "noise.rate=-0.1"),
    ("noise", "draw", "coin", "noise.draw='coin'"),
    ("noise", "seeds", [], "noise.seeds=[]"),
    ("loss", "name", "focal", "loss.name='focal'"),
    ("loss", "A", 0.0, "loss.A=0.0"),
    ("loss", "alpha", -1, "loss.alpha=-1"),
    ("loss", "alpah", 0.1, "loss.alpah=0.1: unknown key"),
    ("model", "name", "resnet9000", "model.name='resnet9000'"),
    ("train", "milestones", [5], "train.milestones=[5]"),
    ("train", "lr", 0, "train.lr=0"),
    ("train", "device", "tpu", "train.device='tpu'"),
])
def test_bad_main_values(params, section, key, value, expect):
    params[section][key] = value
    assert expect in _error(params)


def test_missing_key(params):
    del params["train"]["epochs"]
    assert _error(params) == "train.epochs: missing"


def test_asymmetric_noise_needs_a_map(params):
    params["data"]["name"] = "cifar4"
    params["datasets"]["cifar4"] = {"classes": ["cat", "deer", "dog", "horse"]}
    params["noise"]["type"] = "asymmetric"
    assert "no asymmetric class map" in _error(params)


def test_dataset_needs_download_settings(params):
    params["data"]["name"] = "mnist"
    assert "datasets.mnist: missing" in _error(params)


def test_cifar4_classes_checked(params):
    params["data"]["name"] = "cifar4"
    params["datasets"]["cifar4"] = {"classes": ["cat", "wolf"]}
    assert "datasets.cifar4.classes[1]='wolf'" in _error(params)


def test_bad_table_values(params):
    params["sce_table1"]["noise"]["settings"]["symmetric"] = [0.2, 1.5]
    assert "sce_table1.noise.settings.symmetric[1]=1.5" in _error(params, "sce_table1-ce-digits")
    params["sce_table1"]["noise"]["settings"]["symmetric"] = [0.2]
    params["sce_table1"]["digits"]["methods"]["sl"]["loss"]["name"] = "slx"
    assert "sce_table1.digits.methods.sl.loss.name='slx'" in _error(params, "sce_table1-sl-digits")


def test_unknown_group_and_method(params):
    assert "group='nope'" in _error(params, "nope")
    params["groups"]["sce_table1-ce-digits"]["method"] = "gce"
    assert "groups.sce_table1-ce-digits.method='gce'" in _error(params, "sce_table1-ce-digits")


@pytest.mark.parametrize("loss,expect", [
    ({"name": "gce", "q": 0}, "loss.q=0: expected a number > 0"),
    ({"name": "gce", "q": 1.5}, "loss.q=1.5"),
    ({"name": "ngce", "q": -0.1}, "loss.q=-0.1"),
    ({"name": "rce", "A": 1.0}, "loss.A=1.0: expected a number < 0"),
    ({"name": "sl", "alpha": 0.1, "beta": -1.0, "A": -4.0}, "loss.beta=-1.0"),
    ({"name": "nce_rce", "alpha": -1, "beta": 1.0, "A": -4.0}, "loss.alpha=-1"),
    ({"name": "bootstrap", "beta": 0.8, "mode": "medium"}, "loss.mode='medium'"),
    ({"name": "lsr", "epsilon": 1.0}, "loss.epsilon=1.0"),
    ({"name": "truncated_lq", "q": 0.7, "k": 0.5, "start_epoch": 3, "interval": 1},
     "loss.start_epoch=3: expected an epoch <= train.epochs=2"),
    ({"name": "forward", "matrix": "oracle", "anchor_percentile": 97.0}, "loss.matrix='oracle'"),
    ({"name": "forward", "matrix": [[0.5, 0.4], [0.0, 1.0]], "anchor_percentile": 97.0},
     "loss.matrix=[[0.5, 0.4], [0.0, 1.0]]: row 0 sums to 0.9"),
    ({"name": "backward", "matrix": [[0.5, 0.5], [0.0, 1.0]], "anchor_percentile": 97.0},
     "loss.matrix='2x2': expected a 10x10 matrix"),
    ({"name": "forward", "matrix": "realized", "anchor_percentile": 0}, "loss.anchor_percentile=0"),
])
def test_bad_loss_hyper_parameters(params, loss, expect):
    params["loss"] = loss
    assert expect in _error(params)


def test_every_loss_resolves_with_good_values(params):
    from test_losses import CONFIGS

    for name, options in CONFIGS.items():
        params["loss"] = {"name": name, **options}
        assert resolve_group(params, "main").written.loss.model_dump() == {"name": name, **options}


def test_d2l_training_checked(params):
    d2l = {"name": "d2l", "lid_k": 20, "lid_samples": 1280, "lid_batch": 128, "window": 5, "init_epoch": 1}
    params["procedure"] = d2l
    assert resolve_group(params, "main").written.procedure.model_dump() == d2l
    params["procedure"] = {**d2l, "init_epoch": 2}
    assert "procedure.init_epoch=2: expected an epoch < train.epochs=2" in _error(params)
    params["procedure"] = {"name": "coteaching"}
    assert "procedure.name='coteaching'" in _error(params)


def test_per_setting_loss_overrides(params):
    sl = params["sce_table1"]["digits"]["methods"]["sl"]
    sl["overrides"] = {"asymmetric": {"beta": 5.0}, "symmetric-0.4": {"alpha": 0.5}}
    g = resolve_group(params, "sce_table1-sl-digits")
    beta = {r.setting.name: (r.method.loss.alpha, r.method.loss.beta) for r in g.runs}
    assert beta == {"symmetric-0": (0.01, 1.0), "symmetric-0.4": (0.5, 1.0), "asymmetric-0.3": (0.01, 5.0)}
    sl["overrides"] = {"symmetric-0.6": {"beta": 5.0}}
    assert "methods.sl.overrides.symmetric-0.6" in _error(params, "sce_table1-sl-digits")
    sl["overrides"] = {"asymmetric": {"beta": -5.0}}
    assert "sce_table1.digits.methods.sl.overrides.asymmetric.beta=-5.0" in _error(params, "sce_table1-sl-digits")
    sl["overrides"] = {"asymmetric": {"name": "ce"}}
    assert "not a new name" in _error(params, "sce_table1-sl-digits")


def test_every_table_section_of_params_yaml_resolves():
    """Each (table, data set, method) written in params.yaml, the full-scale ones included."""
    from conftest import REPO
    from noisylabels.resolve import load_params
    from noisylabels.spec.datasets import DATASETS

    params = load_params(REPO / "params.yaml")
    params["download"] = list(DATASETS)  # as `python -m noisylabels.select` would list them
    resolved = 0
    for table, section in list(params.items()):
        if not (isinstance(section, dict) and "noise" in section):
            continue
        for dataset in (d for d in section if d in DATASETS):
            for method, spec in section[dataset]["methods"].items():
                kind = "two_phase_groups" if "pretrain" in spec else "groups"
                params[kind] = {"g": {"table": table, "dataset": dataset, "method": method}}
                resolve_group(params, "g")
                del params[kind]
                resolved += 1
    # SCE T1, T2, GCE, APL, seed 002 (digits, CIFAR-10), seed 004 (digits, CIFAR-4) sections,
    # SCE T3 and seed 002 T4 (Clothing1M), CIFAR-10N
    assert resolved == 7 * 4 + 2 * 2 + 4 * 3 + 4 * 3 + 4 * 2 + 4 * 2 + 6 + 4 + 4


O2U_METHOD = ("o2u_table", "digits", "methods", "o2u")


def _two_phase(params, phase, **changes):
    section = params
    for k in O2U_METHOD:
        section = section[k]
    section[phase].update(changes)
    return _error(params, "o2u_table-o2u-digits")


@pytest.mark.parametrize("phase,changes,expect", [
    ("pretrain", {"forget_rate": 1.0}, "methods.o2u.pretrain.forget_rate=1.0: expected a number in [0, 1)"),
    ("pretrain", {"forget_rate": -0.1}, "forget_rate=-0.1"),
    ("pretrain", {"forget_rate": "half"}, "noise_rate (the setting's rate) or gmm"),
    ("pretrain", {"cycle": 0}, "methods.o2u.pretrain.cycle=0: expected a number >= 1"),
    ("pretrain", {"cycle": 3}, "pretrain.cycle=3: expected at most"),
    ("pretrain", {"name": "coteaching"}, "pretrain.name='coteaching'"),
    ("finetune", {"loss": {"name": "kl"}}, "finetune.loss.name='kl'"),  # o2u keeps hard labels
    ("finetune", {"init": "imagenet"}, "finetune.init='imagenet'"),
    ("finetune", {"milestones": [5]}, "finetune.milestones=[5]: expected increasing epochs below"),
    ("finetune", {"overrides": {"symmetric-0.9": {"lr": 0.1}}}, "finetune.overrides.symmetric-0.9"),
])
def test_bad_two_phase_values(params, phase, changes, expect):
    assert expect in _two_phase(params, phase, **changes)


def test_joint_start_epoch_after_the_last_epoch(params):
    improved = params["o2u_table"]["digits"]["methods"]["improved"]
    improved["pretrain"]["start_epoch"] = 3
    assert "methods.improved.pretrain.start_epoch=3: expected an epoch <= " in _error(params, "o2u_table-improved-digits")


def test_two_phase_groups_resolve_with_per_setting_overrides(params):
    g = resolve_group(params, "o2u_table-improved-digits")
    (setting,) = g.settings
    assert g.two_phase and g.written.pretrain.name == "joint" and g.written.finetune.mixup == 1.0
    run = g.runs[0]
    assert run.method.finetune.mixup == 2.0 and run.method.pretrain == g.written.pretrain
    assert run.method.finetune.loss.name == "kl"


def test_a_method_must_be_listed_with_its_kind(params):
    params["groups"]["wrong"] = {"table": "o2u_table", "dataset": "digits", "method": "o2u"}
    assert "belongs under two_phase_groups" in _error(params, "wrong")


def _real_table(params, dataset, label_sets, method=None):
    params = copy.deepcopy(params)
    params["sce_table1"]["noise"]["settings"] = {"real": label_sets}
    params["sce_table1"][dataset] = params["sce_table1"].pop("digits")
    params["datasets"][dataset] = {"image_size": 32} if dataset == "clothing1m" else {}
    params["download"] = ["digits", dataset]
    params["groups"] = {"g": {"table": "sce_table1", "dataset": dataset, "method": method or "ce"}}
    return params


def test_real_noise_names_label_sets_of_the_data_set(params):
    g = resolve_group(_real_table(params, "cifar10n", ["aggregate", "worst"]), "g")
    assert [s.name for s in g.settings] == ["real-aggregate", "real-worst"]
    assert _error(_real_table(params, "cifar10n", ["worse"]), "g") == (
        "sce_table1.noise.settings.real[0]='worse': expected a label set of 'cifar10n': "
        "aggregate, random1, random2, random3, worst")
    assert "has no real noisy labels" in _error(_real_table(params, "cifar10", ["worst"]), "g")


def test_clothing1m_takes_only_its_own_labels(params):
    assert resolve_group(_real_table(params, "clothing1m", ["noisy"]), "g").settings[0].name == "real-noisy"
    params = _real_table(params, "clothing1m", ["noisy"])
    params["sce_table1"]["noise"]["settings"] = {"symmetric": [0.2]}
    assert "expected real: [noisy]" in _error(params, "g")


def test_o2u_cannot_forget_an_unknown_noise_rate(params):
    params["o2u_table"]["noise"]["settings"] = {"real": ["worst"]}
    params["o2u_table"]["cifar10n"] = params["o2u_table"].pop("digits")
    params["datasets"]["cifar10n"] = {}
    params["two_phase_groups"] = {"g": {"table": "o2u_table", "dataset": "cifar10n", "method": "o2u"}}
    assert "forget_rate='noise_rate': real noisy labels have no known noise rate" in _error(params, "g")


def test_train_options_are_checked(params):
    params["train"]["augment"] = {"name": "crop", "size": 32, "padding": 4}
    assert _error(params) == "train.augment.flip: missing"
    params["train"]["augment"] = {"name": "zoom"}
    assert _error(params) == "train.augment.name='zoom': expected one of none, shift, crop, center_crop"
    params["train"]["augment"] = {"name": "shift", "shift": 0.2, "rotation": 20, "flip": "yes"}
    assert _error(params) == "train.augment.flip='yes': expected true or false"
    params["train"]["augment"] = {"name": "none"}
    params["train"]["normalize"] = "zca"
    assert _error(params) == "train.normalize='zca': expected one of channel, pixel_mean or imagenet"
    params["train"]["normalize"] = "channel"
    params["train"]["l2"] = {"fc1": -1}
    assert _error(params) == "train.l2.fc1=-1: expected a number >= 0"
    params["train"]["l2"] = {}
    params["train"]["lr_decay"] = -1e-4
    assert _error(params) == "train.lr_decay=-0.0001: expected a number >= 0"
    params["train"]["lr_decay"] = 1e-4
    assert resolve_group(params, "main").train.augment.name == "none"
    params["datasets"]["digits"]["max_train"] = 1
    assert _error(params) == "datasets.digits.max_train=1: expected a number >= 2"


def test_download_lists_every_data_set_the_groups_use(params):
    params["download"] = ["mnist"]
    assert _error(params) == ("download=['mnist']: expected it to list 'digits', the data set of group 'main'")
    params["download"] = ["svhn"]
    assert _error(params).startswith("download[0]='svhn': expected one of digits, mnist")


def test_a_key_written_twice_in_params_yaml_is_refused(tmp_path):
    from noisylabels.resolve import load_params

    path = tmp_path / "params.yaml"
    path.write_text("groups:\n  a: {table: t, dataset: digits, method: ce}\n  a: {table: t, dataset: digits, method: sl}\n")
    with pytest.raises(ConfigError, match=r"key 'a' appears twice in one mapping \(line 3\)"):
        load_params(path)


def test_a_group_listed_in_both_lists_is_refused(params):
    params["two_phase_groups"]["sce_table1-ce-digits"] = params["groups"]["sce_table1-ce-digits"]
    assert _error(params, "sce_table1-ce-digits") == (
        "group='sce_table1-ce-digits': listed twice (main, groups, two_phase_groups); expected one entry")


def test_epochs_are_bounded(params):
    params["train"]["epochs"] = 1_000_000_000  # each epoch's predictions are kept in memory
    assert _error(params) == "train.epochs=1000000000: expected a number <= 10000"
