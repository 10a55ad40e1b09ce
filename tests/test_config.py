"""Bad params stop with one line naming the key, the value and what is allowed."""
import pytest

from noisylabels.config import ConfigError, resolve_group


def _error(params, group="main"):
    with pytest.raises(ConfigError) as e:
        resolve_group(params, group)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_tiny_params_resolve(params):
    g = resolve_group(params, "main")
    assert (g.method, g.dataset, len(g.runs)) == ("sl", "digits", 2)
    t = resolve_group(params, "sce_table1-ce-digits")
    assert [s.name for s in t.settings] == ["symmetric-0", "symmetric-0.4", "asymmetric-0.3"]
    assert [r.name for r in t.runs][:2] == ["symmetric-0-s0", "symmetric-0-s1"]
    assert (t.table, t.paper, t.loss) == ("sce_table1", "sce", {"name": "ce"})


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
