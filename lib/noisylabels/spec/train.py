"""The `train` section: optimizer, step schedule, device, normalisation and augmentation.

The optimizer and schedule are implemented in noisylabels/optim.py, normalisation and each
augmentation (`impl`: a class of noisylabels/augment.py) in augment.py. Optional keys
default to the plain setting of the default run.
"""
from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from noisylabels.spec.base import Epochs, NonNegative, Positive, Spec, invalid, named, registry

Size = Annotated[int, Field(ge=1)]


class Augment(Spec):
    impl: ClassVar[str]  # the class of augment.py
    crops: ClassVar[bool] = False  # a size x size window: the model sees that size


class NoAugment(Augment):
    name: Literal["none"] = "none"
    impl = "NoAugment"


class Shift(Augment):  # Keras (SCE)
    name: Literal["shift"] = "shift"
    impl = "Shift"
    shift: Annotated[float, Field(ge=0, lt=1)]
    rotation: Annotated[float, Field(ge=0, le=180)]
    flip: bool


class Crop(Augment):  # torchvision
    name: Literal["crop"] = "crop"
    impl = "Crop"
    crops = True
    size: Size
    padding: Annotated[int, Field(ge=0)]
    flip: bool


class CenterCrop(Augment):  # SCE's Clothing1M
    name: Literal["center_crop"] = "center_crop"
    impl = "CenterCrop"
    crops = True
    size: Size


AUGMENTS = registry(NoAugment, Shift, Crop, CenterCrop)


class Schedule(Spec):
    """What the learning-rate schedule reads. `step`: `lr` times `gamma` after each milestone;
    `cosine`: torch's CosineAnnealingLR over `epochs`, from `lr` down towards `lr_min`
    (APL's code), with no milestones."""

    epochs: Epochs
    lr: Positive
    milestones: list[Annotated[int, Field(ge=1)]]
    gamma: Annotated[float, Field(gt=0, le=1)]
    schedule: Literal["step", "cosine"] = "step"
    lr_min: NonNegative = 0.0

    @model_validator(mode="after")
    def _milestones_within_epochs(self):
        m = self.milestones
        if m != sorted(set(m)) or any(x >= self.epochs for x in m):
            raise invalid("milestones", f"expected increasing epochs below epochs={self.epochs}")
        if self.schedule == "cosine" and m:
            raise invalid("milestones", "expected [] with schedule: cosine")
        if self.lr_min >= self.lr:
            raise invalid("lr_min", f"expected a number below lr={self.lr}")
        return self


class Train(Schedule):
    batch_size: Annotated[int, Field(ge=2)]  # >= 2: batch norm needs two samples
    momentum: Annotated[float, Field(ge=0, lt=1)]
    nesterov: bool = False  # torch.optim.SGD's nesterov (APL's MNIST code)
    weight_decay: NonNegative  # L2 decay in the gradient (torch's weight_decay), every parameter
    # clip the gradient's total norm to this before each step (clip_grad_norm_; APL's code: 5.0)
    grad_clip: Optional[Positive] = None
    # auto: cuda when there is a GPU; cuda: every visible GPU (workers spread over them); cuda:N: GPU N
    device: str
    # Keras SGD's `decay` (SCE's code): the lr of iteration i is the epoch's lr / (1 + lr_decay * i)
    lr_decay: NonNegative = 0.0
    # Keras kernel_regularizer l2(c) per layer: {parameter-name prefix or all: c}, c * sum(w^2) in the loss
    l2: dict[str, NonNegative] = {}
    normalize: Literal["channel", "pixel_mean", "imagenet"] = "channel"
    augment: named(AUGMENTS) = NoAugment()
    # runs of a group trained as one stacked model (stack.py): auto (what stacks), off, or at
    # most this many runs per stack (memory). A stacked run equals its run alone up to float
    # rounding, which training amplifies to seed-to-seed differences over many epochs.
    stack: Union[Literal["auto", "off"], Annotated[int, Field(ge=1)]] = "auto"
    # bf16: forward passes under torch.autocast in bfloat16 (a GPU's tensor cores), weights,
    # gradients and optimizer state in float32. Changes results, unlike `stack` and `device`.
    precision: Literal["fp32", "bf16"] = "fp32"
    # the model's forward under torch.compile in this mode (reduce-overhead: with CUDA graphs),
    # or eager (none). Fused kernels round differently: a setting of the run, as precision is.
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none"

    @field_validator("device")
    @classmethod
    def _device(cls, value):
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("expected auto, cpu, cuda or cuda:<GPU index>")
        return value

    @field_validator("stack", mode="before")
    @classmethod
    def _stack(cls, value):
        if value is False:  # YAML 1.1 (PyYAML, `dvc exp run -S train.stack=off`) reads off as false
            return "off"
        if value in ("auto", "off") or (type(value) is int and value >= 1):
            return value
        raise ValueError("expected auto, off or a number of runs >= 1")

    @field_validator("l2")
    @classmethod
    def _layer_names(cls, value):
        if any(not k for k in value):
            raise ValueError("expected a mapping from a layer name (a parameter-name prefix, or all) to a number >= 0")
        return value
