"""Every network's settings: `model.name` picks one (built by the function of that name in
noisylabels/models.py, which has each architecture's description)."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from noisylabels.spec.base import Spec, named, registry


class Model(Spec):
    # the network has dropout layers: its runs do not stack (engine/stack.py)
    dropout: ClassVar[bool] = False

    @property
    def impl(self) -> str:  # the builder in models.py has the model's name
        return self.name


class DigitsMLP(Model):
    name: Literal["digits_mlp"] = "digits_mlp"
    hidden: Annotated[int, Field(ge=1)]
    depth: Annotated[int, Field(ge=1)]


class SCEMnistCNN(Model):
    name: Literal["sce_mnist_cnn"] = "sce_mnist_cnn"


class SCECifar10CNN(Model):
    name: Literal["sce_cifar10_cnn"] = "sce_cifar10_cnn"


class SCEResNet44(Model):
    name: Literal["sce_resnet44"] = "sce_resnet44"


class GCEResNet34(Model):
    name: Literal["gce_resnet34"] = "gce_resnet34"


class PreActResNet32(Model):
    name: Literal["preact_resnet32"] = "preact_resnet32"


class CoteachingCNN(Model):
    name: Literal["coteaching_cnn"] = "coteaching_cnn"
    dropout: ClassVar[bool] = True


class ResNet50(Model):
    """torchvision's; ImageNet weights (Clothing1M) or none."""

    name: Literal["resnet50"] = "resnet50"
    pretrained: bool


MODELS = registry(DigitsMLP, SCEMnistCNN, SCECifar10CNN, SCEResNet44, GCEResNet34, PreActResNet32, CoteachingCNN,
                  ResNet50)
ModelSpec = named(MODELS)
