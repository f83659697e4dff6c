"""llmlab.validate: one message shape for bad arguments, used across the package."""

from __future__ import annotations

import math

import pytest

from llmlab.validate import check_choice, check_int, check_number, invalid


def test_invalid_names_value_and_fix() -> None:
    assert str(invalid("top_k", 0, "use a whole number >= 1.")) == "top_k=0 is not valid: use a whole number >= 1."


@pytest.mark.parametrize("value", [0, -3, 1.0, True, "2", None])
def test_check_int_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"^n=.* is not valid: use a whole number >= 1\.$"):
        check_int("n", value, 1)


def test_check_int_accepts_and_returns() -> None:
    assert check_int("n", 1, 1) == 1 and check_int("n", 0) == 0


@pytest.mark.parametrize(
    ("value", "kwargs"),
    [
        (math.nan, {}),
        (math.inf, {}),
        (True, {}),
        ("1", {}),
        (0.0, {"low": 0.0, "low_open": True}),
        (1.5, {"low": 0.0, "high": 1.0}),
        (1.0, {"high": 1.0, "high_open": True}),
        (-0.1, {"low": 0.0}),
    ],
)
def test_check_number_refuses(value: object, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="x="):
        check_number("x", value, **kwargs)


def test_check_number_bounds_in_the_message_and_accepts_edges() -> None:
    with pytest.raises(ValueError, match=r"use a finite number in \(0, 1\]"):
        check_number("p", 0, 0.0, 1.0, low_open=True)
    assert check_number("p", 1, 0.0, 1.0, low_open=True) == 1.0 and isinstance(check_number("p", 1), float)


def test_check_choice() -> None:
    assert check_choice("dtype", "auto", ("auto", "float32")) == "auto"
    with pytest.raises(ValueError, match="dtype='fp8' is not valid: use one of auto, float32."):
        check_choice("dtype", "fp8", ("auto", "float32"))
