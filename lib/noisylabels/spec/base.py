"""The base of every settings model, and pydantic errors turned into one line.

Settings are pydantic v2 models: strict (no "0.1" for 0.1, no true for 1), frozen, finite
numbers only, unknown keys refused with the list of allowed ones. pydantic was chosen over
dataclasses plus a hand-written checker because discriminated unions (`name` selects the
model), bounds and cross-field validators are what the schema is made of, and the library
already comes with MLflow.

`check(schema, key, value)` validates `value` found at params key `key` and raises
ConfigError("<key>=<value>: <what is allowed>") for the first problem.
"""
from __future__ import annotations

import functools
from typing import Annotated, Any, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      model_validator)
from pydantic_core import PydanticCustomError

from noisylabels.errors import ConfigError

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]  # e.g. a noise rate: 1 would leave no clean label
# at most 10,000: each epoch's predictions are kept (data/runs) and plotted
Epochs = Annotated[int, Field(ge=1, le=10_000)]


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError("expected distinct values")
    return values


Distinct = AfterValidator(_distinct)  # a list without repeats: Annotated[list[...], Distinct]


class Spec(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields), key=str)
            if unknown:
                raise PydanticCustomError("unknown_key", "unknown key; allowed keys: {allowed}",
                                          {"field": unknown[0], "allowed": ", ".join(cls.model_fields) or "(none)"})
        return data

    def options(self) -> dict:
        """The settings as plain values, without `name` (what a builder takes as keywords)."""
        return {k: v for k, v in self.model_dump().items() if k != "name"}


def registry(*classes: type[Spec]) -> dict[str, type[Spec]]:
    """name -> settings class, the name being each class's `name` (a field's default or a ClassVar)."""
    return {cls.model_fields["name"].default if "name" in cls.model_fields else cls.name: cls for cls in classes}


def named(registry: dict[str, type[Spec]]):
    """The type of a section whose `name` picks one class of `registry` (a tagged union)."""
    allowed = ", ".join(registry)

    def known_name(value):
        if isinstance(value, dict):
            if "name" not in value:
                raise PydanticCustomError("name_missing", "missing; expected one of {allowed}",
                                          {"field": "name", "allowed": allowed})
            if value["name"] not in registry:
                raise PydanticCustomError("invalid", "expected one of {allowed}", {"field": "name", "allowed": allowed})
        return value

    return Annotated[Union[tuple(registry.values())], Field(discriminator="name"), BeforeValidator(known_name)]


def join(key: str, part) -> str:
    """A params key path: join("train", "lr") is train.lr, join("", "loss") is loss."""
    return f"{key}.{part}" if key else str(part)


def invalid(field: str, allowed: str) -> PydanticCustomError:
    """For a cross-field validator: `raise invalid("milestones", "expected ...")`."""
    return PydanticCustomError("invalid", allowed, {"field": field})


_ALLOWED = {  # pydantic error type -> what is allowed, from its context
    "greater_than": "expected a number > {gt}", "greater_than_equal": "expected a number >= {ge}",
    "less_than": "expected a number < {lt}", "less_than_equal": "expected a number <= {le}",
    "finite_number": "expected a finite number", "float_type": "expected a number",
    "int_type": "expected an integer", "bool_type": "expected true or false",
    "string_type": "expected a string", "list_type": "expected a list",
    "dict_type": "expected a mapping", "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping", "literal_error": "expected one of {expected}",
    "too_short": "expected at least {min_length} item(s)",
    "too_long": "expected at most {max_length} item(s)",
}


def one_line(error: ValidationError, key: str, value: Any) -> str:
    """The first error as `key=value: allowed`, its key the params path (union tags dropped)."""
    e = error.errors()[0]
    ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in (e.get("ctx") or {}).items()}
    at = value
    for part in e["loc"]:  # follow the location through the input, skipping union tags
        if isinstance(at, dict) and at.get("name") == part:
            continue
        if isinstance(at, dict) and part in at:
            key, at = join(key, part), at[part]
        elif isinstance(at, list) and isinstance(part, int) and part < len(at):
            key, at = f"{key}[{part}]", at[part]
    for part in str(ctx.get("field", "")).split(".") if "field" in ctx else ():
        key = join(key, part)  # an unknown key or a cross-field rule names its field
        at = at.get(part) if isinstance(at, dict) else at
    if e["type"] == "missing":
        return f"{join(key, e['loc'][-1])}: missing"
    if e["type"] == "name_missing":
        return f"{key}: {e['msg']}"
    template = _ALLOWED.get(e["type"])
    allowed = template.format(**ctx).replace("'", "") if template else e["msg"].removeprefix("Value error, ")
    return f"{key}={at!r}: {allowed}"


@functools.cache
def _adapter(schema) -> TypeAdapter:
    """One TypeAdapter per schema: building one took 0.15 ms, and resolving every group's
    settings checks about 2,000 values (0.3 s of the report stage)."""
    return TypeAdapter(schema)


def check(schema, key: str, value: Any, context: dict | None = None):
    """`schema` (a Spec class or a type) validated against `value` at params key `key`."""
    adapter = _adapter(schema)
    try:
        return adapter.validate_python(value, context=context)
    except ValidationError as e:
        raise ConfigError(one_line(e, key, value)) from None
