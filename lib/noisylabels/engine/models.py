"""The networks, selected by name: `build_model(cfg, in_shape, num_classes)`.

- digits_mlp: a small MLP for the 8x8 digits, sized so the whole default pipeline runs on
  two CPU cores in minutes while still able to memorise noisy labels (as the papers' CNNs do).
- sce_mnist_cnn: SCE's 4-layer MNIST CNN, conv3x3(32)-BN-ReLU-pool, conv3x3(64)-BN-ReLU-pool,
  FC 128-BN-ReLU, FC C.
- sce_cifar10_cnn: SCE's 8-layer CIFAR-10 CNN, [conv3x3(64)-BN-ReLU]x2-pool, [..128..]x2-pool,
  [..196..]x2-pool, FC 256-BN-ReLU, FC C ('same' padding; 3136 inputs to fc1 at 32x32).
- sce_resnet44: SCE's CIFAR-100 ResNet-44: pre-activation blocks (BN-ReLU-conv3x3, twice),
  widths 16/32/64, 7 blocks per stage, 1x1 projection shortcuts where the shape changes,
  then BN-ReLU-global pool-FC: 1 + 42 + 1 = 44 weighted layers.
- gce_resnet34: the CIFAR ResNet-34 of the GCE paper (as in its public port): a 3x3 stem,
  basic blocks [3, 4, 6, 3] of widths 64/128/256/512 (conv-BN-ReLU, 1x1 conv-BN projection
  shortcuts), global pool, FC.
- preact_resnet32: the PreAct ResNet-32 of joint optimisation, PENCIL and seed 002: a 3x3
  stem of width 32, three stages of 5 pre-activation blocks of widths 32/64/128, then
  BN-ReLU-global pool-FC: 1 + 30 + 1 = 32 weighted layers.
- coteaching_cnn: the 9-layer CNN of Co-teaching, O2U-Net and seed 004:
  [conv3x3(128)-BN-LeakyReLU(0.01)]x3-maxpool-dropout(0.25), the same with 256,
  conv3x3 without padding to 512, 256, 128 (each BN-LeakyReLU), global average pool, FC.
- resnet50: torchvision's ResNet-50 (SCE's and seed 002's Clothing1M network) with a new
  final layer for the data set's classes; `pretrained: true` starts from torchvision's
  ImageNet weights (IMAGENET1K_V1), fetched once into torch's hub cache, with a one-line
  error saying where to put the file when the download fails.
The SCE networks use He-normal initialisation, as the Keras originals. Input shape is (C, H, W).
Each model's name and options are declared once, in spec/models.py; the builder here has its name.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from noisylabels.errors import DataError


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
        # fc1's input size from one pass of a blank image, in eval mode: in training mode it
        # would update the batch-norm running statistics once before training starts
        features.eval()
        with torch.no_grad():
            flat = features(torch.zeros(1, *in_shape)).numel()
        features.train()
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


class _Block(nn.Module):
    """A two-conv residual block; pre-activation (He et al. 2016b) or the original order."""

    def __init__(self, c_in, c_out, stride, preact: bool):
        super().__init__()
        self.preact = preact
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in if preact else c_out), nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:  # 1x1 projection where the shape changes
            proj = [nn.Conv2d(c_in, c_out, 1, stride, bias=False)]
            self.shortcut = nn.Sequential(*proj) if preact else nn.Sequential(*proj, nn.BatchNorm2d(c_out))

    def forward(self, x):
        if self.preact:
            out = torch.relu(self.bn1(x))
            shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(out)
            out = self.conv1(out)
            return self.conv2(torch.relu(self.bn2(out))) + shortcut
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class GlobalAvgPool(nn.Module):
    """The mean of each channel over its positions, B x C x 1 x 1: nn.AdaptiveAvgPool2d(1)'s
    values bit for bit (tests/test_models.py), and also under torch.func.vmap, which has no
    batching rule for the as_strided_ that AdaptiveAvgPool2d's kernel calls and falls back
    to a loop over the stacked runs (stack.StackedModel; a warning every step)."""

    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


class _ResNet(nn.Module):
    """Stem conv3x3, stages of blocks (each stage after the first halves the size), pool, FC."""

    def __init__(self, in_shape, num_classes, stem: int, widths, blocks, preact: bool):
        super().__init__()
        layers, c = [nn.Conv2d(in_shape[0], stem, 3, 1, 1, bias=False)], stem
        if not preact:
            layers += [nn.BatchNorm2d(stem), nn.ReLU()]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(_Block(c, width, 2 if i > 0 and j == 0 else 1, preact))
                c = width
        if preact:  # the last block's output is not yet normalised
            layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers, GlobalAvgPool(), nn.Flatten())
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def sce_resnet44(in_shape, num_classes) -> nn.Module:
    model = _ResNet(in_shape, num_classes, 16, (16, 32, 64), (7, 7, 7), preact=True)
    for m in model.modules():  # He-normal, as the Keras original
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return model


def gce_resnet34(in_shape, num_classes) -> nn.Module:
    return _ResNet(in_shape, num_classes, 64, (64, 128, 256, 512), (3, 4, 6, 3), preact=False)


def preact_resnet32(in_shape, num_classes) -> nn.Module:
    return _ResNet(in_shape, num_classes, 32, (32, 64, 128), (5, 5, 5), preact=True)


def coteaching_cnn(in_shape, num_classes) -> nn.Module:
    def conv(c_in, c_out, padding):
        return [nn.Conv2d(c_in, c_out, 3, padding=padding), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.01)]

    layers, c = [], in_shape[0]
    for width in (128, 256):
        for _ in range(3):
            layers += conv(c, width, 1)
            c = width
        layers += [nn.MaxPool2d(2), nn.Dropout(0.25)]
    for width in (512, 256, 128):
        layers += conv(c, width, 0)
        c = width
    return nn.Sequential(*layers, GlobalAvgPool(), nn.Flatten(), nn.Linear(c, num_classes))


def imagenet_weights() -> dict:
    """torchvision's ImageNet ResNet-50 weights, from torch's hub cache or downloaded into it."""
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V1.url
    try:
        return torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash or file a RuntimeError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        where = f"{torch.hub.get_dir()}/checkpoints/{url.rsplit('/', 1)[1]}"
        raise DataError(f"model.pretrained=True: ImageNet weights not available ({reason}); "
                           f"download {url} to {where}, or set model.pretrained: false") from e


def resnet50(in_shape, num_classes, pretrained: bool) -> nn.Module:
    from torchvision.models import resnet50 as torchvision_resnet50

    model = torchvision_resnet50(weights=None)
    if pretrained:
        model.load_state_dict(imagenet_weights())
    model.avgpool = GlobalAvgPool()  # torchvision's AdaptiveAvgPool2d((1, 1)), which vmap loops over
    model.fc = nn.Linear(model.fc.in_features, num_classes)  # seeded by the run, as every model
    return model


def build_model(spec, in_shape, num_classes: int) -> nn.Module:
    """spec: a spec.models settings model, e.g. DigitsMLP(hidden=256, depth=2)."""
    return globals()[spec.impl](tuple(in_shape), num_classes, **spec.options())
