"""Small checks that raise a 400 naming the JSON path of the offending field."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.errors import invalid


def check_keys(obj: dict[str, Any], allowed: Iterable[str], path: str) -> None:
    allowed_set = allowed if isinstance(allowed, set | frozenset) else set(allowed)
    for key in obj:
        if key not in allowed_set:
            raise invalid(
                f"Unknown parameter: '{path}.{key}'.", f"{path}.{key}", "unknown_parameter"
            )


def _type_error(expected: str, path: str) -> Exception:
    return invalid(f"Invalid type for '{path}': expected {expected}.", path, "invalid_type")


def expect_dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _type_error("an object", path)
    return value


def expect_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _type_error("an array", path)
    return value


def expect_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _type_error("a string", path)
    return value


def expect_str_or_none(value: Any, path: str) -> str | None:
    return None if value is None else expect_str(value, path)


def expect_bool(value: Any, path: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _type_error("a boolean", path)
    return value


def expect_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error("a number", path)
    return value


def expect_int(
    value: Any, path: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error("an integer", path)
    if minimum is not None and value < minimum:
        raise invalid(f"'{path}' must be at least {minimum}, got {value}.", path)
    if maximum is not None and value > maximum:
        raise invalid(f"'{path}' must be at most {maximum}, got {value}.", path)
    return value
