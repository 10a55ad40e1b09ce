"""How a method trains. A *single-phase* method is a loss (spec/losses.py) and a training
procedure (`procedure`: standard, or D2L; noisylabels/methods.py); a *two-phase* method is a
phase 1 (`pretrain`: joint optimisation, PENCIL or O2U-Net; noisylabels/two_phase.py, `impl`
names the class) and a phase 2 (`finetune`) on phase 1's labels or kept samples.

Per-setting `overrides` (a mapping from a noise type or a setting name such as
`asymmetric-0.4` to changed values) are applied by the resolver, which validates the merged
section again: the papers change hyper-parameters per setting (SCE: beta 5.0 on CIFAR-10 at
asymmetric 40%; seed 002: alpha, beta and mixup per noise rate).
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from noisylabels.spec.base import Epochs, Positive, Spec, invalid, named, registry
from noisylabels.spec.losses import LOSSES
from noisylabels.spec.train import Schedule

Weight = Annotated[float, Field(ge=0)]


# --- training procedures of a single-phase method (`procedure`) -----------------------------------------


class Standard(Spec):
    """Minimise the loss."""

    name: Literal["standard"] = "standard"


class D2L(Spec):
    """Ma et al. 2018: train with the loss until the LID of the penultimate features turns up,
    then bootstrap (methods.D2L)."""

    name: Literal["d2l"] = "d2l"
    lid_k: Annotated[int, Field(ge=1)]        # neighbours in the LID estimate (paper: 20)
    lid_samples: Annotated[int, Field(ge=2)]  # random training samples per epoch (1280)
    lid_batch: Annotated[int, Field(ge=2)]    # LID is averaged over batches of this size (128)
    window: Annotated[int, Field(ge=2)]       # epochs in the turning-point window (5)
    init_epoch: Annotated[int, Field(ge=1)]   # no turning point before this epoch


PROCEDURES = registry(Standard, D2L)
Overrides = dict[str, dict]  # noise type or setting name -> changed values


class SinglePhase(Spec):
    loss: named(LOSSES)
    procedure: named(PROCEDURES) = Standard()
    overrides: Overrides = {}


# --- two-phase methods ----------------------------------------------------------------------


class Phase1(Spec):
    impl: ClassVar[str]  # the class of two_phase.py
    epochs: Epochs
    lr: Positive  # constant

    @property
    def total_epochs(self) -> int:
        return self.epochs


class Joint(Phase1):
    name: Literal["joint"] = "joint"
    impl = "JointOptimization"
    alpha: Weight
    beta: Weight
    labels: Literal["soft", "hard"]
    start_epoch: Epochs
    window: Epochs

    @model_validator(mode="after")
    def _start_within_epochs(self):
        if self.start_epoch > self.epochs:
            raise invalid("start_epoch", f"expected an epoch <= epochs={self.epochs}")
        return self


class Pencil(Phase1):
    name: Literal["pencil"] = "pencil"
    impl = "Pencil"
    alpha: Weight
    beta: Weight
    label_lr: Positive
    init_scale: Positive
    stage1_epochs: Epochs

    @model_validator(mode="after")
    def _stage1_within_epochs(self):
        if self.stage1_epochs >= self.epochs:
            raise invalid("stage1_epochs", f"expected an epoch < epochs={self.epochs}")
        return self


class O2U(Phase1):
    """forget_rate: the share of samples to remove: a number, the run's share of wrong labels
    (`realized_noise_rate`: the known-rate assumption), or `gmm` (no known rate: a
    two-component Gaussian mixture)."""

    name: Literal["o2u"] = "o2u"
    impl = "O2U"
    cyclic_epochs: Epochs
    cycle: Epochs
    r1: Positive
    r2: Positive
    cyclic_batch_size: Annotated[int, Field(ge=2)]
    forget_rate: Union[Literal["realized_noise_rate", "gmm"], float]

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.cyclic_epochs

    @field_validator("forget_rate", mode="before")
    @classmethod
    def _share_or_rule(cls, value):
        if value in ("realized_noise_rate", "gmm") or (type(value) in (int, float) and 0 <= value < 1):
            return value
        raise ValueError("expected a number in [0, 1), realized_noise_rate (the run's share of wrong labels) or gmm "
                         "(no known rate)")

    @model_validator(mode="after")
    def _cycle_within_cyclic_epochs(self):
        if self.cycle > self.cyclic_epochs:
            raise invalid("cycle", f"expected at most cyclic_epochs={self.cyclic_epochs} epochs")
        return self


PRETRAINS = registry(Joint, Pencil, O2U)


class KL(Spec):
    """KL(s || p) to phase 1's corrected labels s (Tanaka, seed 002)."""

    name: Literal["kl"] = "kl"
    impl: ClassVar[str] = "kl"  # the function of two_phase.py


class ReverseKL(Spec):
    """KL(p || s) (PENCIL)."""

    name: Literal["reverse_kl"] = "reverse_kl"
    impl: ClassVar[str] = "reverse_kl"


SOFT_LOSSES = registry(KL, ReverseKL)
# on kept samples: a loss that needs no transition matrix and no weight schedule
HARD_FINETUNE_LOSSES = {k: v for k, v in LOSSES.items()
                        if k not in ("forward", "backward", "forward_sl", "truncated_lq")}


class Finetune(Schedule):
    """Phase 2: `loss` is kl or reverse_kl after a label correction (soft labels), otherwise
    a loss on the kept samples; `mixup` a of Beta(a, a) (0: none); `init` a new network or
    phase 1's."""

    loss: named({**SOFT_LOSSES, **HARD_FINETUNE_LOSSES})
    mixup: Weight
    init: Literal["scratch", "phase1"]


class TwoPhase(Spec):
    """Each phase section may carry its own `overrides`; the resolver takes them out first."""

    pretrain: named(PRETRAINS)
    finetune: Finetune

    @model_validator(mode="after")
    def _loss_fits_phase1(self):
        corrects = not isinstance(self.pretrain, O2U)  # soft labels; O2U-Net keeps hard labels
        allowed = SOFT_LOSSES if corrects else HARD_FINETUNE_LOSSES
        if self.finetune.loss.name not in allowed:
            raise invalid("finetune.loss.name", f"expected one of {', '.join(allowed)} after phase 1 "
                          f"{self.pretrain.name!r} ({'corrected labels' if corrects else 'kept samples'})")
        return self
