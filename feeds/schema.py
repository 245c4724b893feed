"""Config building blocks shared by the feed kinds: strict models, symbols, tick sizes, times of day.

Cross-field rules (e.g. "this pair names an unknown symbol") go through `raise_errors`: a
ValidationError whose locations point at the offending fields, so the service's loader can
name each field and its YAML line exactly as it does for per-field errors.
"""

from __future__ import annotations

import difflib
import re
from datetime import time
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,11}$"
Symbol = Annotated[
    str, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v), Field(pattern=SYMBOL_PATTERN)
]

CENT = Decimal("0.01")
SUB_PENNY = Decimal("0.0001")


class StrictModel(BaseModel):
    """Rejects unknown keys, and says which valid key was probably meant.

    The hint is computed here, where the model is known: from the root of a config, a key
    inside a discriminated union cannot be traced back to the model that rejected it.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _suggest_keys(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            if not any(e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in errors):
                raise
            details = [_with_hint(cls, e) for e in errors]
            raise ValidationError.from_exception_data(exc.title, details) from None


def _with_hint(model: type[BaseModel], err: Any) -> InitErrorDetails:
    if err["type"] != "extra_forbidden" or len(err["loc"]) != 1:
        # Passed on as it was: same type, location and final message (its template and
        # context cannot be rebuilt in general, so the message travels as it is).
        return {
            "type": PydanticCustomError(err["type"], "{message}", {"message": err["msg"]}),
            "loc": err["loc"],
            "input": err.get("input"),
        }
    key = str(err["loc"][0])
    allowed = sorted(model.model_fields)
    match = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {match[0]!r}?" if match else f"expected one of {', '.join(allowed)}"
    return {
        # Worded like the service's own hint for the same error.
        "type": PydanticCustomError("value_error", "unknown key; {hint}", {"hint": hint}),
        "loc": err["loc"],
        "input": err.get("input"),
    }


def raise_errors(errors: list[tuple[tuple[str | int, ...], str, Any]]) -> None:
    """Raise every collected cross-field error at once, each at its own location."""
    if errors:
        details: list[InitErrorDetails] = [
            {
                "type": PydanticCustomError("value_error", "{message}", {"message": message}),
                "loc": loc,
                "input": value,
            }
            for loc, message, value in errors
        ]
        raise ValidationError.from_exception_data("config", details)


def _parse_tick(value: Any) -> Any:
    if isinstance(value, float):
        # Through str, so 0.01 becomes Decimal("0.01") and not 0.01000000000000000020816...
        return Decimal(str(value))
    return value


def _positive_tick(value: Decimal | str) -> Decimal | str:
    if isinstance(value, Decimal) and not value > 0:
        raise ValueError(f"tick_size must be a positive number or 'auto', got {value}")
    return value


TickSize = Annotated[
    Literal["auto"] | Decimal,
    BeforeValidator(_parse_tick),
    AfterValidator(_positive_tick),
    Field(description="price increment; auto = $0.01 at or above $1, $0.0001 below (Reg NMS Rule 612)"),
]


def resolve_tick(tick_size: Decimal | str, price: float) -> tuple[Decimal, bool]:
    """The symbol's price unit on the wire, and whether `auto` sub-penny rules apply to it."""
    if isinstance(tick_size, Decimal):
        return tick_size, False
    return (CENT, False) if price >= 1 else (SUB_PENNY, True)


_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def seconds_of_day(value: Any) -> int:
    """'09:30' or '09:30:15' (or '24:00') to seconds since midnight."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 09:30 as the sexagesimal integer 570 (minutes).
        value = f"{value // 60:02d}:{value % 60:02d}"
    if isinstance(value, time):
        return value.hour * 3600 + value.minute * 60 + value.second
    match = _TIME_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a time of day like '09:30', got {value!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if minutes > 59 or seconds > 59 or total > 24 * 3600:
        raise ValueError(f"expected a time of day between 00:00 and 24:00, got {value!r}")
    return total


TimeOfDay = Annotated[int, BeforeValidator(seconds_of_day)]


def format_time_of_day(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
