"""params.yaml -> typed runs: what the resolver makes of good params, and the rules that need
more than one bad value to show (overrides, real noise). The bad values one by one are in
test_bad_inputs.py."""
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


def test_every_loss_resolves_with_good_values(params):
    from test_losses import CONFIGS

    for name, options in CONFIGS.items():
        params["loss"] = {"name": name, **options}
        assert resolve_group(params, "main").written.loss.model_dump(exclude_unset=True) == {"name": name, **options}


def test_d2l_training_checked(params):
    d2l = {"name": "d2l", "lid_k": 20, "lid_samples": 1280, "lid_batch": 128, "window": 5, "init_epoch": 1}
    params["procedure"] = d2l
    assert resolve_group(params, "main").written.procedure.model_dump() == d2l


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
    # SCE T3 and seed 002 T4 (Clothing1M), CIFAR-10N; the figure sections: SCE Fig. 8 (digits,
    # CIFAR-10), Fig. 9a and the GCE slides (digits)
    assert resolved == 7 * 4 + 2 * 2 + 4 * 3 + 4 * 3 + 4 * 2 + 4 * 2 + 6 + 4 + 4 + 10 * 2 + 4 + 4


def test_two_phase_groups_resolve_with_per_setting_overrides(params):
    g = resolve_group(params, "o2u_table-improved-digits")
    (setting,) = g.settings
    assert g.two_phase and g.written.pretrain.name == "joint" and g.written.finetune.mixup == 1.0
    run = g.runs[0]
    assert run.method.finetune.mixup == 2.0 and run.method.pretrain == g.written.pretrain
    assert run.method.finetune.loss.name == "kl"


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
    assert "forget_rate='realized_noise_rate': real noisy labels have no known noise rate" in _error(params, "g")
