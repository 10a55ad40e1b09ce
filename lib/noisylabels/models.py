"""The networks, selected by name: `build_model(cfg, in_shape, num_classes)`.

- digits_mlp: a small MLP for the 8x8 digits, sized so the whole default pipeline runs on
  two CPU cores in minutes while still able to memorise noisy labels (as the papers' CNNs do).
- sce_mnist_cnn: SCE's 4-layer MNIST CNN, conv3x3(32)-BN-ReLU-pool, conv3x3(64)-BN-ReLU-pool,
  FC 128-BN-ReLU, FC C.
- sce_cifar10_cnn: SCE's 8-layer CIFAR-10 CNN, [conv3x3(64)-BN-ReLU]x2-pool, [..128..]x2-pool,
  [..196..]x2-pool, FC 256-BN-ReLU, FC C ('same' padding; 3136 inputs to fc1 at 32x32).
The CNNs use He-normal initialisation, as the Keras originals. Input shape is (C, H, W).
The names and options are the ones `config.MODELS` validates.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def digits_mlp(in_shape, num_classes, hidden: int, depth: int) -> nn.Module:
    layers, width = [nn.Flatten()], math.prod(in_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def _conv_bn_relu(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


class _ConvNet(nn.Module):
    """Conv feature stack, then FC-BN-ReLU (fc1), then the classifier (fc2)."""

    def __init__(self, features: nn.Sequential, in_shape, hidden: int, num_classes: int):
        super().__init__()
        self.features = features
        with torch.no_grad():
            flat = features(torch.zeros(1, *in_shape)).numel()
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.fc2 = nn.Linear(hidden, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc2(self.fc1(self.features(x)))


def sce_mnist_cnn(in_shape, num_classes) -> nn.Module:
    features = nn.Sequential(
        *_conv_bn_relu(in_shape[0], 32), nn.MaxPool2d(2),
        *_conv_bn_relu(32, 64), nn.MaxPool2d(2),
    )
    return _ConvNet(features, in_shape, 128, num_classes)


def sce_cifar10_cnn(in_shape, num_classes) -> nn.Module:
    layers, c_in = [], in_shape[0]
    for width in (64, 128, 196):
        layers += [*_conv_bn_relu(c_in, width), *_conv_bn_relu(width, width), nn.MaxPool2d(2)]
        c_in = width
    return _ConvNet(nn.Sequential(*layers), in_shape, 256, num_classes)


MODELS = {
    "digits_mlp": digits_mlp,
    "sce_mnist_cnn": sce_mnist_cnn,
    "sce_cifar10_cnn": sce_cifar10_cnn,
}


def build_model(cfg: dict, in_shape, num_classes: int) -> nn.Module:
    """cfg: a validated model section, e.g. {"name": "digits_mlp", "hidden": 256, "depth": 2}."""
    options = {k: v for k, v in cfg.items() if k != "name"}
    return MODELS[cfg["name"]](tuple(in_shape), num_classes, **options)
