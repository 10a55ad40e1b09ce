"""The networks: output shapes, the SCE CNNs' published layer sizes, registry vs schema."""
import inspect
import urllib.error

import pytest
import torch
import torchvision

from noisylabels.engine import models
from noisylabels.errors import DataError
from noisylabels.spec.models import MODELS

from conftest import typed


def test_every_registered_model_has_a_builder_with_its_options():
    for name, spec in MODELS.items():
        fields = [f for f in spec.model_fields if f != "name"]
        assert list(inspect.signature(getattr(models, name)).parameters)[2:] == fields, name


def test_output_shapes():
    cases = [({"name": "digits_mlp", "hidden": 32, "depth": 2}, (1, 8, 8)),
             ({"name": "sce_mnist_cnn"}, (1, 28, 28)),
             ({"name": "sce_cifar10_cnn"}, (3, 32, 32)),
             ({"name": "sce_resnet44"}, (3, 32, 32)),
             ({"name": "gce_resnet34"}, (3, 32, 32))]
    for cfg, shape in cases:
        m = models.build_model(typed(cfg), shape, 10).eval()
        assert m(torch.zeros(4, *shape)).shape == (4, 10)


@pytest.mark.parametrize("name,shape", [("sce_mnist_cnn", (1, 28, 28)), ("sce_cifar10_cnn", (3, 32, 32)),
                                        ("coteaching_cnn", (3, 32, 32)), ("sce_resnet44", (3, 32, 32))])
def test_a_new_model_is_in_training_mode_with_untouched_batch_norm_statistics(name, shape):
    model = models.build_model(typed({"name": name}), shape, 10)
    assert model.training
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            assert m.num_batches_tracked == 0 and (m.running_mean == 0).all() and (m.running_var == 1).all()


def test_sce_cifar10_cnn_has_3136_inputs_to_fc1():
    m = models.build_model(typed({"name": "sce_cifar10_cnn"}), (3, 32, 32), 10)
    assert m.fc1[1].in_features == 3136
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 196, 196]


def test_sce_mnist_cnn_layers():
    m = models.build_model(typed({"name": "sce_mnist_cnn"}), (1, 28, 28), 10)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64]
    assert m.fc1[1].out_features == 128


def _weighted_layers(m):
    """conv3x3 and dense layers; 1x1 projection shortcuts are not counted in a ResNet's depth."""
    return [x for x in m.modules()
            if isinstance(x, torch.nn.Linear) or (isinstance(x, torch.nn.Conv2d) and x.kernel_size == (3, 3))]


def test_sce_resnet44_is_a_44_layer_preactivation_resnet():
    m = models.build_model(typed({"name": "sce_resnet44"}), (3, 32, 32), 100)
    layers = _weighted_layers(m)
    assert len(layers) == 44
    assert sorted({c.out_channels for c in layers[:-1]}) == [16, 32, 64] and layers[-1].out_features == 100
    projections = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d) and x.kernel_size == (1, 1)]
    assert [(c.in_channels, c.out_channels) for c in projections] == [(16, 32), (32, 64)]
    assert sum(p.numel() for p in m.parameters()) == 666_996  # pins the architecture; He et al. give 0.66M for ResNet-44


def test_gce_resnet34_matches_the_cifar_resnet34():
    m = models.build_model(typed({"name": "gce_resnet34"}), (3, 32, 32), 10)
    assert len(_weighted_layers(m)) == 34
    assert sum(p.numel() for p in m.parameters()) == 21_282_122  # the CIFAR ResNet-34's published count


def test_preact_resnet32_has_the_joint_optimisation_widths():
    m = models.build_model(typed({"name": "preact_resnet32"}), (3, 32, 32), 10)
    layers = _weighted_layers(m)
    assert len(layers) == 32  # stem + 3 stages x 5 blocks x 2 convs + FC
    assert [c.out_channels for c in layers[:-1]][:2] == [32, 32]  # stem and first stage 32 wide
    assert sorted({c.out_channels for c in layers[:-1]}) == [32, 64, 128]
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_coteaching_cnn_is_the_nine_layer_cnn():
    m = models.build_model(typed({"name": "coteaching_cnn"}), (3, 32, 32), 4)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128] * 3 + [256] * 3 + [512, 256, 128]
    assert [c.padding for c in convs[-3:]] == [(0, 0)] * 3  # 8 -> 6 -> 4 -> 2 before the global pool
    assert [x.negative_slope for x in m.modules() if isinstance(x, torch.nn.LeakyReLU)] == [0.01] * 9
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_global_average_pooling_is_adaptive_average_pooling_bit_for_bit(memory_format):
    """models.GlobalAvgPool, the ResNets' and the 9-layer CNN's pooling (for vmap), against
    nn.AdaptiveAvgPool2d(1): equal outputs and input gradients, in both layouts."""
    torch.manual_seed(0)
    x = torch.randn(16, 64, 7, 7).contiguous(memory_format=memory_format).requires_grad_()
    g = torch.randn(16, 64, 1, 1)
    ours, = torch.autograd.grad(out := models.GlobalAvgPool()(x), x, g)
    theirs, = torch.autograd.grad(expected := torch.nn.AdaptiveAvgPool2d(1)(x), x, g)
    assert torch.equal(out, expected) and torch.equal(ours, theirs)


def test_resnet50_has_torchvisions_published_size():
    m = models.build_model(typed({"name": "resnet50", "pretrained": False}), (3, 224, 224), 1000)
    assert sum(p.numel() for p in m.parameters()) == 25_557_032  # torchvision's ResNet-50 (25.6M)
    assert models.build_model(typed({"name": "resnet50", "pretrained": False}), (3, 64, 64), 14)(
        torch.zeros(2, 3, 64, 64)).shape == (2, 14)


def test_resnet50_loads_imagenet_weights_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    with pytest.raises(DataError, match=r"^model.pretrained=True: ImageNet weights not available \(.*offline.*\); "
                                         r"download https://download.pytorch.org/models/resnet50-0676ba61.pth to "):
        models.build_model(typed({"name": "resnet50", "pretrained": True}), (3, 64, 64), 14)
    torch.manual_seed(1)
    imagenet = torchvision.models.resnet50(weights=None).state_dict()  # stands in for the published file
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(imagenet, tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
    m = models.build_model(typed({"name": "resnet50", "pretrained": True}), (3, 64, 64), 14)
    assert torch.equal(m.conv1.weight, imagenet["conv1.weight"])
    assert torch.equal(m.layer4[2].conv3.weight, imagenet["layer4.2.conv3.weight"])
    assert m.fc.out_features == 14


def _offline(*args, **kwargs):
    raise urllib.error.URLError("offline")
