"""Reusable pydantic validators for node parameters (errors are located at the field)."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationInfo, field_validator


def greater_than(field: str, other: str) -> Any:
    """A validator requiring `field` to exceed the earlier-declared field `other`.

    Use in a node's class body: `_max_above_min = greater_than("sigma_max", "sigma_min")`;
    give `field` `validate_default=True` so defaults are checked too."""

    def check(cls: type, value: float, info: ValidationInfo) -> float:
        low = info.data.get(other)
        if low is not None and not value > low:
            raise ValueError(f"must be greater than {other} ({low})")
        return value

    return field_validator(field)(check)
