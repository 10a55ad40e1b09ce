"""Every loss's settings: `loss.name` picks one, its fields are its hyper-parameters.

The formulas are in noisylabels/losses.py (`impl` names the function). A field the formula
does not take is read by the training method (`METHOD_OPTIONS`: the truncated-Lq weight
schedule, the transition matrix and its anchor percentile). Cross-section rules (a start
epoch within train.epochs, a K x K matrix) are checked by the resolver, which knows both.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, field_validator

from noisylabels.spec.base import Fraction, NonNegative, Spec, named, registry

LogZero = Annotated[float, Field(lt=0)]  # RCE's A: log 0 := A < 0
Q = Annotated[float, Field(gt=0, le=1)]
Weight = NonNegative  # alpha, beta: the weights of a loss's two terms
Percentile = Annotated[float, Field(gt=0, le=100)]
MATRIX_SOURCES = ("realized", "estimated", "identity")


class Loss(Spec):
    impl: ClassVar[str]  # the function of losses.py
    METHOD_OPTIONS: ClassVar[tuple[str, ...]] = ("start_epoch", "interval", "matrix", "anchor_percentile")

    def formula_options(self) -> dict:
        """The hyper-parameters the formula takes as keywords."""
        return {k: v for k, v in self.options().items() if k not in self.METHOD_OPTIONS}


class CE(Loss):
    name: Literal["ce"] = "ce"
    impl = "cross_entropy"


class ScaledCE(Loss):  # SCE's '2CE', '5CE'
    name: Literal["scaled_ce"] = "scaled_ce"
    impl = "scaled_cross_entropy"
    scale: Annotated[float, Field(gt=0)]


class RCE(Loss):
    name: Literal["rce"] = "rce"
    impl = "reverse_cross_entropy"
    A: LogZero


class SL(Loss):
    name: Literal["sl"] = "sl"
    impl = "symmetric_cross_entropy"
    alpha: Weight
    beta: Weight
    A: LogZero


class LSR(Loss):
    name: Literal["lsr"] = "lsr"
    impl = "lsr"
    epsilon: Fraction


class LSRSL(Loss):
    name: Literal["lsr_sl"] = "lsr_sl"
    impl = "lsr_sl"
    epsilon: Annotated[float, Field(gt=0, lt=1)]
    alpha: Weight
    beta: Weight


class Bootstrap(Loss):
    name: Literal["bootstrap"] = "bootstrap"
    impl = "bootstrap"
    beta: Annotated[float, Field(ge=0, le=1)]
    mode: Literal["soft", "hard"]


class _Corrected(Loss):
    """Where Forward/Backward get T: the noise stage's realized matrix, Patrini et al.'s
    anchor-point estimate, the identity (SCE's published run, which makes them plain CE),
    or a literal K x K list whose rows each sum to 1."""

    matrix: Union[Literal["realized", "estimated", "identity"], list[list[Annotated[float, Field(ge=0, le=1)]]]]
    anchor_percentile: Percentile

    @field_validator("matrix")
    @classmethod
    def _rows_sum_to_one(cls, value):
        if isinstance(value, list):
            if not value or any(len(row) != len(value) for row in value):
                raise ValueError("expected a square list of rows")
            for i, row in enumerate(value):
                if abs(sum(row) - 1) > 1e-6:
                    raise ValueError(f"row {i} sums to {sum(row):g}; expected rows summing to 1")
        return value


class Forward(_Corrected):
    name: Literal["forward"] = "forward"
    impl = "forward_correction"


class Backward(_Corrected):
    name: Literal["backward"] = "backward"
    impl = "backward_correction"


class ForwardSL(_Corrected):
    name: Literal["forward_sl"] = "forward_sl"
    impl = "forward_sl"
    beta: Weight
    A: LogZero


class MAE(Loss):
    name: Literal["mae"] = "mae"
    impl = "mean_absolute_error"


class GCE(Loss):
    name: Literal["gce"] = "gce"
    impl = "generalized_cross_entropy"
    q: Q


class TruncatedLq(Loss):
    """Weights w = 1[p_y > k] recomputed at start_epoch and every `interval` epochs after it."""

    name: Literal["truncated_lq"] = "truncated_lq"
    impl = "truncated_lq"
    q: Q
    k: Annotated[float, Field(gt=0, lt=1)]
    start_epoch: Annotated[int, Field(ge=1)]
    interval: Annotated[int, Field(ge=1)]


class NCE(Loss):
    name: Literal["nce"] = "nce"
    impl = "normalized_cross_entropy"


class Focal(Loss):
    """The normalised focal loss's settings, shared by NFL and its APL combinations.

    gradient: `full` differentiates the formula (the APL paper's NFL); `apl` is what APL's
    code trains with: the focal factor (1 - p_y)^gamma and the normaliser are constants of
    the gradient, which is then CE's gradient reweighted by (1 - p_y)^gamma / normaliser.
    The loss's value is the same."""

    gamma: NonNegative
    gradient: Literal["full", "apl"] = "full"


class NFL(Focal):
    name: Literal["nfl"] = "nfl"
    impl = "normalized_focal_loss"


class NGCE(Loss):
    name: Literal["ngce"] = "ngce"
    impl = "normalized_generalized_cross_entropy"
    q: Q


class NCERCE(Loss):
    name: Literal["nce_rce"] = "nce_rce"
    impl = "nce_rce"
    alpha: Weight
    beta: Weight
    A: LogZero


class NCEMAE(Loss):
    name: Literal["nce_mae"] = "nce_mae"
    impl = "nce_mae"
    alpha: Weight
    beta: Weight


class NFLRCE(Focal):
    name: Literal["nfl_rce"] = "nfl_rce"
    impl = "nfl_rce"
    alpha: Weight
    beta: Weight
    A: LogZero


class NFLMAE(Focal):
    name: Literal["nfl_mae"] = "nfl_mae"
    impl = "nfl_mae"
    alpha: Weight
    beta: Weight


LOSSES = registry(CE, ScaledCE, RCE, SL, LSR, LSRSL, Bootstrap, Forward, Backward, ForwardSL, MAE, GCE, TruncatedLq,
                  NCE, NFL, NGCE, NCERCE, NCEMAE, NFLRCE, NFLMAE)
LossSpec = named(LOSSES)
