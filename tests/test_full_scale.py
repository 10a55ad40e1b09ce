"""Every full-scale configuration of params.yaml, smoke-tested on CPU through the stages.

For each (table, data set) section other than digits: the repository's params.yaml, with
`python -m noisylabels.select`'s groups for that section, shrunk only in size (one noise
setting, one seed, two epochs, max_train, small Clothing1M images) and run through the
stage scripts in-process (download from fixture files in the real formats -> noise ->
pretrain -> finetune -> evaluate -> report). The networks, normalisation, augmentation,
optimizer options and loaders are the full-scale ones.
"""
import copy
import functools
import importlib.util
import json

import pytest
import torch
import torchvision
import yaml

from noisylabels import select

from conftest import REPO
from test_data import write_cifar_fixture, write_cifar_n_fixture, write_clothing1m_fixture, write_mnist_fixture

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
CONFIGS = [(t, d) for t, section in PARAMS.items() if isinstance(section, dict) and "noise" in section
           for d in section if isinstance(section[d], dict) and "methods" in section[d] and d != "digits"]


@functools.cache  # each stage script is loaded once per test session
def _stage(name):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda *args: module.main([str(a) for a in args], standalone_mode=False)


def smoke(params: dict, table: str, dataset: str) -> dict:
    """params with the groups of `table`.`dataset`, shrunk in size only."""
    p = copy.deepcopy(params)
    p.update(select.groups_for(p, [f"{table}:{dataset}"]))
    t, section = p[table], p[table][dataset]
    ntype, levels = next(iter(t["noise"]["settings"].items()))
    t["noise"]["settings"], t["noise"]["seeds"] = {ntype: levels[:1]}, [0]
    t["noise"]["val_fraction"] = max(t["noise"]["val_fraction"], 0.1)  # Clothing1M's 1% of 36 is no sample
    cosine = section["train"].get("schedule") == "cosine"  # no milestones with a cosine schedule
    section["train"].update(epochs=2, milestones=[] if cosine else [1], device="cpu")
    aug = section["train"].get("augment", {})
    if dataset == "clothing1m":  # 36 px instead of 256 stored, 32 px instead of 224 cropped
        p["datasets"]["clothing1m"]["image_size"] = 36
        aug["size"] = 32
    for method in section["methods"].values():
        method.pop("overrides", None)  # they name settings no longer in the grid
        loss = method.get("loss", {})
        if loss.get("name") == "truncated_lq":
            loss.update(start_epoch=1, interval=1)
        if method.get("procedure", {}).get("name") == "d2l":
            method["procedure"].update(init_epoch=1, window=2)
        for phase in ("pretrain", "finetune"):
            method.get(phase, {}).pop("overrides", None)
        pre = method.get("pretrain", {})
        pre.update({"joint": dict(epochs=2, start_epoch=1, window=1), "pencil": dict(epochs=2, stage1_epochs=1),
                    "o2u": dict(epochs=1, cyclic_epochs=1, cycle=1)}.get(pre.get("name"), {}))
        if "finetune" in method:
            method["finetune"].update(epochs=2, milestones=[1])
    p["datasets"][dataset]["max_train"] = 36  # the subset option, on top of the tiny fixtures
    p["noise"]["seeds"] = [0]
    p["train"].update(epochs=1, milestones=[], device="cpu")
    return p


def write_fixtures(downloads, dataset):
    if dataset in ("mnist", "fashion-mnist"):
        write_mnist_fixture(downloads, "MNIST" if dataset == "mnist" else "FashionMNIST", n_train=40, n_test=10)
    elif dataset == "clothing1m":
        write_clothing1m_fixture(downloads, n_train=40, n_test=8, size=40)
    else:
        write_cifar_fixture(downloads, hundred="100" in dataset, n=20)
        if dataset.endswith("n"):
            write_cifar_n_fixture(downloads, hundred="100" in dataset)


@pytest.fixture(scope="module")
def imagenet_cache(tmp_path_factory):
    """A stand-in for torchvision's ImageNet ResNet-50 file in torch's hub cache (no network)."""
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), home / "hub/checkpoints/resnet50-0676ba61.pth")
    return home


@pytest.mark.slow
@pytest.mark.parametrize("table,dataset", CONFIGS, ids=[f"{t}:{d}" for t, d in CONFIGS])
def test_full_scale_configuration_runs_one_epoch_on_fixtures(table, dataset, tmp_path, monkeypatch, imagenet_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("TORCH_HOME", str(imagenet_cache))
    monkeypatch.delenv("DVC_ROOT", raising=False)
    p = smoke(PARAMS, table, dataset)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    write_fixtures(tmp_path / "data" / "downloads", dataset)
    for name in p["download"]:
        _stage("download")("--dataset", name)
    _stage("noise")()
    pretrain, finetune = _stage("pretrain"), _stage("finetune")
    for group in ["main", *p["groups"], *p["two_phase_groups"]]:
        pretrain("--group", group, "--workers", 1)
    for group in p["two_phase_groups"]:
        finetune("--group", group, "--workers", 1)
    _stage("evaluate")()
    _stage("report")()
    for group in [*p["groups"], *p["two_phase_groups"]]:
        runs = json.loads((tmp_path / "reports" / "metrics" / f"{group}.json").read_text())["runs"]
        assert len(runs) == 1 and 0 <= runs[0]["test_acc_last"] <= 1
    table_md = (tmp_path / "reports" / "tables" / f"{table}.md").read_text()
    assert dataset in table_md
    meta = json.loads((tmp_path / "data" / "raw" / dataset / "meta.json").read_text())
    assert meta["n_train"] <= 36


def test_every_paper_has_a_full_scale_configuration():
    assert {"sce_table1:mnist", "sce_table1:cifar10", "sce_table1:cifar100", "sce_table2:cifar10",
            "gce_table:cifar10", "gce_table:cifar100", "apl_table:mnist", "apl_table:cifar10",
            "joint_table:cifar10", "o2u_table:cifar4", "sce_table3:clothing1m", "joint_table4:clothing1m",
            "cifarn_table:cifar10n", "sce_params:cifar10"} == {f"{t}:{d}" for t, d in CONFIGS}


def test_select_rewrites_only_the_group_lists(tmp_path):
    """Selecting the digits sections of every table gives back params.yaml byte for byte."""
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    select.main(["--params", str(path), "sce_table1:cifar10", "joint_table4:clothing1m"], standalone_mode=False)
    p = yaml.safe_load(path.read_text())
    assert p["download"] == ["digits", "cifar10", "clothing1m"]
    assert p["groups"]["sce_table1-sl-cifar10"] == {"table": "sce_table1", "dataset": "cifar10", "method": "sl"}
    assert set(p["two_phase_groups"]) == {"joint_table4-tanaka-clothing1m", "joint_table4-improved-clothing1m"}
    tables = [f"{t}:digits" for t in ("sce_table1", "sce_table2", "gce_table", "apl_table", "joint_table", "o2u_table",
                                      "sce_params", "sce_ablation", "gce_clean")]
    select.main(["--params", str(path), *tables], standalone_mode=False)
    assert path.read_text() == (REPO / "params.yaml").read_text()
