"""Every data set's settings (params `datasets.<name>`: what its download stage needs) and
what the resolver must know before it is downloaded: its class count and real label sets.
The loaders are in data/sources.py."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional

from pydantic import Field

from noisylabels.data.sources import CIFAR10_CLASSES, REAL_LABEL_SETS
from noisylabels.spec.base import Distinct, Spec, registry

SubsetSize = Optional[Annotated[int, Field(ge=2)]]


class Dataset(Spec):
    name: ClassVar[str]
    class_count: ClassVar[int] = 10
    # a seeded subset of the training / test samples (to smoke-test a full-scale setting on a
    # CPU), or null for all of them
    max_train: SubsetSize = None
    max_test: SubsetSize = None

    @property
    def num_classes(self) -> int:
        return self.class_count

    @property
    def real_label_sets(self) -> tuple[str, ...]:
        """The data set's own noisy label sets (CIFAR-N, Clothing1M), for `real` noise."""
        return tuple(REAL_LABEL_SETS.get(self.name, ()))


class Digits(Dataset):
    name = "digits"
    test_fraction: Annotated[float, Field(gt=0, le=0.5)]
    split_seed: Annotated[int, Field(ge=0)]


class MNIST(Dataset):
    name = "mnist"


class FashionMNIST(Dataset):
    name = "fashion-mnist"


class CIFAR10(Dataset):
    name = "cifar10"


class CIFAR100(Dataset):
    name = "cifar100"
    class_count = 100


class CIFAR4(Dataset):
    """CIFAR-4 of seed 004: CIFAR-10 restricted to these classes, relabelled 0..K-1 in order."""

    name = "cifar4"
    classes: Annotated[list[Literal[CIFAR10_CLASSES]], Field(min_length=2), Distinct]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class CIFAR10N(Dataset):
    name = "cifar10n"


class CIFAR100N(Dataset):
    name = "cifar100n"
    class_count = 100


class Clothing1M(Dataset):
    name = "clothing1m"
    class_count = 14
    image_size: Annotated[int, Field(ge=8)]  # stored side (the papers: 256)


DATASETS = registry(Digits, MNIST, FashionMNIST, CIFAR10, CIFAR100, CIFAR4, CIFAR10N, CIFAR100N, Clothing1M)
